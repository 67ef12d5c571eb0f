//! `#[cancellable]`, as a pipeline: parse the arguments ([`args`]) and the item ([`ast`]),
//! check them together ([`validate`], with the body's [`lints`]), decide ([`mod@plan`]) and
//! generate ([`expand`], with the body rewritten by [`checkpoints`] and the lifetimes named
//! by [`lifetimes`]). On any error: [`crate::fallback`].

mod args;
mod ast;
mod checkpoints;
mod expand;
mod lifetimes;
mod lints;
mod plan;
mod spawns;
mod validate;

use proc_macro2::TokenStream;

use args::Args;
use ast::Function;
use plan::Plan;

/// The whole attribute: the rewritten function, or every error and the item unchanged.
pub(crate) fn cancellable(attr: TokenStream, item: TokenStream) -> TokenStream {
    match plan(attr, item.clone()) {
        Ok(plan) => expand::expand(plan),
        Err(errors) => crate::fallback::cancellable(errors, item),
    }
}

/// Parse and validate; the plan, or every error found.
fn plan(attr: TokenStream, item: TokenStream) -> darling::Result<Plan> {
    match (Args::parse(attr), Function::parse(item)) {
        (Ok(args), Ok(func)) => {
            validate::validate(&args, &func)?;
            Ok(Plan::new(args, func))
        }
        // Still report the function's own problems, those that no argument changes.
        (Err(args_errors), Ok(func)) => {
            let func_errors = validate::function(&func).err();
            Err(darling::Error::multiple(
                std::iter::once(args_errors).chain(func_errors).collect(),
            ))
        }
        (args, Err(item_error)) => Err(darling::Error::multiple(
            args.err().into_iter().chain([item_error]).collect(),
        )),
    }
}
