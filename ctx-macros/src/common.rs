//! Helpers both macros share: the path generated code names the runtime by, respanning, the
//! generated names that user code cannot see, and the lint allowances generated code carries.

use darling::util::SpannedValue;
use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};

/// The path generated code names the runtime by: `crate = "..."` if given, else `::ctx_core`.
/// A relative path is reported by [`check_crate_path`]; here it falls back to `::ctx_core`.
pub(crate) fn crate_path(krate: Option<&SpannedValue<syn::Path>>) -> syn::Path {
    match krate {
        Some(path) if is_absolute(path) => (**path).clone(),
        _ => syn::parse_quote!(::ctx_core),
    }
}

/// `crate = "..."` must be absolute (`::name...` or `crate::...`): a relative path resolves
/// differently in each module. The error names both absolute spellings.
pub(crate) fn check_crate_path(krate: Option<&SpannedValue<syn::Path>>) -> Option<darling::Error> {
    let path = krate.filter(|path| !is_absolute(path))?;
    let written = path.to_token_stream().to_string().replace(' ', "");
    let first = path
        .segments
        .first()
        .map(|s| s.ident.to_string())
        .unwrap_or_default();
    Some(
        darling::Error::custom(format!(
            "`crate = \"{written}\"` is a relative path, which resolves differently in each \
             module: write an absolute path, `crate = \"::{written}\"` if `{first}` is a crate, \
             or `crate = \"crate::{written}\"` if it is a module of this crate"
        ))
        .with_span(&path.span()),
    )
}

fn is_absolute(path: &syn::Path) -> bool {
    path.leading_colon.is_some()
        || path
            .segments
            .first()
            .is_some_and(|segment| segment.ident == "crate")
}

/// `tokens` with every token (and group) at `span`: a failed bound on a call through these
/// tokens is then reported at `span`, on the user's code.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut new = Group::new(group.delimiter(), respan(group.stream(), span));
                new.set_span(span);
                TokenTree::Group(new)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// `<krate>::__private` with every token at `span`, so a failed bound on a call to it is
/// reported at `span`.
pub(crate) fn private_at(krate: &syn::Path, span: Span) -> TokenStream {
    respan(quote!(#krate::__private), span)
}

/// A generated binding (`__ctx_scope`, ...) with mixed-site hygiene: the user's code can
/// neither see nor shadow it.
pub(crate) fn hidden(name: &str) -> syn::Ident {
    syn::Ident::new(name, Span::mixed_site())
}

/// Which lints generated code silences, each for a reason of the rewrite, not of user code.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Allow {
    /// On an `async fn` rewritten to `fn -> impl Future<..> + Captures<..>`:
    /// - `mismatched_lifetime_syntaxes`: the rewrite names the parameters' elided lifetimes
    ///   (`&self` → `&'__ctx0 self`) but leaves the return type's elided, as the user wrote it
    ///   (`unknown_lints` for the toolchains before the lint existed);
    /// - `refining_impl_trait`: in a trait impl, the extra `Captures<..>` bound is not a
    ///   promise the trait makes (it is implemented by every type, so it promises nothing).
    AsyncRewrite,
    /// On the context parameter rebound to the child: the body may not use it, or not mutate
    /// it.
    Rebound,
    /// On the derive's field assertions: a function that is never called, whose type
    /// parameters may appear only in its assertions.
    Assertions,
}

impl ToTokens for Allow {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(match self {
            Allow::AsyncRewrite => quote! {
                #[allow(unknown_lints, mismatched_lifetime_syntaxes, refining_impl_trait)]
            },
            Allow::Rebound => quote!(#[allow(unused_variables, unused_mut)]),
            Allow::Assertions => quote!(#[allow(dead_code, clippy::extra_unused_type_parameters)]),
        });
    }
}

/// Whether the last segments of `path` are `names` (`Box::pin`, `std::thread::sleep`).
pub(crate) fn path_ends_with(path: &syn::Path, names: &[&str]) -> bool {
    path.segments.len() >= names.len()
        && path
            .segments
            .iter()
            .rev()
            .zip(names.iter().rev())
            .all(|(segment, name)| segment.ident == name)
}

/// Tokens as the user would write them: `Result<u32, Error>`, not `Result < u32 , Error >`.
pub(crate) fn written(tokens: &dyn ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    [
        (" :: ", "::"),
        (":: ", "::"),
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        (" (", "("),
        ("( ", "("),
        (" )", ")"),
    ]
    .iter()
    .fold(text, |text, (from, to)| text.replace(from, to))
}

/// darling's "Unknown field" and "Duplicate field" errors, with what the attribute takes.
pub(crate) fn explain_fields(errors: darling::Error, takes: &str) -> darling::Error {
    let explained = errors.into_iter().map(|error| {
        let text = error.to_string();
        if text.starts_with("Unknown field") {
            let span = error.span();
            darling::Error::custom(format!("{text} {takes}")).with_span(&span)
        } else if text.starts_with("Duplicate field") {
            let span = error.span();
            darling::Error::custom(format!("{text}: give each argument once")).with_span(&span)
        } else {
            error
        }
    });
    darling::Error::multiple(explained.collect())
}
