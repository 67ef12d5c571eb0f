//! What a `#[cancellable]` body must not do, found by reading it: Go's `contextcheck` linter
//! and a blocking-call check, done by the compiler.
//!
//! - **Detaching** (any body, unless `allow_detached`): `Context::background()`,
//!   `Context::todo()` or `Context::default()` starts a new context tree, so the caller's
//!   deadline and cancellation no longer reach the work done under it. Found in any path
//!   spelling whose last two segments are `Context::{background, todo, default}`
//!   (`ctx_core::Context::background`, called or passed as a function), `<Context>::default()`
//!   and `<Context as Default>::default()`, and `Default::default()` where the code says it is
//!   a context (`let c: Context = Default::default();`).
//! - **Spawning without the context** (any body, unless `allow_detached`): `tokio::spawn`,
//!   `tokio::task::spawn` and `tokio::task::spawn_blocking` run the task with no ambient
//!   context, so the deadline and cancellation do not reach it; the fix is `ctx_core::spawn` /
//!   `ctx_core::spawn_blocking`. Which spellings are found, and which spawns carry a context
//!   by hand (`tokio::spawn(ctx.scope(fut))`): [`super::spawns`].
//! - **Blocking** (async bodies, unless `allow_blocking`): `std::thread::sleep(..)` or
//!   `thread::sleep(..)` stops the executor thread, and with it every task on that thread,
//!   and no checkpoint can interrupt it; so does `ctx.wait()` / `ctx.wait_timeout(..)` on
//!   the context parameter or on `Context::current()`.
//!
//! The check reads syntax, not types, so it cannot see through a name the body does not
//! spell: a `use` alias (`use ctx_core::Context as Ctx; Ctx::background()`, `use
//! std::thread::sleep; sleep(d)`), a type alias, a helper function that detaches or blocks,
//! `Default::default()` where the type is only inferred. And by name only: another crate's
//! type called `Context` is taken for ctx_core's.
//!
//! Where the walk goes, and where it stops:
//! - closures and async blocks: checked for detaching (they are this function's work); for
//!   blocking, async blocks are checked but closures are not (a closure may well run on a
//!   blocking thread: `spawn_blocking(move || thread::sleep(d))`);
//! - nested items (`fn`, `impl`, `mod`, ...): other functions, not checked;
//! - macro invocations: checked when their arguments are comma-separated expressions
//!   (`println!`, `vec!`, `assert_eq!`, `join!`, ...); other macro bodies (`select!`, DSLs) are
//!   not Rust expressions until the macro expands them, so they are not checked.

use proc_macro2::Span;
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};

use super::spawns::{Imports, Spawn};
use crate::common::path_ends_with;

/// The checks on one body.
pub(crate) struct BodyLints<'a> {
    /// The function's name, for the messages.
    function: &'a syn::Ident,
    /// The context parameter (accept mode), or `None` (derive mode): what to pass on instead.
    ctx: Option<&'a syn::Ident>,
    /// Report detaching.
    detached: bool,
    /// Report blocking (an async body).
    blocking: bool,
    /// Inside a closure (blocking is not reported there).
    in_closure: bool,
    /// The names the body's `use` items bind to tokio's spawns.
    imports: Imports,
    errors: Vec<darling::Error>,
}

impl<'a> BodyLints<'a> {
    pub(crate) fn new(
        function: &'a syn::Ident,
        ctx: Option<&'a syn::Ident>,
        detached: bool,
        blocking: bool,
    ) -> Self {
        BodyLints {
            function,
            ctx,
            detached,
            blocking,
            in_closure: false,
            imports: Imports::default(),
            errors: Vec::new(),
        }
    }

    /// Walks `block`; the errors, in source order.
    pub(crate) fn check(mut self, block: &syn::Block) -> Vec<darling::Error> {
        if self.detached || self.blocking {
            if self.detached {
                self.imports = Imports::of(block);
            }
            self.visit_block(block);
        }
        self.errors
    }

    /// How the messages name the function's own context.
    fn ctx_name(&self) -> String {
        match self.ctx {
            Some(ident) => ident.to_string(),
            None => "Context::current()".to_owned(),
        }
    }

