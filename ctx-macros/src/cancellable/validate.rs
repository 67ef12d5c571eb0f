//! Checks the annotated item and the arguments together, and decides what to generate.
//!
//! Every check runs; the errors are collected in one `darling::Error` (an accumulator, no
//! early return) so the user sees all of them at once. Each message names the mistake as the
//! user wrote it, says what to write instead, and points at the offending token.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;

use super::args::{Args, Checkpoints, Timeout};

/// What `expand` generates: the function and every decision about it.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The function, as written.
    pub(crate) func: syn::ItemFn,
    /// Where `__private` lives: `::ctx_core` unless `crate = "..."`.
    pub(crate) krate: syn::Path,
    pub(crate) parent: Parent,
    pub(crate) child: Child,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) shape: Shape,
    /// The type the body evaluates to: the return type, or for `#[async_trait]` the future's
    /// `Output`.
    pub(crate) output: syn::Type,
}

/// Where the parent context comes from.
#[derive(Debug)]
pub(crate) enum Parent {
    /// Accept: this parameter (of type `&Context` when `by_ref`, else `Context`).
    Param {
        ident: syn::Ident,
        by_ref: bool,
        mutable: bool,
    },
    /// Derive: `Context::current()`, read when the function is called.
    Current,
}

/// How the child is derived from the parent.
#[derive(Debug)]
pub(crate) enum Child {
    /// `with_cancel`.
    Cancel,
    /// `with_timeout` of a duration parsed at compile time.
    Timeout(Duration, Span),
    /// `with_timeout(<expr>)`.
    TimeoutExpr(syn::Expr),
    /// `with_deadline(<expr>)`.
    Deadline(syn::Expr),
}

/// The kind of function body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A plain `fn`: the body runs in a closure under `Context::enter`.
    Sync,
    /// An `async fn`: rewritten to a `fn` returning `impl Future`.
    Async,
    /// A `fn` that `#[async_trait]` already rewrote: its body ends in
    /// `Box::pin(async move { ... })`, whose async block is the real body.
    AsyncTrait,
}

/// Parses the item and checks it together with the arguments.
pub(crate) fn validate(args: Args, item: TokenStream) -> darling::Result<Plan> {
    let func = parse_fn(item)?;
    let mut errors = darling::Error::accumulator();

    let Args {
        timeout,
        deadline,
        ctx,
        checkpoints,
        krate,
    } = args;

    let krate = crate::crate_path(krate, &mut errors);

    let child = match (timeout, deadline) {
        (Some(_), Some(deadline)) => {
            errors.push(
                darling::Error::custom(
                    "`timeout` and `deadline` cannot both be given: a timeout is a deadline \
                     counted from the call; keep one of them",
                )
                .with_span(&deadline.span()),
            );
            Child::Cancel
        }
        (Some(timeout), None) => {
            let span = timeout.span();
            match (*timeout).clone() {
                Timeout::Literal(duration) => Child::Timeout(duration, span),
                Timeout::Expr(expr) => Child::TimeoutExpr(expr),
            }
        }
        (None, Some(deadline)) => Child::Deadline(deadline.0.clone()),
        (None, None) => Child::Cancel,
    };

    if let Some(constness) = &func.sig.constness {
        errors.push(
            darling::Error::custom(
                "`#[cancellable]` cannot be used on a `const fn`: deriving and checking a \
                 context happens at run time; remove `const`",
            )
            .with_span(constness),
        );
    }

    let shape = if func.sig.asyncness.is_some() {
        Shape::Async
    } else if async_trait_body(&func).is_some() {
        Shape::AsyncTrait
    } else {
        Shape::Sync
    };

    let output = match &func.sig.output {
        syn::ReturnType::Type(_, ty) if shape == Shape::AsyncTrait => {
            future_output(ty).unwrap_or_else(|| (**ty).clone())
        }
        syn::ReturnType::Type(_, ty) => (**ty).clone(),
        syn::ReturnType::Default => {
            errors.push(
                darling::Error::custom(format!(
                    "`#[cancellable]` function `{}` has no return type, but it must return \
                     `Result<T, E>` with `E: From<ctx_core::Error>`, to report cancellation: \
                     add one, e.g. `-> Result<(), ctx_core::Error>`",
                    func.sig.ident
                ))
                .with_span(&func.sig.paren_token.span.join()),
            );
            syn::parse_quote!(())
        }
    };

    let parent = errors
        .handle(find_parent(&func.sig, ctx.as_ref()))
        .unwrap_or(Parent::Current);

    errors.finish_with(Plan {
        func,
        krate,
        parent,
        child,
        checkpoints: checkpoints.unwrap_or_default(),
        shape,
        output,
    })
}

