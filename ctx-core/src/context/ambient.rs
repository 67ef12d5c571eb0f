//! The ambient context: [`Context::current`], set by [`Context::enter`] for a closure and by
//! [`Context::scope`] for every poll of a future.
//!
//! It is a thread-local slot holding a *borrowed* context: a pointer to the `Context` that
//! the running `enter` frame or `Scoped` poll owns, swapped in on entry and swapped back by
//! a guard on exit, so a panic restores the outer one too. Entering therefore costs two
//! thread-local writes and no reference count (a clone per poll would be two atomic
//! operations on a context every task of a group shares); `current()` clones. Because
//! `Scoped` swaps on every poll (not once per task), it works on any executor and follows a
//! future that migrates between threads; between polls the slot holds whatever it held
//! before.
//!
//! Invariant: the slot is null (background) or points at a `Context` that outlives the
//! frame that put it there: an `enter` call's argument, or a `Scoped` future's own context
//! while it is pinned and being polled. Every frame restores the previous pointer when it
//! ends (its guard's `Drop`), so the slot never outlives what it points at.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::task::{Context as TaskContext, Poll};

use crate::Context;

thread_local! {
    static CURRENT: Cell<*const Context> = const { Cell::new(ptr::null()) };
}

#[inline]
pub(in crate::context) fn current() -> Context {
    let current = CURRENT.try_with(Cell::get).unwrap_or(ptr::null());
    if current.is_null() {
        return Context::background();
    }
    // SAFETY: a non-null slot points at a context that outlives the frame that set it (the
    // module's invariant), and we are inside that frame.
    unsafe { &*current }.clone()
}

/// Puts the previous pointer back when dropped (on return and on unwind).
struct Restore(Option<*const Context>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(previous) = self.0 {
            let _ = CURRENT.try_with(|current| current.set(previous));
        }
    }
}

/// Makes `ctx` current until the returned guard drops; the caller keeps `ctx` alive (and
/// in place) until then.
fn swap_in(ctx: &Context) -> Restore {
    Restore(CURRENT.try_with(|current| current.replace(ctx)).ok())
}

pub(in crate::context) fn enter<R>(ctx: &Context, f: impl FnOnce() -> R) -> R {
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
        // `ctx` is ours and stays put for this poll (we are pinned and borrowed).
        let _restore = swap_in(this.ctx);
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