    fn detached(&mut self, written: &str, span: Span) {
        let ctx = self.ctx_name();
        self.errors.push(
            darling::Error::custom(format!(
                "`{written}` inside `#[cancellable]` function `{function}` starts a new context \
                 tree: the caller's deadline and cancellation no longer reach the work done \
                 under it. Pass on `{ctx}` (the function's context, derived from the caller's) \
                 instead; to detach on purpose, use `{ctx}.without_cancel()` (keeps the values, \
                 drops the deadline and cancellation), or write \
                 `#[cancellable(allow_detached)]` on the function",
                function = self.function,
            ))
            .with_span(&span),
        );
    }

    fn spawn_without_context(&mut self, written: &str, spawn: Spawn, span: Span) {
        self.errors.push(
            darling::Error::custom(format!(
                "`{written}` inside `#[cancellable]` function `{function}` spawns a task without \
                 the function's context: the caller's deadline and cancellation do not reach it \
                 (`Context::current()` there is the background context), and it may outlive the \
                 call. Spawn it with `{fix}(..)` instead, which runs it under the function's \
                 context; for work meant to outlive the call, write \
                 `#[cancellable(allow_detached)]` on the function",
                function = self.function,
                fix = spawn.fix(),
            ))
            .with_span(&span),
        );
    }

    /// A path to one of tokio's spawns, if the detaching checks are on.
    fn spawn_path(&self, expr: &syn::ExprPath) -> Option<Spawn> {
        if !self.detached || expr.qself.is_some() {
            return None;
        }
        self.imports.spawn(&expr.path)
    }

    fn blocking(&mut self, written: &str, instead: &str, span: Span) {
        self.errors.push(
            darling::Error::custom(format!(
                "`{written}` blocks the executor thread inside async `#[cancellable]` function \
                 `{function}`: no other task on that thread runs until it returns, and the \
                 function's context cannot interrupt it. {instead}; or, to block anyway, write \
                 `#[cancellable(allow_blocking)]` on the function",
                function = self.function,
            ))
            .with_span(&span),
        );
    }

    /// A path to a function that detaches, as written: `Context::background`,
    /// `ctx_core::Context::todo`, `<Context>::default`, `<Context as Default>::default`.
    fn detaching_path(expr: &syn::ExprPath) -> Option<String> {
        let last = expr.path.segments.last()?;
        if !matches!(
            last.ident.to_string().as_str(),
            "background" | "todo" | "default"
        ) {
            return None;
        }
        let on_context = match &expr.qself {
            Some(qself) => super::ast::is_context_path(&qself.ty),
            None => path_ends_with(&expr.path, &["Context", &last.ident.to_string()]),
        };
        on_context.then(|| written(expr))
    }

    /// `std::thread::sleep`, `thread::sleep`, `::std::thread::sleep`.
    fn is_thread_sleep(path: &syn::Path) -> bool {
        let n = path.segments.len();
        path_ends_with(path, &["thread", "sleep"])
            && (n == 2 || (n == 3 && path.segments[0].ident == "std"))
    }

    /// `ctx.wait()` on the context parameter or on `Context::current()`.
    fn is_context_receiver(&self, receiver: &syn::Expr) -> bool {
        match receiver {
            syn::Expr::Path(path) => match (self.ctx, path.path.get_ident()) {
                (Some(ctx), Some(ident)) => ident == ctx,
                _ => false,
            },
            syn::Expr::Call(call) => matches!(
                &*call.func,
                syn::Expr::Path(path) if path_ends_with(&path.path, &["Context", "current"])
            ),
            syn::Expr::Paren(paren) => self.is_context_receiver(&paren.expr),
            syn::Expr::Reference(reference) => self.is_context_receiver(&reference.expr),
            _ => false,
        }
    }

    /// `let c: Context = Default::default();` (or `&Context` and `&Default::default()`).
    fn default_as_context(local: &syn::Local) -> Option<&syn::Path> {
        let syn::Pat::Type(typed) = &local.pat else {
            return None;
        };
        let mut init = &*local.init.as_ref()?.expr;
        if let (syn::Type::Reference(_), syn::Expr::Reference(reference)) = (&*typed.ty, init) {
            init = &reference.expr;
        }
        let syn::Expr::Call(call) = init else {
            return None;
        };
        let syn::Expr::Path(func) = &*call.func else {
            return None;
        };
        let is_default =
            func.qself.is_none() && path_ends_with(&func.path, &["Default", "default"]);
        (is_default && super::ast::context_type(&typed.ty).is_some()).then_some(&func.path)
    }
}

/// The span of the last segment, the name of what is called (`background`, `sleep`).
fn last_span(path: &syn::Path) -> Span {
    path.segments
        .last()
        .map_or_else(|| path.span(), |segment| segment.ident.span())
}

