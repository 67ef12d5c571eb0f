//! The body rewrite: a checkpoint at the top of every loop iteration, and a race against the
//! context at every `.await`.
//!
//! ```text
//! // Input:                          // Output:
//! for row in rows {                  for row in rows {
//!     total += row;                      if let Some(r) = __ctx_child.checkpoint() { return r; }
//! }                                      total += row;
//!                                    }
//! fetch(url).await                   match __ctx_child.run(fetch(url)).await {
//!                                        Ok(v) => v,
//!                                        Err(e) => return __ctx_child.cancelled(e),
//!                                    }
//! ```
//!
//! `__ctx_child` (a `__private::Child`, bound with mixed-site hygiene so user code cannot
//! name it) holds the derived context and its resolved state: `checkpoint()` is one atomic
//! load; `cancelled(e)` builds the function's `Err(From::from(e))`.
//!
//! The walk stops wherever a `return` would no longer return from the function, or the code
//! is not the function's own:
//! - closures: a `return` there would leave the closure, not the function;
//! - async blocks: likewise, and they may run after the function's context has ended;
//! - nested items (`fn`, `impl`, `mod`, ...): other functions entirely;
//! - macro invocations: their tokens are not Rust syntax yet (`select!`, `join!`, ...);
//! - const contexts (`const { }` blocks, array lengths) and types: evaluated at compile time.

use proc_macro2::Span;
use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};

/// Inserts checkpoints into a function body.
#[derive(Clone)]
pub(crate) struct Checkpoints {
    /// A checkpoint at the start of every `loop`, `while`, `while let` and `for` body.
    pub(crate) loops: bool,
    /// Every `.await` races its future against the context.
    pub(crate) awaits: bool,
    /// The `__private::Child` binding (mixed-site).
    pub(crate) child: syn::Ident,
}

impl Checkpoints {
    /// The statement that begins each loop iteration.
    fn loop_checkpoint(&self, span: Span) -> syn::Stmt {
        let child = &self.child;
        let r = syn::Ident::new("__ctx_return", Span::mixed_site().located_at(span));
        syn::parse_quote_spanned! {span=>
            if let ::core::option::Option::Some(#r) = #child.checkpoint() {
                return #r;
            }
        }
    }

    fn prepend(&self, body: &mut syn::Block, span: Span) {
        if self.loops {
            body.stmts.insert(0, self.loop_checkpoint(span));
        }
    }

    /// `base.await` as a race of `base` against the context.
    fn race(&self, base: &syn::Expr, await_span: Span) -> syn::Expr {
        let child = &self.child;
        let span = base.span();
        let value = syn::Ident::new("__ctx_value", Span::mixed_site().located_at(span));
        let err = syn::Ident::new("__ctx_err", Span::mixed_site().located_at(span));
        let run = quote_spanned!(span=> #child.run(#base));
        let awaited = quote_spanned!(await_span=> #run.await);
        // A parsed `syn::Expr` (not `Verbatim`), so that the enclosing expression prints it
        // with the parentheses its position needs (`x.await.len();` as a statement).
        syn::parse_quote_spanned! {span=>
            match #awaited {
                ::core::result::Result::Ok(#value) => #value,
                ::core::result::Result::Err(#err) => return #child.cancelled(#err),
            }
        }
    }
}

impl VisitMut for Checkpoints {
    fn visit_expr_mut(&mut self, expr: &mut syn::Expr) {
        match expr {
            // A `return` in a closure or an async block leaves it, not the function.
            syn::Expr::Closure(_) | syn::Expr::Async(_) => {}
            // Compile-time code.
            syn::Expr::Const(_) => {}
            // Not parsed: the tokens belong to the macro.
            syn::Expr::Macro(_) => {}
            syn::Expr::Await(awaited) if self.awaits => {
                self.visit_expr_mut(&mut awaited.base);
                *expr = self.race(&awaited.base, awaited.await_token.span);
            }
            _ => visit_mut::visit_expr_mut(self, expr),
        }
    }

    fn visit_expr_loop_mut(&mut self, node: &mut syn::ExprLoop) {
        visit_mut::visit_expr_loop_mut(self, node);
        self.prepend(&mut node.body, node.loop_token.span);
    }

    fn visit_expr_while_mut(&mut self, node: &mut syn::ExprWhile) {
        visit_mut::visit_expr_while_mut(self, node);
        self.prepend(&mut node.body, node.while_token.span);
    }

    fn visit_expr_for_loop_mut(&mut self, node: &mut syn::ExprForLoop) {
        visit_mut::visit_expr_for_loop_mut(self, node);
        self.prepend(&mut node.body, node.for_token.span);
    }

    // The length of `[x; N]` is a const context.
    fn visit_expr_repeat_mut(&mut self, node: &mut syn::ExprRepeat) {
        self.visit_expr_mut(&mut node.expr);
    }

    // Nested items are other functions: do not recurse.
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    // Statement macros (`println!(...);`), like expression macros: not parsed.
    fn visit_macro_mut(&mut self, _: &mut syn::Macro) {}

    // Types hold no run-time code (array lengths are const contexts).
    fn visit_type_mut(&mut self, _: &mut syn::Type) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(loops: bool, awaits: bool, src: &str) -> String {
        let mut block: syn::Block = syn::parse_str(src).unwrap();
        let mut visitor = Checkpoints {
            loops,
            awaits,
            child: syn::Ident::new("child", Span::call_site()),
        };
        visitor.visit_block_mut(&mut block);
        let file: syn::File = syn::parse_quote!(fn f() #block);
        prettyplease::unparse(&file)
    }

    #[test]
    fn loops_of_every_kind() {
        let out = rewrite(
            true,
            true,
            "{ 'outer: loop { while x { for i in 0..n { while let Some(y) = it.next() { \
             break 'outer 5; } } } } }",
        );
        assert_eq!(out.matches("checkpoint()").count(), 4, "{out}");
    }

    #[test]
    fn stops_at_closures_async_blocks_items_macros_and_consts() {
        let out = rewrite(
            true,
            true,
            "{ let c = || loop {}; let a = async { loop { x.await } }; fn g() { loop {} } \
             m!(loop {}); let k = [0u8; { let mut n = 0; while n < 3 { n += 1 } n }]; \
             let k: [u8; { loop {} }] = const { loop {} }; }",
        );
        assert!(!out.contains("checkpoint"), "{out}");
        assert!(!out.contains("child.run"), "{out}");
    }

    #[test]
    fn nested_awaits_race_inside_out() {
        let out = rewrite(false, true, "{ a.await.b().await; a.await.len(); }");
        syn::parse_file(&out).expect("valid Rust");
        assert_eq!(out.matches(".run(").count(), 3, "{out}");
        assert!(!out.contains("checkpoint"), "{out}");
    }

    #[test]
    fn selection() {
        let out = rewrite(false, false, "{ loop { x.await } }");
        assert_eq!(
            out,
            prettyplease::unparse(&syn::parse_quote!(
                fn f() {
                    loop {
                        x.await
                    }
                }
            ))
        );
        let loops_only = rewrite(true, false, "{ loop { x.await } }");
        assert!(loops_only.contains("checkpoint") && !loops_only.contains("run("));
    }
}
