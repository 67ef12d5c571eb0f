//! Parse: recognise the annotated item once, and keep what every later step needs.
//!
//! The item must be a function with a body; anything else is the one error this step reports
//! (there is nothing to validate or expand then). The function's shape is decided here, once:
//!
//! ```text
//! fn f(..) -> R { .. }                       Body::Sync(block)
//! async fn f(..) -> R { .. }                 Body::Async(block)
//! fn f(..) -> Pin<Box<dyn Future<Output = R> + ..>> {
//!     Box::pin(async move { .. })            Body::AsyncTrait { pin: `Box::pin`, block: the async block }
//! }                                          (what `#[async_trait]` makes of an `async fn`)
//! ```
//!
//! and so are the parameters that look like contexts, judged by their type as written.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;

/// The annotated function, split into the parts the later steps use.
#[derive(Debug)]
pub(crate) struct Function {
    /// `#[...]` outside the function.
    pub(crate) outer_attrs: Vec<syn::Attribute>,
    /// `#![...]` at the top of the body.
    pub(crate) inner_attrs: Vec<syn::Attribute>,
    pub(crate) vis: syn::Visibility,
    pub(crate) sig: syn::Signature,
    pub(crate) body: Body,
    /// The parameters bound to a plain name (`x: T`, `mut x: T`), in order.
    pub(crate) params: Vec<Param>,
}

/// The function's body, by shape.
#[derive(Debug)]
pub(crate) enum Body {
    /// A plain `fn`.
    Sync(syn::Block),
    /// An `async fn`.
    Async(syn::Block),
    /// A `fn` that `#[async_trait]` already rewrote.
    AsyncTrait(Box<AsyncTraitBody>),
}

/// `{ stmts; Box::pin(async move { block }) }`, returning `Pin<Box<dyn Future<Output = R>>>`.
#[derive(Debug)]
pub(crate) struct AsyncTraitBody {
    /// The statements before `Box::pin(..)` (none, in the async-trait versions to date).
    pub(crate) stmts: Vec<syn::Stmt>,
    /// The callee, `Box::pin` as async-trait spells it.
    pub(crate) pin: syn::Expr,
    /// The `async move { .. }` block: the real body.
    pub(crate) block: syn::ExprAsync,
    /// `R`, the boxed future's `Output`.
    pub(crate) output: syn::Type,
}

impl Body {
    /// The user's code: the block of a sync or async fn, the async block under `#[async_trait]`.
    pub(crate) fn block(&self) -> &syn::Block {
        match self {
            Body::Sync(block) | Body::Async(block) => block,
            Body::AsyncTrait(body) => &body.block.block,
        }
    }

    /// Whether the body runs as a future (so blocking in it blocks an executor thread).
    pub(crate) fn is_async(&self) -> bool {
        !matches!(self, Body::Sync(_))
    }
}

/// A parameter bound to a plain name.
#[derive(Debug)]
pub(crate) struct Param {
    pub(crate) ident: syn::Ident,
    pub(crate) mutable: bool,
    pub(crate) ty: syn::Type,
    /// Whether its type is written as a context: `Some(true)` for `&Context`, `Some(false)`
    /// for `Context`.
    pub(crate) context: Option<bool>,
}

impl Function {
    /// The item must be a function with a body.
    pub(crate) fn parse(item: TokenStream) -> darling::Result<Function> {
        let func = parse_fn(item)?;
        let (outer_attrs, inner_attrs) = func
            .attrs
            .into_iter()
            .partition(|attr| matches!(attr.style, syn::AttrStyle::Outer));
        let params = func.sig.inputs.iter().filter_map(Param::parse).collect();
        let body = match async_trait_body(&func.sig, *func.block) {
            Ok(body) => Body::AsyncTrait(Box::new(body)),
            Err(block) if func.sig.asyncness.is_some() => Body::Async(block),
            Err(block) => Body::Sync(block),
        };
        Ok(Function {
            outer_attrs,
            inner_attrs,
            vis: func.vis,
            sig: func.sig,
            body,
            params,
        })
    }

    /// The type the body evaluates to: the return type, or under `#[async_trait]` the
    /// future's `Output`; `None` without a return type.
    pub(crate) fn output(&self) -> Option<&syn::Type> {
        match (&self.body, &self.sig.output) {
            (Body::AsyncTrait(body), _) => Some(&body.output),
            (_, syn::ReturnType::Type(_, ty)) => Some(ty),
            (_, syn::ReturnType::Default) => None,
        }
    }
}