/// The item must be a function with a body.
fn parse_fn(item: TokenStream) -> darling::Result<syn::ItemFn> {
    let item: syn::Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            // A trait method without a body (`fn f(&self) -> R;`) is not an `Item`.
            if let Ok(method) = syn::parse2::<syn::TraitItemFn>(item) {
                return Err(no_body(&method));
            }
            return Err(darling::Error::custom(
                "`#[cancellable]` goes on a function (`fn` or `async fn`, free, method or trait \
                 method with a body)",
            ));
        }
    };
    let what = match item {
        syn::Item::Fn(func) => return Ok(func),
        // syn keeps a `fn` without a body (a trait method declaration) as verbatim tokens.
        syn::Item::Verbatim(tokens) => {
            if let Ok(method) = syn::parse2::<syn::TraitItemFn>(tokens.clone()) {
                return Err(no_body(&method));
            }
            return Err(darling::Error::custom(
                "`#[cancellable]` goes on a function (`fn` or `async fn`) with a body",
            )
            .with_span(&tokens.span()));
        }
        syn::Item::Const(_) => "a `const`",
        syn::Item::Enum(_) => "an enum",
        syn::Item::ExternCrate(_) => "an `extern crate`",
        syn::Item::ForeignMod(_) => "an `extern` block",
        syn::Item::Impl(_) => "an `impl` block (put it on the methods inside instead)",
        syn::Item::Macro(_) => "a macro invocation",
        syn::Item::Mod(_) => "a module",
        syn::Item::Static(_) => "a `static`",
        syn::Item::Struct(_) => "a struct",
        syn::Item::Trait(_) => "a trait (put it on the methods inside instead)",
        syn::Item::TraitAlias(_) => "a trait alias",
        syn::Item::Type(_) => "a type alias",
        syn::Item::Union(_) => "a union",
        syn::Item::Use(_) => "a `use`",
        _ => "this item",
    };
    Err(darling::Error::custom(format!(
        "`#[cancellable]` goes on a function (`fn` or `async fn`), not on {what}"
    ))
    .with_span(&item_keyword_span(&item)))
}

fn no_body(method: &syn::TraitItemFn) -> darling::Error {
    darling::Error::custom(format!(
        "`#[cancellable]` needs a function body to run under the derived context, but `{}` \
         has none: put `#[cancellable]` on the implementations of this method instead (or give \
         it a default body)",
        method.sig.ident
    ))
    .with_span(&method.sig.ident)
}

/// The span of the keyword that says what kind of item this is (`struct`, `enum`, ...).
fn item_keyword_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Struct(item) => item.struct_token.span,
        syn::Item::Enum(item) => item.enum_token.span,
        syn::Item::Union(item) => item.union_token.span,
        syn::Item::Const(item) => item.const_token.span,
        syn::Item::Static(item) => item.static_token.span,
        syn::Item::Impl(item) => item.impl_token.span,
        syn::Item::Trait(item) => item.trait_token.span,
        syn::Item::Mod(item) => item.mod_token.span,
        syn::Item::Type(item) => item.type_token.span,
        syn::Item::Use(item) => item.use_token.span,
        other => other.span(),
    }
}

/// Whether `ty` is `Context` (`by_ref: false`) or `&Context` (`by_ref: true`), judged by
/// name: a path ending in `Context` with no generic arguments.
pub(crate) fn context_type(ty: &syn::Type) -> Option<bool> {
    fn is_context_path(ty: &syn::Type) -> bool {
        match ty {
            syn::Type::Path(path) if path.qself.is_none() => path
                .path
                .segments
                .last()
                .is_some_and(|last| last.ident == "Context" && last.arguments.is_none()),
            syn::Type::Group(group) => is_context_path(&group.elem),
            syn::Type::Paren(paren) => is_context_path(&paren.elem),
            _ => false,
        }
    }
    match ty {
        syn::Type::Reference(reference) if reference.mutability.is_none() => {
            is_context_path(&reference.elem).then_some(true)
        }
        syn::Type::Group(group) => context_type(&group.elem),
        syn::Type::Paren(paren) => context_type(&paren.elem),
        ty => is_context_path(ty).then_some(false),
    }
}

/// The parameter name, when the parameter is a plain binding (`x: T`, `mut x: T`).
fn param_ident(pat: &syn::Pat) -> Option<&syn::PatIdent> {
    match pat {
        syn::Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => Some(ident),
        _ => None,
    }
}

