//! The ambient context: [`Context::current`], set by [`Context::enter`] for a closure and by
//! [`Context::scope`] for every poll of a future.
//!
//! It is a thread-local slot, swapped in on entry and swapped back by a guard on exit, so a
//! panic restores the outer context too. Because `Scoped` swaps on every poll (not once per
//! task), it works on any executor and follows a future that migrates between threads;
//! between polls the thread's slot holds whatever it held before.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::Context;

thread_local! {
    static CURRENT: RefCell<Context> = const { RefCell::new(Context::background()) };
}

pub(in crate::context) fn current() -> Context {
    CURRENT
        .try_with(|current| current.borrow().clone())
        .unwrap_or_default()
}

/// Puts the previous context back when dropped (on return and on unwind).
struct Restore(Option<Context>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            // The context swapped out is dropped after the borrow ends: its drop may run
            // user code that reads `Context::current()`.
            let _swapped_out = CURRENT.try_with(|current| current.replace(previous));
        }
    }
}

fn swap_in(ctx: Context) -> Restore {
    Restore(CURRENT.try_with(|current| current.replace(ctx)).ok())
}

pub(in crate::context) fn enter<R>(ctx: Context, f: impl FnOnce() -> R) -> R {
    let _restore = swap_in(ctx);
    f()
}

pin_project_lite::pin_project! {
    /// A future that runs with a context as [`Context::current`] on every poll; returned by
    /// [`Context::scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        ctx: Context,
        #[pin]
        future: F,
    }
}

impl<F> Scoped<F> {
    pub(in crate::context) fn new(ctx: Context, future: F) -> Scoped<F> {
        Scoped { ctx, future }
    }

    /// The context this future runs under.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = swap_in(this.ctx.clone());
        this.future.poll(cx)
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}
