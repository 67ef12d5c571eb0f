//! Validate: checks only. Every check runs, and the errors are collected in one
//! `darling::Error` (an accumulator, no early return) so the user sees all of them at once.
//! Each message names the mistake as the user wrote it, says what to write instead, and
//! points at the offending token.
//!
//! What the compiler checks better, through the traits of `ctx_core::__private` that the
//! generated code calls, is left to it: that the return type is a `Result` whose error has
//! `From<ctx_core::Error>`, that a context parameter is ctx_core's `Context`.

use syn::spanned::Spanned;

use super::args::Args;
use super::ast::{Body, Function};
use super::lints::BodyLints;
use super::plan::Parent;

/// Checks the function together with its arguments.
pub(crate) fn validate(args: &Args, func: &Function) -> darling::Result<()> {
    let mut errors = darling::Error::accumulator();
    errors.extend(crate::common::check_crate_path(args.krate.as_ref()));
    errors.extend(timeout_and_deadline(args));
    errors.extend(function(func).err());
    errors.extend(context_params(func, args.ctx.as_ref()));
    errors.extend(allow_blocking_on_sync(args, func));
    // The lints name the context to pass on: the parent parameter, by the plan's rule.
    let parent = Parent::of(func, args.ctx.as_ref());
    let lints = BodyLints::new(
        &func.sig.ident,
        parent.ident(),
        !args.allow_detached.is_on(),
        func.body.is_async() && !args.allow_blocking.is_on(),
    );
    errors.extend(lints.check(func.body.block()));
    errors.finish()
}

/// The checks that do not depend on the arguments, for when they could not be parsed (the
/// others would report what the arguments may well have allowed, or named).
pub(crate) fn function(func: &Function) -> darling::Result<()> {
    let mut errors = darling::Error::accumulator();
    errors.extend(const_fn(func));
    errors.extend(applied_twice(func));
    errors.extend(return_type(func));
    errors.finish()
}

fn timeout_and_deadline(args: &Args) -> Option<darling::Error> {
    let (Some(_), Some(deadline)) = (&args.timeout, &args.deadline) else {
        return None;
    };
    Some(
        darling::Error::custom(
            "`timeout` and `deadline` cannot both be given: a timeout is a deadline counted from \
             the call; keep one of them",
        )
        .with_span(&deadline.span()),
    )
}

fn const_fn(func: &Function) -> Option<darling::Error> {
    let constness = func.sig.constness.as_ref()?;
    Some(
        darling::Error::custom(
            "`#[cancellable]` cannot be used on a `const fn`: deriving and checking a context \
             happens at run time; remove `const`",
        )
        .with_span(constness),
    )
}

/// `#[cancellable] #[cancellable] fn f()`: the second would derive a grandchild of the same
/// parent and check every loop twice.
fn applied_twice(func: &Function) -> Option<darling::Error> {
    let again = func.outer_attrs.iter().find(|attr| {
        attr.path()
            .segments
            .last()
            .is_some_and(|last| last.ident == "cancellable")
    })?;
    Some(
        darling::Error::custom(format!(
            "`#[cancellable]` is given twice on `{}`: each would derive its own child context \
             and check every loop again; keep one, with all the arguments in it",
            func.sig.ident
        ))
        .with_span(again.path()),
    )
}

/// A return type, and not a future from a sync fn.
fn return_type(func: &Function) -> Option<darling::Error> {
    let name = &func.sig.ident;
    let Some(output) = func.output() else {
        return Some(
            darling::Error::custom(format!(
                "`#[cancellable]` function `{name}` has no return type, but it must return \
                 `Result<T, E>` with `E: From<ctx_core::Error>`, to report cancellation: add \
                 one, e.g. `-> Result<(), ctx_core::Error>`"
            ))
            .with_span(&func.sig.paren_token.span.join()),
        );
    };
    if !matches!(func.body, Body::Sync(_)) {
        return None;
    }
    let future_output = match output {
        syn::Type::ImplTrait(ty) => super::ast::future_output(&ty.bounds),
        ty => super::ast::boxed_future_output(ty),
    }?;
    let output = crate::common::written(&future_output);
    Some(
        darling::Error::custom(format!(
            "`#[cancellable]` function `{name}` returns a future from a plain `fn`: its body \
             only builds the future, so the context would end before the future runs. Write \
             it as `async fn {name}(..) -> {output}`; `#[cancellable]` then races every \
             `.await` against the context"
        ))
        .with_span(&output_span(func)),
    )
}