impl Param {
    fn parse(arg: &syn::FnArg) -> Option<Param> {
        let syn::FnArg::Typed(pat) = arg else {
            return None;
        };
        match &*pat.pat {
            syn::Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                Some(Param {
                    ident: ident.ident.clone(),
                    mutable: ident.mutability.is_some(),
                    ty: (*pat.ty).clone(),
                    context: context_type(&pat.ty),
                })
            }
            _ => None,
        }
    }
}

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

/// Whether `ty` is `Context` (`Some(false)`) or `&Context` (`Some(true)`), judged by name: a
/// path ending in `Context` with no generic arguments.
pub(crate) fn context_type(ty: &syn::Type) -> Option<bool> {
    match ty {
        syn::Type::Reference(reference) if reference.mutability.is_none() => {
            is_context_path(&reference.elem).then_some(true)
        }
        syn::Type::Group(group) => context_type(&group.elem),
        syn::Type::Paren(paren) => context_type(&paren.elem),
        ty => is_context_path(ty).then_some(false),
    }
}

/// `Context`, `ctx_core::Context`, `::ctx_core::Context` (no generic arguments).
pub(crate) fn is_context_path(ty: &syn::Type) -> bool {
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

/// If the function is what `#[async_trait]` makes of an `async fn` (it returns
/// `Pin<Box<dyn Future<Output = R> + ..>>` and its body ends in `Box::pin(async move { .. })`),
/// its parts; else the block back.
fn async_trait_body(
    sig: &syn::Signature,
    mut block: syn::Block,
) -> Result<AsyncTraitBody, syn::Block> {
    let output = match &sig.output {
        syn::ReturnType::Type(_, ty) if sig.asyncness.is_none() => boxed_future_output(ty),
        _ => None,
    };
    let Some(output) = output else {
        return Err(block);
    };
    match block.stmts.pop() {
        Some(syn::Stmt::Expr(syn::Expr::Call(mut call), None))
            if call.args.len() == 1 && is_box_pin(&call.func) =>
        {
            match call.args.pop().map(syn::punctuated::Pair::into_value) {
                Some(syn::Expr::Async(async_block)) if async_block.capture.is_some() => {
                    Ok(AsyncTraitBody {
                        stmts: block.stmts,
                        pin: *call.func,
                        block: async_block,
                        output,
                    })
                }
                // `Box::pin(some_future)`: not async-trait's; put it back.
                other => {
                    call.args.extend(other);
                    block
                        .stmts
                        .push(syn::Stmt::Expr(syn::Expr::Call(call), None));
                    Err(block)
                }
            }
        }
        last => {
            block.stmts.extend(last);
            Err(block)
        }
    }
}

fn is_box_pin(func: &syn::Expr) -> bool {
    let syn::Expr::Path(path) = func else {
        return false;
    };
    crate::common::path_ends_with(&path.path, &["Box", "pin"])
}

/// `X` in `Pin<Box<dyn Future<Output = X> + ...>>`.
pub(crate) fn boxed_future_output(ty: &syn::Type) -> Option<syn::Type> {
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
    future_output(&object.bounds)
}

/// `X` in the `Future<Output = X>` bound among `bounds`.
pub(crate) fn future_output<'a>(
    bounds: impl IntoIterator<Item = &'a syn::TypeParamBound>,
) -> Option<syn::Type> {
    bounds.into_iter().find_map(|bound| {
        let syn::TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let segment = bound.path.segments.last()?;
        if segment.ident != "Future" {
            return None;
        }
        let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            syn::GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                Some(assoc.ty.clone())
            }
            _ => None,
        })
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
    fn shapes() {
        let shape = |src: &str| match Function::parse(src.parse().unwrap()).unwrap().body {
            Body::Sync(_) => "sync",
            Body::Async(_) => "async",
            Body::AsyncTrait(_) => "async_trait",
        };
        assert_eq!(shape("fn f() -> R { x }"), "sync");
        assert_eq!(shape("async fn f() -> R { x }"), "async");
        assert_eq!(
            shape(
                "fn f() -> Pin<Box<dyn Future<Output = R> + Send>> { Box::pin(async move { x }) }"
            ),
            "async_trait"
        );
        // A boxed future that is not an async block: a sync fn (validate says what is wrong).
        assert_eq!(
            shape("fn f() -> Pin<Box<dyn Future<Output = R>>> { Box::pin(fut) }"),
            "sync"
        );
        assert_eq!(
            shape("fn f() -> Pin<Box<dyn Future<Output = R>>> { Box::pin(async { x }) }"),
            "sync"
        );
    }
}
