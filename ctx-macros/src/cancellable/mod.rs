//! `#[cancellable]`: parse the arguments ([`args`]), check them with the item
//! ([`validate`]), generate ([`expand`]) with the body rewritten by [`checkpoints`].

mod args;
mod checkpoints;
mod expand;
mod validate;

use proc_macro2::TokenStream;

/// The whole attribute. On any error: every error, and the item unchanged, so that the
/// errors are the only ones the user sees and the rest of the crate still finds the function.
pub(crate) fn cancellable(attr: TokenStream, item: TokenStream) -> TokenStream {
    let plan = match args::Args::parse(attr) {
        Ok(args) => validate::validate(args, item.clone()),
        // Still report the item's own problems, checked as if there were no arguments.
        Err(args_errors) => Err(
            match validate::validate(args::Args::default(), item.clone()) {
                Ok(_) => args_errors,
                Err(item_errors) => darling::Error::multiple(vec![args_errors, item_errors]),
            },
        ),
    };
    match plan {
        Ok(plan) => expand::expand(plan),
        Err(errors) => {
            let errors = errors.write_errors();
            quote::quote!(#errors #item)
        }
    }
}
