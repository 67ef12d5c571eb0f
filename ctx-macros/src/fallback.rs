//! On error, emit the errors *and* something in place of the item, so that the errors are
//! the only ones the user sees (no "cannot find function", no "not a context key" where the
//! item is used) and editors keep working.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

/// `#[cancellable]`: the errors, and the function unchanged.
pub(crate) fn cancellable(errors: darling::Error, item: TokenStream) -> TokenStream {
    let errors = errors.write_errors();
    quote!(#errors #item)
}

/// `#[derive(ContextKey)]`: the errors, and a stub `ContextKey` impl, so that the type is a
/// key wherever it is used. A lifetime parameter (the derive's own error) is `'static` in the
/// stub.
pub(crate) fn context_key(
    errors: darling::Error,
    input: &syn::DeriveInput,
    krate: &syn::Path,
) -> TokenStream {
    let errors = errors.write_errors();
    let mut generics = input.generics.clone();
    let lifetimes: Vec<syn::Lifetime> = generics
        .lifetimes()
        .map(|param| param.lifetime.clone())
        .collect();
    generics.params = generics
        .params
        .into_iter()
        .filter(|param| !matches!(param, syn::GenericParam::Lifetime(_)))
        .collect();
    crate::context_key::bound_type_params(&mut generics);
    syn::visit_mut::VisitMut::visit_generics_mut(&mut ToStatic(&lifetimes), &mut generics);
    let ident = &input.ident;
    let args = input.generics.params.iter().map(|param| match param {
        syn::GenericParam::Lifetime(_) => quote!('static),
        syn::GenericParam::Type(param) => param.ident.to_token_stream(),
        syn::GenericParam::Const(param) => param.ident.to_token_stream(),
    });
    let self_ty = quote!(#ident<#(#args),*>);
    let key_impl = crate::context_key::key_impl(input, krate, &generics, self_ty);
    quote! {
        #errors
        #key_impl
    }
}

/// Replaces the given lifetimes by `'static`.
struct ToStatic<'a>(&'a [syn::Lifetime]);

impl syn::visit_mut::VisitMut for ToStatic<'_> {
    fn visit_lifetime_mut(&mut self, lifetime: &mut syn::Lifetime) {
        if self.0.contains(lifetime) {
            *lifetime = syn::Lifetime::new("'static", lifetime.span());
        }
    }
}
