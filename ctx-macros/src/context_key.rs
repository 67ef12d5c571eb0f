//! `#[derive(ContextKey)]`: the type becomes a context key whose value is itself. Parse (the
//! `#[context_key(..)]` attribute) → validate (no lifetime parameters) → expand; on error,
//! [`crate::fallback::context_key`] emits the errors and a stub impl.
//!
//! ```text
//! // Input:                       // Output:
//! #[derive(ContextKey)]           impl ::ctx_core::__private::ContextKey for RequestId
//! struct RequestId(u64);          where for<'__ctx> RequestId: Send + Sync {
//!                                     const NAME: &'static str = "RequestId";
//!                                 }
//!                                 const _: () = { /* each field: Send + Sync + 'static */ };
//! ```
//!
//! The `Send + Sync` where-clause is higher-ranked so that the compiler checks it where the
//! key is used, not here: a field that is not `Send` is then reported once, by the field
//! assertion spanned at that field, with no second error at the impl.

use darling::FromDeriveInput;
use darling::util::SpannedValue;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::common::{Allow, hidden, private_at};

/// `#[context_key(crate = "...")]`.
#[derive(Debug, FromDeriveInput)]
#[darling(attributes(context_key), supports(struct_any, enum_any))]
struct KeyAttrs {
    #[darling(rename = "crate")]
    krate: Option<SpannedValue<syn::Path>>,
}

/// The derive: the impl, or the errors and a stub impl.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(err) => return err.to_compile_error(),
    };
    let attrs = KeyAttrs::from_derive_input(&input).map_err(|errors| {
        crate::common::explain_fields(
            errors,
            "(`#[context_key]` takes only `crate = \"::path\"`, for crates that re-export \
             ctx_core; the key's `NAME` is always its type's name)",
        )
    });
    let krate = crate::common::crate_path(attrs.as_ref().ok().and_then(|a| a.krate.as_ref()));
    let mut errors = darling::Error::accumulator();
    let attrs = errors.handle(attrs);
    errors.extend(validate(attrs.as_ref(), &input).err());
    match errors.finish() {
        Ok(()) => expand(&input, &krate),
        Err(errors) => crate::fallback::context_key(errors, &input, &krate),
    }
}

/// A key is `'static`, so it has no lifetime parameters; `crate` must be absolute (checked
/// when the attribute could be parsed).
fn validate(attrs: Option<&KeyAttrs>, input: &syn::DeriveInput) -> darling::Result<()> {
    let mut errors = darling::Error::accumulator();
    errors.extend(crate::common::check_crate_path(
        attrs.and_then(|a| a.krate.as_ref()),
    ));
    let ident = &input.ident;
    for lifetime in input.generics.lifetimes() {
        errors.push(
            darling::Error::custom(format!(
                "a context key must be `'static`, but `{ident}` borrows through lifetime \
                 parameter `{}`: a context can outlive any borrow, so store owned data instead \
                 (`String` for `&str`, `Arc<T>` or `Box<T>` for `&T`)",
                lifetime.lifetime
            ))
            .with_span(&lifetime.lifetime),
        );
    }
    errors.finish()
}

fn expand(input: &syn::DeriveInput, krate: &syn::Path) -> TokenStream {
    let mut generics = input.generics.clone();
    bound_type_params(&mut generics);
    let (_, ty_generics, _) = input.generics.split_for_impl();
    let ident = &input.ident;
    let key_impl = key_impl(input, krate, &generics, quote!(#ident #ty_generics));

    let field_types: Vec<&syn::Type> = match &input.data {
        syn::Data::Struct(data) => data.fields.iter().map(|f| &f.ty).collect(),
        syn::Data::Enum(data) => data
            .variants
            .iter()
            .flat_map(|v| v.fields.iter().map(|f| &f.ty))
            .collect(),
        syn::Data::Union(data) => data.fields.named.iter().map(|f| &f.ty).collect(),
    };
    let assertions = field_types.iter().map(|ty| {
        let at_field = private_at(krate, ty.span());
        quote_spanned!(ty.span()=> #at_field::assert_key_field::<#ty>();)
    });
    let assert_fn = hidden("__ctx_assert_key_fields");
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let allow = Allow::Assertions;

    quote! {
        #key_impl

        #[doc(hidden)]
        const _: () = {
            #allow
            fn #assert_fn #impl_generics () #where_clause {
                #(#assertions)*
            }
        };
    }
}

/// `impl ContextKey for <self_ty>`, with the higher-ranked `Send + Sync` bound.
pub(crate) fn key_impl(
    input: &syn::DeriveInput,
    krate: &syn::Path,
    generics: &syn::Generics,
    self_ty: TokenStream,
) -> TokenStream {
    let name = input.ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let mut impl_where = where_clause.cloned().unwrap_or_else(|| syn::WhereClause {
        where_token: Default::default(),
        predicates: Default::default(),
    });
    impl_where.predicates.push(syn::parse_quote! {
        for<'__ctx> #self_ty: ::core::marker::Send + ::core::marker::Sync
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::__private::ContextKey for #self_ty #impl_where {
            const NAME: &'static str = #name;
        }
    }
}

/// Every type parameter must itself be able to live in a context: `Send + Sync + 'static`.
pub(crate) fn bound_type_params(generics: &mut syn::Generics) {
    for param in generics.type_params_mut() {
        param.bounds.push(syn::parse_quote!(::core::marker::Send));
        param.bounds.push(syn::parse_quote!(::core::marker::Sync));
        param.bounds.push(syn::parse_quote!('static));
    }
}
