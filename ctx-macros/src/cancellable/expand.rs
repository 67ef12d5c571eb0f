//! Expand: generate the function with its body running under the derived child context, one
//! function per shape (sync, `async fn`, `#[async_trait]`), on what they share ([`Gen`]).
//!
//! Generated bindings use `Span::mixed_site()` (the body cannot see or shadow them); paths go
//! through `<crate>::__private`; code that can fail to type-check is spanned at the user's
//! tokens that the error is about (the return type, the context parameter). The output is
//! the same on every edition (see [`super::lifetimes`] for the one place editions differ).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;

use super::ast::{AsyncTraitBody, Body, Function};
use super::checkpoints::Checkpoints;
use super::lifetimes;
use super::plan::{Child, Parent, Plan};
use crate::common::{Allow, hidden, private_at};

/// The function, rewritten.
pub(crate) fn expand(plan: Plan) -> TokenStream {
    let generator = Gen::new(&plan);
    let Function {
        outer_attrs,
        inner_attrs,
        vis,
        mut sig,
        body,
        ..
    } = plan.func;
    unmut_parent(&mut sig, &plan.parent);
    let (allow, body) = match body {
        Body::Sync(block) => (None, generator.sync_body(block)),
        Body::Async(block) => (
            Some(Allow::AsyncRewrite),
            generator.async_fn(&mut sig, &plan.parent, block),
        ),
        Body::AsyncTrait(body) => (None, generator.async_trait_body(body)),
    };
    quote! {
        #(#outer_attrs)*
        #allow
        #vis #sig {
            #(#inner_attrs)*
            #body
        }
    }
}

/// What every shape generates the same way.
struct Gen {
    /// `<crate>::__private`.
    private: TokenStream,
    krate: syn::Path,
    /// The `CancelScope` binding, and the `__private::Child` binding (both mixed-site).
    scope: syn::Ident,
    child: syn::Ident,
    /// `let __ctx_scope = <the child, derived from the parent>;`, run when the function is
    /// called.
    derive: TokenStream,
    /// `__private::returns::<R>()`: the compile-time check of the return type, spanned at it.
    returns: TokenStream,
    /// In accept mode, `let ctx = <the child>;`: the parameter's name refers to the child.
    shadow: TokenStream,
    output: syn::Type,
    checkpoints: Checkpoints,
    /// `trace`: the span's name, and where `trace` was written.
    trace: Option<(String, Span)>,
}

impl Gen {
    fn new(plan: &Plan) -> Gen {
        let private = private_at(&plan.krate, Span::call_site());
        let scope = hidden("__ctx_scope");
        let child = hidden("__ctx_child");
        let derive = derive_child(plan, &private, &scope);
        let output_span = plan.output.span();
        let at_output = private_at(&plan.krate, output_span);
        let output = &plan.output;
        let returns = if mentions_impl_trait(output) {
            quote_spanned!(output_span=> #at_output::returns())
        } else {
            quote_spanned!(output_span=> #at_output::returns::<#output>())
        };
        let shadow = shadow_parent(&plan.parent, &private, &child);
        let checkpoints = Checkpoints {
            loops: plan.checkpoints.loops(),
            awaits: plan.checkpoints.awaits(),
            child: child.clone(),
        };
        Gen {
            private,
            krate: plan.krate.clone(),
            scope,
            child,
            derive,
            returns,
            shadow,
            output: plan.output.clone(),
            checkpoints,
            trace: plan.trace.clone(),
        }
    }

    /// The user's block with its checkpoints.
    fn rewrite(&self, block: &mut syn::Block) {
        let mut checkpoints = self.checkpoints.clone();
        checkpoints.visit_block_mut(block);
    }

    /// A sync body runs in a closure under `enter`, which makes the child current. The
    /// closure is `move`, so that on edition 2018, where a closure captures whole variables,
    /// the body can still return what it borrows through a parameter (`&mut self.rows`).
    fn sync_body(&self, mut block: syn::Block) -> TokenStream {
        self.rewrite(&mut block);
        let Gen {
            private,
            scope,
            child,
            derive,
            returns,
            shadow,
            ..
        } = self;
        let trace = self.trace.as_ref().map(|(name, span)| {
            let krate = &self.krate;
            let guard = hidden("__ctx_trace");
            quote_spanned! {*span=>
                let #guard = #krate::__ctx_trace_span!(@sync #child.context(), #name);
            }
        });
        quote! {
            #derive
            #private::enter(&#scope, #returns, move |#child| {
                #trace
                #shadow
                #block
            })
        }
    }

