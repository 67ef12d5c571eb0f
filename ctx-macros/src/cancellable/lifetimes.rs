//! Every edition: the lifetimes an `async fn`'s future captures, named so that the rewrite's
//! `impl Future` can say it captures them too.
//!
//! An `async fn`'s future captures every lifetime of its parameters, on every edition. The
//! rewrite returns `impl Future<Output = R>` instead, and before edition 2024 an `impl Trait`
//! return captures only the type parameters, not the lifetimes (E0700, "hidden type captures
//! lifetime that does not appear in bounds"). So the rewrite names each elided lifetime of the
//! parameters and lists them all in a bound that every type meets,
//! `+ __private::Captures<(&'a (), ..)>`, which makes the `impl Future` capture them on any
//! edition (on 2024, it already does; the bound changes nothing there).
//!
//! ```text
//! // Input:                                  // Output:
//! async fn get(&self, key: &str)             fn get<'__ctx0, '__ctx1>(&'__ctx0 self, key: &'__ctx1 str)
//!     -> Result<&[u8], E>                        -> impl Future<Output = Result<&[u8], E>>
//!                                                    + Captures<(&'__ctx0 (), &'__ctx1 ())>
//! ```
//!
//! Naming every elided input lifetime, one for one, leaves the elision of the return type
//! (`&[u8]` above) resolving to the same lifetime as before.
//!
//! Why not keep the `async fn` and rewrite only its body, as tracing-attributes does (the
//! compiler would then capture everything itself)? Because an `async fn`'s body runs at the
//! first poll, and in derive mode the parent must be read when the function is *called*
//! (DESIGN.md; `Context::current()` at the call is what a future spawned elsewhere, or
//! polled outside the caller's scope, must inherit). That takes code that runs at the call:
//! a non-async function returning the future, whose return type is an `impl Future` again,
//! with the same capture rules. So the rewrite is that function, with its lifetimes named.
//!
//! Where the walk stops: `fn(&T)` pointer types and `Fn(&T)` sugar (their elided lifetimes
//! are higher-ranked, bound by the type itself, not the function's) and macros in type
//! position. What it cannot see: a lifetime hidden in a path (`Cow<str>` for
//! `Cow<'_, str>`, `Formatter` for `Formatter<'_>`), which has no token to name. Before
//! edition 2024 such a parameter still fails with E0700; write the lifetime out (`'_`, which
//! the `elided_lifetimes_in_paths` lint asks for anyway).

use proc_macro2::Span;
use syn::visit_mut::{self, VisitMut};

/// Names the elided lifetimes of `sig`'s parameters (new generic parameters, first in the
/// list); returns every lifetime parameter of `sig`, which the future may capture.
pub(crate) fn name_elided(sig: &mut syn::Signature) -> Vec<syn::Lifetime> {
    let mut namer = Namer { named: Vec::new() };
    for input in &mut sig.inputs {
        match input {
            syn::FnArg::Receiver(receiver) => namer.receiver(receiver),
            syn::FnArg::Typed(param) => namer.visit_type_mut(&mut param.ty),
        }
    }
    for lifetime in namer.named.into_iter().rev() {
        let param = syn::LifetimeParam::new(lifetime);
        sig.generics
            .params
            .insert(0, syn::GenericParam::Lifetime(param));
    }
    sig.generics
        .lifetimes()
        .map(|param| param.lifetime.clone())
        .collect()
}

struct Namer {
    named: Vec<syn::Lifetime>,
}

impl Namer {
    /// A new lifetime, shown at `span` in errors; mixed-site, as the rewrite's own names are.
    fn name(&mut self, span: Span) -> syn::Lifetime {
        let name = format!("'__ctx{}", self.named.len());
        let lifetime = syn::Lifetime::new(&name, Span::mixed_site().located_at(span));
        self.named.push(lifetime.clone());
        lifetime
    }

    /// `&self`, `&mut self` (shorthand), or `self: <type>`.
    fn receiver(&mut self, receiver: &mut syn::Receiver) {
        if receiver.colon_token.is_some() {
            return self.visit_type_mut(&mut receiver.ty);
        }
        if let Some((and, lifetime @ None)) = &mut receiver.reference {
            let named = self.name(and.span);
            *lifetime = Some(named.clone());
            // The shorthand's type, `&Self`, kept in step (it is what syn reports).
            if let syn::Type::Reference(ty) = &mut *receiver.ty {
                ty.lifetime = Some(named);
            }
        }
    }
}

impl VisitMut for Namer {
    fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
        if reference.lifetime.is_none() {
            reference.lifetime = Some(self.name(reference.and_token.span));
        }
        visit_mut::visit_type_reference_mut(self, reference);
    }

    fn visit_lifetime_mut(&mut self, lifetime: &mut syn::Lifetime) {
        if lifetime.ident == "_" {
            *lifetime = self.name(lifetime.apostrophe);
        }
    }

    // `fn(&T) -> &U`: higher-ranked, its own elision.
    fn visit_type_bare_fn_mut(&mut self, _: &mut syn::TypeBareFn) {}

    // `Fn(&T) -> &U`: likewise.
    fn visit_parenthesized_generic_arguments_mut(
        &mut self,
        _: &mut syn::ParenthesizedGenericArguments,
    ) {
    }

    // Not parsed.
    fn visit_type_macro_mut(&mut self, _: &mut syn::TypeMacro) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn named(src: &str) -> (String, Vec<String>) {
        let mut sig: syn::Signature = syn::parse_str(src).unwrap();
        let lifetimes = name_elided(&mut sig);
        (
            quote!(#sig).to_string(),
            lifetimes.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn names_every_elided_lifetime_in_the_parameters() {
        let (sig, lifetimes) = named(
            "fn f<'a, T>(&mut self, a: &'a T, b: &[&u8], c: Cow<'_, str>, d: Box<dyn Tr + '_>) -> &u8",
        );
        assert_eq!(
            lifetimes,
            ["'__ctx0", "'__ctx1", "'__ctx2", "'__ctx3", "'__ctx4", "'a"]
        );
        assert_eq!(
            sig,
            "fn f < '__ctx0 , '__ctx1 , '__ctx2 , '__ctx3 , '__ctx4 , 'a , T > (& '__ctx0 mut self , \
             a : & 'a T , b : & '__ctx1 [& '__ctx2 u8] , c : Cow < '__ctx3 , str > , \
             d : Box < dyn Tr + '__ctx4 >) -> & u8"
        );
    }

    #[test]
    fn leaves_higher_ranked_and_named_lifetimes() {
        let (sig, lifetimes) = named(
            "fn f(self: Arc<Self>, g: impl Fn(&u8) -> &u8, h: fn(&u8), i: &'static str, j: T)",
        );
        assert_eq!(lifetimes, Vec::<String>::new());
        assert!(!sig.contains("__ctx"), "{sig}");

        let (sig, lifetimes) = named("fn f(self: &Self)");
        assert_eq!(lifetimes, ["'__ctx0"]);
        assert!(sig.contains("self : & '__ctx0 Self"), "{sig}");
    }
}
