//! `#[derive(ContextKey)]`: the type becomes a context key whose value is itself.
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
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

/// `#[context_key(crate = "...")]`.
#[derive(Debug, FromDeriveInput)]
#[darling(attributes(context_key), supports(struct_any, enum_any))]
struct KeyAttrs {
    #[darling(rename = "crate")]
    krate: Option<SpannedValue<syn::Path>>,
}

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(err) => return err.to_compile_error(),
    };
    match expand(&input) {
        Ok(tokens) => tokens,
        Err(errors) => errors.write_errors(),
    }
}

fn expand(input: &syn::DeriveInput) -> darling::Result<TokenStream> {
    let mut errors = darling::Error::accumulator();
    let attrs = errors.handle(KeyAttrs::from_derive_input(input));
    let ident = &input.ident;

    let krate = crate::crate_path(attrs.and_then(|attrs| attrs.krate), &mut errors);

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
    errors.finish()?;

    let private = quote!(#krate::__private);
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);

    // Every type parameter must itself be able to live in a context.
    let mut generics = input.generics.clone();
    for param in generics.type_params_mut() {
        param.bounds.push(syn::parse_quote!(::core::marker::Send));
        param.bounds.push(syn::parse_quote!(::core::marker::Sync));
        param.bounds.push(syn::parse_quote!('static));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let mut impl_where = where_clause.cloned().unwrap_or_else(|| syn::WhereClause {
        where_token: Default::default(),
        predicates: Default::default(),
    });
    impl_where.predicates.push(syn::parse_quote! {
        for<'__ctx> #ident #ty_generics: ::core::marker::Send + ::core::marker::Sync
    });

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
        let at_field = crate::respan(private.clone(), ty.span());
        quote_spanned!(ty.span()=> #at_field::assert_key_field::<#ty>();)
    });
    let assert_fn = syn::Ident::new("__ctx_assert_key_fields", Span::mixed_site());

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #private::ContextKey for #ident #ty_generics #impl_where {
            const NAME: &'static str = #name;
        }

        #[doc(hidden)]
        const _: () = {
            #[allow(dead_code, clippy::extra_unused_type_parameters)]
            fn #assert_fn #impl_generics () #where_clause {
                #(#assertions)*
            }
        };
    })
}