    /// An `async fn` becomes a `fn` that derives the child at the call and returns the body
    /// as a future: `impl Future<Output = R>`, capturing every lifetime of the parameters as
    /// the `async fn`'s future did, on every edition.
    fn async_fn(
        &self,
        sig: &mut syn::Signature,
        parent: &Parent,
        mut block: syn::Block,
    ) -> TokenStream {
        self.rewrite(&mut block);
        let rebinds = rebind_params(sig, parent);
        let lifetimes = lifetimes::name_elided(sig);
        let output = &self.output;
        let output_span = output.span();
        let captures = (!lifetimes.is_empty()).then(|| {
            let at_output = private_at(&self.krate, output_span);
            quote_spanned!(output_span=> + #at_output::Captures<(#(&#lifetimes (),)*)>)
        });
        sig.asyncness = None;
        sig.output = syn::parse_quote_spanned! {output_span=>
            -> impl ::core::future::Future<Output = #output> #captures
        };
        let derive = &self.derive;
        let future = self.future(Span::call_site(), quote!(#(#rebinds)* #block));
        quote! {
            #derive
            #future
        }
    }

    /// Under `#[async_trait]` the signature stays; the child is derived before `Box::pin`,
    /// and the boxed async block becomes the body of the future.
    fn async_trait_body(&self, body: Box<AsyncTraitBody>) -> TokenStream {
        let AsyncTraitBody {
            stmts,
            pin,
            mut block,
            ..
        } = *body;
        self.rewrite(&mut block.block);
        let inner = &block.block;
        let future = self.future(block.async_token.span, quote!(#inner));
        let derive = &self.derive;
        quote! {
            #(#stmts)*
            #derive
            #pin(#future)
        }
    }

    /// `__private::scoped(child, async move { <prelude> <body> })`. The prelude owns the scope
    /// (so it is cancelled when the body completes or the future is dropped), resolves the
    /// child, and with a `return` of type `R` before the body fixes the async block's output
    /// type (as an `async fn`'s is), which `?` and `.into()` in the body need for inference.
    fn future(&self, span: Span, body: TokenStream) -> TokenStream {
        let Gen {
            private,
            scope,
            child,
            returns,
            shadow,
            ..
        } = self;
        let future = quote_spanned! {span=>
            #private::scoped(#private::Context::clone(&#scope), async move {
                let #scope = #scope;
                let #child = #private::child_of(&#scope, #returns);
                if false {
                    return #child.cancelled(#private::Error::Cancelled);
                }
                #shadow
                #body
            })
        };
        match &self.trace {
            None => future,
            Some((name, at)) => {
                let krate = &self.krate;
                quote_spanned! {*at=>
                    #krate::__ctx_trace_span!(@async #private::Context::clone(&#scope), #name, #future)
                }
            }
        }
    }
}

/// `let __ctx_scope = __private::child*(<parent>, ..);`
fn derive_child(plan: &Plan, private: &TokenStream, scope: &syn::Ident) -> TokenStream {
    let parent = match &plan.parent {
        Parent::Param { ident, .. } => {
            let at_param = private_at(&plan.krate, ident.span());
            quote_spanned!(ident.span()=> #at_param::parent(&#ident))
        }
        Parent::Current => quote!(&#private::current()),
    };
    let derive = match &plan.child {
        Child::Cancel => quote!(#private::child(#parent)),
        Child::Timeout(duration, span) => {
            let (secs, nanos) = (duration.as_secs(), duration.subsec_nanos());
            let duration = quote_spanned!(*span=> #private::Duration::new(#secs, #nanos));
            quote!(#private::child_timeout(#parent, #duration))
        }
        Child::TimeoutExpr(expr) => quote!(#private::child_timeout(#parent, #expr)),
        Child::Deadline(expr) => quote!(#private::child_deadline(#parent, #expr)),
    };
    quote!(let #scope = #derive;)
}

/// In accept mode, the parameter's name rebound to the child, with the parameter's type.
fn shadow_parent(parent: &Parent, private: &TokenStream, child: &syn::Ident) -> TokenStream {
    let Parent::Param {
        ident,
        by_ref,
        mutable,
    } = parent
    else {
        return TokenStream::new();
    };
    let mutability = mutable.then(|| quote!(mut));
    let value = if *by_ref {
        quote!(: &#private::Context = #child.context())
    } else {
        quote!(: #private::Context = #private::Context::clone(#child.context()))
    };
    let allow = Allow::Rebound;
    quote! {
        #allow
        let #mutability #ident #value;
    }
}

/// `mut ctx: Context`: the body mutates the rebound child, not the parameter, so the
/// parameter loses its `mut`.
fn unmut_parent(sig: &mut syn::Signature, parent: &Parent) {
    let Parent::Param {
        ident: parent,
        mutable: true,
        ..
    } = parent
    else {
        return;
    };
    for arg in &mut sig.inputs {
        if let syn::FnArg::Typed(param) = arg
            && let syn::Pat::Ident(ident) = &mut *param.pat
            && ident.ident == *parent
        {
            ident.mutability = None;
        }
    }
}

/// An `async fn` moves all its parameters into its future, and drops them when it completes;
/// so does the rewrite: each parameter (but the parent context, which is only read at the
/// call) is rebound inside the async block. `mut x` becomes `x` in the signature and
/// `let mut x = x;` inside; a pattern parameter becomes `__ctx_argN` and `let <pat> = __ctx_argN;`.
fn rebind_params(sig: &mut syn::Signature, parent: &Parent) -> Vec<TokenStream> {
    let mut rebinds = Vec::new();
    for (index, arg) in sig.inputs.iter_mut().enumerate() {
        let syn::FnArg::Typed(param) = arg else {
            continue; // `self` is captured by the body if it uses it.
        };
        match &mut *param.pat {
            syn::Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                if parent.ident() == Some(&ident.ident) {
                    continue;
                }
                let mutability = ident.mutability.take();
                let name = &ident.ident;
                rebinds.push(quote!(let #mutability #name = #name;));
            }
            pat => {
                let arg = syn::Ident::new(
                    &format!("__ctx_arg{index}"),
                    Span::mixed_site().located_at(pat.span()),
                );
                let original = std::mem::replace(pat, syn::parse_quote!(#arg));
                rebinds.push(match original {
                    // `let _ = x;` would not move `x`: keep it alive under the hidden name.
                    syn::Pat::Wild(_) => quote!(let #arg = #arg;),
                    original => quote!(let #original = #arg;),
                });
            }
        }
    }
    rebinds
}

/// Whether `ty` contains `impl Trait`, which cannot be written in a turbofish
/// (`returns::<R>()`); then `R` is inferred.
fn mentions_impl_trait(ty: &syn::Type) -> bool {
    fn any_impl(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => ident == "impl",
            TokenTree::Group(group) => any_impl(group.stream()),
            _ => false,
        })
    }
    any_impl(ty.to_token_stream())
}