/// A path expression as the user wrote it, without spaces: `<Context as Default>::default`.
fn written(expr: &syn::ExprPath) -> String {
    let compact = |tokens: &dyn ToTokens| tokens.to_token_stream().to_string().replace(' ', "");
    let Some(qself) = &expr.qself else {
        return compact(&expr.path);
    };
    let lead = if expr.path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    let segments: Vec<String> = expr.path.segments.iter().map(|s| compact(s)).collect();
    let (as_trait, rest) = segments.split_at(qself.position.min(segments.len()));
    let ty = compact(&qself.ty);
    match as_trait {
        [] => format!("<{ty}>::{}", rest.join("::")),
        _ => format!(
            "<{ty} as {lead}{}>::{}",
            as_trait.join("::"),
            rest.join("::")
        ),
    }
}

impl<'ast> Visit<'ast> for BodyLints<'_> {
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(func) = &*call.func {
            if self.detached
                && let Some(written) = Self::detaching_path(func)
            {
                self.detached(&format!("{written}()"), last_span(&func.path));
                return call.args.iter().for_each(|arg| self.visit_expr(arg));
            }
            if let Some(spawn) = self.spawn_path(func) {
                let args: Vec<&syn::Expr> = call.args.iter().collect();
                if !super::spawns::carries_context(spawn, &args) {
                    self.spawn_without_context(
                        &format!("{}(..)", written(func)),
                        spawn,
                        last_span(&func.path),
                    );
                }
                return args.into_iter().for_each(|arg| self.visit_expr(arg));
            }
            if self.blocking && !self.in_closure && Self::is_thread_sleep(&func.path) {
                self.blocking(
                    &format!("{}(..)", written(func)),
                    "Sleep without blocking: `tokio::time::sleep(..).await` (or your \
                     runtime's timer; the `.await` is raced against the context), or wait on a \
                     future raced against the context with `ctx.run(..).await`",
                    last_span(&func.path),
                );
                return call.args.iter().for_each(|arg| self.visit_expr(arg));
            }
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_expr_path(&mut self, expr: &'ast syn::ExprPath) {
        if self.detached
            && let Some(written) = Self::detaching_path(expr)
        {
            self.detached(&written, last_span(&expr.path));
        }
        if let Some(spawn) = self.spawn_path(expr) {
            self.spawn_without_context(&written(expr), spawn, last_span(&expr.path));
        }
        if self.blocking && !self.in_closure && Self::is_thread_sleep(&expr.path) {
            self.blocking(
                &written(expr),
                "Sleep without blocking: `tokio::time::sleep(..).await`",
                last_span(&expr.path),
            );
        }
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let method = call.method.to_string();
        if self.blocking
            && !self.in_closure
            && (method == "wait" || method == "wait_timeout")
            && self.is_context_receiver(&call.receiver)
        {
            let receiver = call.receiver.to_token_stream().to_string().replace(' ', "");
            self.blocking(
                &format!("{receiver}.{method}(..)"),
                &format!(
                    "Await the context instead: `{receiver}.done().await` (in a `select!` with a \
                     timer, for a timeout)"
                ),
                call.method.span(),
            );
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if self.detached
            && let Some(path) = Self::default_as_context(local)
        {
            self.detached("Default::default()` as a `Context", last_span(path));
        }
        visit::visit_local(self, local);
    }

    // Closures: detaching is checked (their work is this function's), blocking is not (they
    // may run on a blocking thread).
    fn visit_expr_closure(&mut self, closure: &'ast syn::ExprClosure) {
        let outer = std::mem::replace(&mut self.in_closure, true);
        visit::visit_expr_closure(self, closure);
        self.in_closure = outer;
    }

    // Async blocks are checked for both: they run as futures, on the executor.
    fn visit_expr_async(&mut self, block: &'ast syn::ExprAsync) {
        let outer = std::mem::replace(&mut self.in_closure, false);
        visit::visit_expr_async(self, block);
        self.in_closure = outer;
    }

    // Nested items are other functions: not checked.
    fn visit_item(&mut self, _: &'ast syn::Item) {}

    // Macro arguments that are comma-separated expressions are checked as such; other macro
    // bodies are not Rust expressions yet.
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let parser = Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(args) = mac.parse_body_with(parser) {
            args.iter().for_each(|arg| self.visit_expr(arg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(ctx: Option<&str>, blocking: bool, body: &str) -> Vec<String> {
        let function = syn::Ident::new("f", Span::call_site());
        let ctx = ctx.map(|ctx| syn::Ident::new(ctx, Span::call_site()));
        let block: syn::Block = syn::parse_str(body).unwrap();
        BodyLints::new(&function, ctx.as_ref(), true, blocking)
            .check(&block)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn first_words(errors: &[String]) -> Vec<&str> {
        errors
            .iter()
            .map(|e| e.split(" inside ").next().unwrap_or(""))
            .collect()
    }

    #[test]
    fn detaching_in_every_spelling() {
        let errors = lint(
            Some("ctx"),
            false,
            "{ Context::background(); ctx_core::Context::todo(); ::ctx_core::Context::default(); \
             <Context>::default(); <Context as Default>::default(); \
             let c: Context = Default::default(); let d: &Context = &std::default::Default::default(); \
             x.unwrap_or_else(Context::background); \
             let f = || Context::todo(); let a = async { Context::todo() }; \
             println!(\"{}\", Context::background()); }",
        );
        assert_eq!(
            first_words(&errors),
            [
                "`Context::background()`",
                "`ctx_core::Context::todo()`",
                "`::ctx_core::Context::default()`",
                "`<Context>::default()`",
                "`<Context as Default>::default()`",
                "`Default::default()` as a `Context`",
                "`Default::default()` as a `Context`",
                "`Context::background`",
                "`Context::todo()`",
                "`Context::todo()`",
                "`Context::background()`",
            ]
        );
        assert!(errors[0].contains("Pass on `ctx`"), "{}", errors[0]);
        assert!(
            errors[0].contains("`ctx.without_cancel()`"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("allow_detached"), "{}", errors[0]);
    }

    #[test]
    fn what_is_not_detaching() {
        let errors = lint(
            None,
            false,
            "{ Context::current(); ctx.with_cancel(); let n: u32 = Default::default(); \
             Other::background(); fn nested() { Context::background(); } \
             tokio::select! { _ = Context::background().done() => {} } }",
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn blocking_in_async_bodies() {
        let errors = lint(
            Some("ctx"),
            true,
            "{ std::thread::sleep(d); thread::sleep(d); ::std::thread::sleep(d); ctx.wait(); \
             Context::current().wait_timeout(d); async { thread::sleep(d) }; \
             spawn_blocking(move || thread::sleep(d)); sleep(d); other.wait(); }",
        );
        assert_eq!(
            first_words(&errors),
            [
                "`std::thread::sleep(..)` blocks the executor thread",
                "`thread::sleep(..)` blocks the executor thread",
                "`::std::thread::sleep(..)` blocks the executor thread",
                "`ctx.wait(..)` blocks the executor thread",
                "`Context::current().wait_timeout(..)` blocks the executor thread",
                "`thread::sleep(..)` blocks the executor thread",
            ]
        );
        assert!(
            errors[0].contains("tokio::time::sleep(..).await"),
            "{}",
            errors[0]
        );
        assert!(errors[3].contains("`ctx.done().await`"), "{}", errors[3]);
    }

    #[test]
    fn spawning_without_the_context() {
        let errors = lint(
            Some("ctx"),
            false,
            "{ tokio::spawn(async {}); ::tokio::task::spawn_blocking(|| 1); \
             task::spawn(f); futures.map(tokio::spawn); \
             let c = || task::spawn_blocking(g); \
             { use tokio::task::spawn_blocking; spawn_blocking(h); } \
             ctx_core::spawn(async {}); ctx_core::spawn_blocking(|| 1); spawn(f); \
             tokio::spawn(ctx.scope(f)); tokio::task::spawn_blocking(move || ctx.enter(g)); \
             fn nested() { tokio::spawn(async {}); } }",
        );
        assert_eq!(
            first_words(&errors),
            [
                "`tokio::spawn(..)`",
                "`::tokio::task::spawn_blocking(..)`",
                "`task::spawn(..)`",
                "`tokio::spawn`",
                "`task::spawn_blocking(..)`",
                "`spawn_blocking(..)`",
            ]
        );
        assert!(
            errors[0].contains("`ctx_core::spawn(..)` instead"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].contains("`ctx_core::spawn_blocking(..)` instead"),
            "{}",
            errors[1]
        );
        assert!(errors[0].contains("allow_detached"), "{}", errors[0]);
    }

    #[test]
    fn sync_bodies_may_block() {
        assert_eq!(
            lint(Some("ctx"), false, "{ thread::sleep(d); ctx.wait(); }"),
            Vec::<String>::new()
        );
    }
}