fn output_span(func: &Function) -> proc_macro2::Span {
    match &func.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => func.sig.ident.span(),
    }
}

/// Which parameter is the parent: `ctx = name` must name a context parameter; a parameter
/// named `ctx` must be a context; two context parameters need `ctx = name`.
fn context_params(func: &Function, named: Option<&syn::Ident>) -> Vec<darling::Error> {
    let name = &func.sig.ident;
    if let Some(named) = named {
        return named_param(func, named).into_iter().collect();
    }
    let mut errors: Vec<_> = ctx_param_type(func).into_iter().collect();
    let mut contexts = func.params.iter().filter(|p| p.context.is_some());
    if let Some(first) = contexts.next() {
        for extra in contexts {
            errors.push(
                darling::Error::custom(format!(
                    "`#[cancellable]` function `{name}` has two context parameters, `{}` and \
                     `{}`: say which one is the parent with `#[cancellable(ctx = {})]`",
                    first.ident, extra.ident, first.ident
                ))
                .with_span(&extra.ident),
            );
        }
    }
    errors
}

/// A parameter named `ctx` is taken for the parent: it must be a context.
fn ctx_param_type(func: &Function) -> Option<darling::Error> {
    let name = &func.sig.ident;
    let param = func.params.iter().find(|param| param.ident == "ctx")?;
    if let syn::Type::Reference(reference) = &param.ty
        && reference.mutability.is_some()
        && super::ast::is_context_path(&reference.elem)
    {
        return Some(
            darling::Error::custom(format!(
                "parameter `ctx` of `#[cancellable]` function `{name}` is a `&mut Context`, but \
                 a context is shared, never mutated (deriving from it takes `&self`): take \
                 `ctx: &Context`, or `ctx: Context` to own a handle"
            ))
            .with_span(&reference.mutability),
        );
    }
    if param.context.is_some() {
        return None;
    }
    Some(
        darling::Error::custom(format!(
            "parameter `ctx` of `#[cancellable]` function `{name}` is not a context: \
             `#[cancellable]` takes a parameter named `ctx` to be the parent context, which must \
             be `&Context` or `Context`; rename this parameter, or name the real context \
             parameter with `#[cancellable(ctx = ...)]`"
        ))
        .with_span(&param.ident),
    )
}

fn named_param(func: &Function, named: &syn::Ident) -> Option<darling::Error> {
    let Some(param) = func.params.iter().find(|p| p.ident == *named) else {
        let names: Vec<String> = func.params.iter().map(|p| p.ident.to_string()).collect();
        let hint = match closest(&named.to_string(), &names) {
            Some(close) => format!("did you mean `ctx = {close}`?"),
            None if names.is_empty() => {
                "remove `ctx = ...` to derive from `Context::current()`".to_owned()
            }
            None => format!("its parameters are `{}`", names.join("`, `")),
        };
        return Some(
            darling::Error::custom(format!(
                "`ctx = {named}` names no parameter of `{}`: {hint}",
                func.sig.ident
            ))
            .with_span(named),
        );
    };
    if param.context.is_some() {
        return None;
    }
    Some(
        darling::Error::custom(format!(
            "`ctx = {named}` names a parameter of type `{}`, but the parent context must be \
             `&Context` or `Context` (ctx_core's)",
            crate::common::written(&param.ty)
        ))
        .with_span(&param.ty.span()),
    )
}

/// `allow_blocking` on a sync fn allows nothing: only async bodies are checked.
fn allow_blocking_on_sync(args: &Args, func: &Function) -> Option<darling::Error> {
    let span = args.allow_blocking.span()?;
    if func.body.is_async() {
        return None;
    }
    Some(
        darling::Error::custom(format!(
            "`allow_blocking` has no effect on `{}`, a sync function: only async \
             `#[cancellable]` bodies are checked for blocking calls, since a sync one may \
             block; remove it",
            func.sig.ident
        ))
        .with_span(&span),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let names = ["context".to_owned(), "id".to_owned()];
        assert_eq!(closest("contxt", &names), Some("context"));
        assert_eq!(closest("parent", &names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