/// Accept or derive: which parameter, if any, is the parent.
fn find_parent(sig: &syn::Signature, named: Option<&syn::Ident>) -> darling::Result<Parent> {
    let params: Vec<(&syn::PatIdent, &syn::Type)> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            syn::FnArg::Typed(pat) => param_ident(&pat.pat).map(|ident| (ident, &*pat.ty)),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let parent = |ident: &syn::PatIdent, by_ref| Parent::Param {
        ident: ident.ident.clone(),
        by_ref,
        mutable: ident.mutability.is_some(),
    };

    if let Some(named) = named {
        let Some((ident, ty)) = params.iter().find(|(ident, _)| ident.ident == *named) else {
            let names: Vec<String> = params.iter().map(|(p, _)| p.ident.to_string()).collect();
            let hint = match closest(&named.to_string(), &names) {
                Some(close) => format!("did you mean `ctx = {close}`?"),
                None if names.is_empty() => {
                    "remove `ctx = ...` to derive from `Context::current()`".to_owned()
                }
                None => format!("its parameters are `{}`", names.join("`, `")),
            };
            return Err(darling::Error::custom(format!(
                "`ctx = {named}` names no parameter of `{}`: {hint}",
                sig.ident
            ))
            .with_span(named));
        };
        return match context_type(ty) {
            Some(by_ref) => Ok(parent(ident, by_ref)),
            None => Err(darling::Error::custom(format!(
                "`ctx = {named}` names a parameter of type `{}`, but the parent context must be \
                 `&Context` or `Context` (ctx_core's)",
                ty.to_token_stream().to_string().replace(" ,", ",")
            ))
            .with_span(&ty.span())),
        };
    }

    let mut errors = darling::Error::accumulator();
    let contexts: Vec<_> = params
        .iter()
        .filter_map(|(ident, ty)| context_type(ty).map(|by_ref| (*ident, by_ref)))
        .collect();
    for (ident, ty) in &params {
        if ident.ident == "ctx" && context_type(ty).is_none() {
            errors.push(
                darling::Error::custom(format!(
                    "parameter `ctx` of `#[cancellable]` function `{}` is not a context: \
                     `#[cancellable]` takes a parameter named `ctx` to be the parent context, \
                     which must be `&Context` or `Context`; rename this parameter, or name the \
                     real context parameter with `#[cancellable(ctx = ...)]`",
                    sig.ident
                ))
                .with_span(&ident.ident),
            );
        }
    }
    if let [(first, _), rest @ ..] = contexts.as_slice() {
        for (extra, _) in rest {
            errors.push(
                darling::Error::custom(format!(
                    "`#[cancellable]` function `{}` has two context parameters, `{}` and `{}`: \
                     say which one is the parent with `#[cancellable(ctx = {})]`",
                    sig.ident, first.ident, extra.ident, first.ident
                ))
                .with_span(&extra.ident),
            );
        }
    }
    errors.finish()?;
    Ok(match contexts.first() {
        Some((ident, by_ref)) => parent(ident, *by_ref),
        None => Parent::Current,
    })
}

/// The closest of `candidates` to `name`, if any is close (edit distance ≤ 1/3 of the length).
fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= name.len().max(candidate.len()) / 3 + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// If `func` is what `#[async_trait]` makes of an `async fn` (a body ending in
/// `Box::pin(async move { ... })`), that async block.
fn async_trait_body(func: &syn::ItemFn) -> Option<&syn::ExprAsync> {
    let syn::ReturnType::Type(_, ty) = &func.sig.output else {
        return None;
    };
    future_output(ty)?;
    let Some(syn::Stmt::Expr(syn::Expr::Call(call), None)) = func.block.stmts.last() else {
        return None;
    };
    let syn::Expr::Path(path) = &*call.func else {
        return None;
    };
    let names: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    if !names.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    match call.args.first() {
        Some(syn::Expr::Async(block)) if block.capture.is_some() => Some(block),
        _ => None,
    }
}

/// `X` in `Pin<Box<dyn Future<Output = X> + ...>>`.
fn future_output(ty: &syn::Type) -> Option<syn::Type> {
    let last = |ty: &syn::Type| match ty {
        syn::Type::Path(path) => path.path.segments.last().cloned(),
        _ => None,
    };
    let only_type_arg = |segment: &syn::PathSegment| match &segment.arguments {
        syn::PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            syn::GenericArgument::Type(ty) => Some(ty.clone()),
            _ => None,
        }),
        _ => None,
    };
    let pin = last(ty).filter(|s| s.ident == "Pin")?;
    let boxed = only_type_arg(&pin)?;
    let boxed = last(&boxed).filter(|s| s.ident == "Box")?;
    let syn::Type::TraitObject(object) = only_type_arg(&boxed)? else {
        return None;
    };
    object.bounds.iter().find_map(|bound| match bound {
        syn::TypeParamBound::Trait(bound) => {
            let segment = bound.path.segments.last()?;
            if segment.ident != "Future" {
                return None;
            }
            match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                            Some(assoc.ty.clone())
                        }
                        _ => None,
                    })
                }
                _ => None,
            }
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_types() {
        let check = |src: &str| context_type(&syn::parse_str(src).unwrap());
        assert_eq!(check("Context"), Some(false));
        assert_eq!(check("ctx_core::Context"), Some(false));
        assert_eq!(check("&Context"), Some(true));
        assert_eq!(check("&'a ::ctx_core::Context"), Some(true));
        assert_eq!(check("&mut Context"), None);
        assert_eq!(check("&mut std::task::Context<'_>"), None);
        assert_eq!(check("String"), None);
    }

    #[test]
    fn suggestions() {
        let names = ["context".to_owned(), "id".to_owned()];
        assert_eq!(closest("contxt", &names), Some("context"));
        assert_eq!(closest("parent", &names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
