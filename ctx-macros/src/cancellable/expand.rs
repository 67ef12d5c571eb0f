//! Code generation: the function with its body running under the derived child context.
//!
//! Generated bindings use `Span::mixed_site()` (the body cannot see or shadow them); paths go
//! through `<crate>::__private`; code that can fail to type-check is spanned at the user's
//! tokens that the error is about (the return type, the context parameter).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;

use super::checkpoints::Checkpoints;
use super::validate::{Child, Parent, Plan, Shape};

/// `#plan.krate::__private` with every token at `span`, so a failed bound on a call to it is
/// reported at `span`.
fn private_at(krate: &syn::Path, span: Span) -> TokenStream {
    crate::respan(quote!(#krate::__private), span)
}

fn mixed(name: &str) -> syn::Ident {
    syn::Ident::new(name, Span::mixed_site())
}

pub(crate) fn expand(plan: Plan) -> TokenStream {
    let Plan {
        mut func,
        krate,
        parent,
        child,
        checkpoints,
        shape,
        output,
    } = plan;
    let private = private_at(&krate, Span::call_site());
    if let Parent::Param {
        ident: parent_ident,
        mutable: true,
        ..
    } = &parent
    {
        // `mut ctx: Context`: the body mutates the rebound child, not the parameter.
        for arg in &mut func.sig.inputs {
            if let syn::FnArg::Typed(param) = arg
                && let syn::Pat::Ident(ident) = &mut *param.pat
                && ident.ident == *parent_ident
            {
                ident.mutability = None;
            }
        }
    }
    let output_span = output.span();
    let scope = mixed("__ctx_scope");
    let child_ident = mixed("__ctx_child");

    // `let __ctx_scope = <derive the child from the parent>;`, run when the function is called.
    let parent_ref = match &parent {
        Parent::Param { ident, .. } => {
            let at_param = private_at(&krate, ident.span());
            quote_spanned!(ident.span()=> #at_param::parent(&#ident))
        }
        Parent::Current => quote!(&#private::current()),
    };
    let derive = match &child {
        Child::Cancel => quote!(#private::child(#parent_ref)),
        Child::Timeout(duration, span) => {
            let (secs, nanos) = (duration.as_secs(), duration.subsec_nanos());
            let duration = quote_spanned!(*span=> #private::Duration::new(#secs, #nanos));
            quote!(#private::child_timeout(#parent_ref, #duration))
        }
        Child::TimeoutExpr(expr) => quote!(#private::child_timeout(#parent_ref, #expr)),
        Child::Deadline(expr) => quote!(#private::child_deadline(#parent_ref, #expr)),
    };
    let make_scope = quote!(let #scope = #derive;);

    // Inside the body: the resolved child and, in accept mode, the parameter's name rebound
    // to the child. The `Result` check (`returns::<R>()`) is spanned at the return type, so
    // that is where its error points.
    let at_output = private_at(&krate, output_span);
    let returns = if mentions_impl_trait(&output) {
        quote_spanned!(output_span=> #at_output::returns())
    } else {
        quote_spanned!(output_span=> #at_output::returns::<#output>())
    };
    let shadow = match &parent {
        Parent::Param {
            ident,
            by_ref,
            mutable,
        } => {
            let mutability = mutable.then(|| quote!(mut));
            let value = if *by_ref {
                quote!(: &#private::Context = #child_ident.context())
            } else {
                quote!(: #private::Context = #private::Context::clone(#child_ident.context()))
            };
            quote! {
                #[allow(unused_variables, unused_mut)]
                let #mutability #ident #value;
            }
        }
        Parent::Current => quote!(),
    };
    // The prelude of an async body: owns the scope (so it is cancelled when the body
    // completes or the future is dropped), resolves the child, and with a `return` of type
    // `R` before the body fixes the async block's output type (as an `async fn`'s is), which
    // `?` and `.into()` in the body need for inference.
    let async_prelude = quote! {
        let #scope = #scope;
        let #child_ident = #private::child_of(&#scope, #returns);
        if false {
            return #child_ident.cancelled(#private::Error::Cancelled);
        }
        #shadow
    };

    let mut visitor = Checkpoints {
        loops: checkpoints.loops(),
        awaits: checkpoints.awaits(),
        child: child_ident.clone(),
    };
    let (outer_attrs, inner_attrs): (Vec<_>, Vec<_>) = func
        .attrs
        .iter()
        .cloned()
        .partition(|attr| matches!(attr.style, syn::AttrStyle::Outer));

    let body = match shape {
        Shape::Sync => {
            let mut block = (*func.block).clone();
            visitor.visit_block_mut(&mut block);
            quote! {
                #make_scope
                #private::enter(&#scope, #returns, |#child_ident| {
                    #shadow
                    #block
                })
            }
        }
        Shape::Async => {
            let mut block = (*func.block).clone();
            visitor.visit_block_mut(&mut block);
            let rebinds = rebind_params(&mut func.sig, &parent);
            func.sig.asyncness = None;
            func.sig.output = syn::parse_quote_spanned! {output_span=>
                -> impl ::core::future::Future<Output = #output>
            };
            quote! {
                #make_scope
                #private::scope(#private::Context::clone(&#scope), async move {
                    #async_prelude
                    #(#rebinds)*
                    #block
                })
            }
        }
        Shape::AsyncTrait => {
            let mut stmts = func.block.stmts.clone();
            let Some(syn::Stmt::Expr(syn::Expr::Call(mut call), None)) = stmts.pop() else {
                unreachable!("validate checked the #[async_trait] shape");
            };
            let Some(syn::Expr::Async(async_block)) = call.args.pop().map(|p| p.into_value())
            else {
                unreachable!("validate checked the #[async_trait] shape");
            };
            let mut block = async_block.block;
            visitor.visit_block_mut(&mut block);
            let inner: TokenStream = quote_spanned! {async_block.async_token.span=>
                #private::scope(#private::Context::clone(&#scope), async move {
                    #async_prelude
                    #block
                })
            };
            call.args.push(syn::Expr::Verbatim(inner));
            quote! {
                #(#stmts)*
                #make_scope
                #call
            }
        }
    };
    let vis = &func.vis;
    let sig = &func.sig;
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #body
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
                if let Parent::Param { ident: parent, .. } = parent
                    && ident.ident == *parent
                {
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
                let original = pat.clone();
                *pat = syn::parse_quote!(#arg);
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
