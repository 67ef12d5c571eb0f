//! The cancel side of a derived context: [`CancelScope`] (RAII, derefs to the context) and
//! [`CancelHandle`] (the Go-style split-off canceller).

use std::fmt;
use std::ops::Deref;
use std::panic::Location;

use super::error::{Cause, Error};
use crate::Context;

/// A derived context together with the right to cancel it; returned by
/// [`Context::with_cancel`], [`with_deadline`](Context::with_deadline) and
/// [`with_timeout`](Context::with_timeout).
///
/// Derefs to its [`Context`]. Dropping it cancels the context with [`Error::Cancelled`],
/// so "forgot to call cancel" (Go's `lostcancel` vet check) cannot happen, and an early
/// return, a `?` or a panic cancels too. Call [`into_parts`](CancelScope::into_parts) to
/// hand the canceller to someone else.
///
/// # Memory
///
/// When the last reference to a scope's context goes (usually the scope itself, dropped
/// once no clone, child or waiter is left: the end of a request's scope), the context is
/// freed at once, and the thread that dropped it keeps the emptied allocation for its next
/// `with_cancel`, `with_deadline`, `with_timeout` or `without_cancel`, which then allocates
/// nothing. A thread keeps at most 1,024 of them, and all threads together at most 16,384
/// (about 2 MiB, whatever the number of threads); past that, a freed context's memory goes
/// back to the allocator. A thread's are freed when it exits. The deadline driver's tables
/// shrink back once most of their deadlines are gone, so a burst of contexts, once over,
/// leaves a few MiB at most.
///
/// # Panics
///
/// Cancelling wakes the tasks waiting on the context and its descendants. Should a waker
/// panic, the cancel completes first (every descendant done, every other waiter woken, every
/// after-func dispatched), and then the first such panic resumes in the thread that
/// cancelled, unless that thread is already unwinding (a scope dropped during a panic),
/// where it is left to the panic hook's report. The same holds for [`CancelHandle`].
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
///
/// let ctx = {
///     let scope = Context::background().with_cancel();
///     scope.context().clone()
/// }; // the scope dropped here, so its context is done
/// assert!(ctx.is_cancelled());
/// ```
#[must_use = "dropping a CancelScope cancels its context at once"]
pub struct CancelScope {
    handle: CancelHandle,
}

impl CancelScope {
    #[inline]
    pub(in crate::context) fn new(ctx: Context) -> CancelScope {
        CancelScope {
            handle: CancelHandle { ctx },
        }
    }

    /// The derived context.
    #[inline]
    pub fn context(&self) -> &Context {
        &self.handle.ctx
    }

    /// Cancels the context (and every descendant, before returning) with
    /// [`Error::Cancelled`]. A no-op if it is already done: the first cancel wins.
    #[track_caller]
    pub fn cancel(self) {
        self.handle.cancel();
    }

    /// Cancels like [`cancel`](CancelScope::cancel), recording `cause` for
    /// [`Context::cause`]. Go's `WithCancelCause`.
    #[track_caller]
    pub fn cancel_with(self, cause: impl Into<Cause>) {
        self.handle.cancel_with(cause);
    }

    /// [`cancel_with`](CancelScope::cancel_with), reported as ended at `at` rather than at
    /// the caller: for a library cancelling on its user's behalf (see
    /// [`Context::with_cancel_at`]).
    pub fn cancel_with_at(self, cause: impl Into<Cause>, at: &'static Location<'static>) {
        self.handle.cancel_with_at(cause, at);
    }

    /// Splits into the context and a [`CancelHandle`] that cancels it (on `cancel` or
    /// drop), for when the context and its canceller go different ways, as Go's
    /// `ctx, cancel := context.WithCancel(parent)`.
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel().into_parts();
    /// let worker = std::thread::spawn(move || ctx.wait());
    /// cancel.cancel();
    /// assert_eq!(worker.join().unwrap(), ctx_core::Error::Cancelled);
    /// ```
    #[inline]
    pub fn into_parts(self) -> (Context, CancelHandle) {
        (self.handle.ctx.clone(), self.handle)
    }
}

impl Deref for CancelScope {
    type Target = Context;

    #[inline]
    fn deref(&self) -> &Context {
        &self.handle.ctx
    }
}

impl AsRef<Context> for CancelScope {
    fn as_ref(&self) -> &Context {
        &self.handle.ctx
    }
}

impl fmt::Debug for CancelScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelScope")
            .field(&self.handle.ctx)
            .finish()
    }
}

/// Cancels one derived context; not `Clone`, `Send + Sync`. Dropping it cancels.
///
/// Obtained from [`CancelScope::into_parts`].
///
/// Its only field is the context (16 bytes, returned in registers): an explicit cancel
/// takes the context out rather than setting a flag for `Drop`.
pub struct CancelHandle {
    ctx: Context,
}

impl CancelHandle {
    /// Cancels the context with [`Error::Cancelled`]; the first cancel wins. The cause's
    /// [`location`](Cause::location) is this call.
    #[track_caller]
    pub fn cancel(self) {
        let mut ctx = self.into_context();
        // Sole reference: no one could observe it (see `Drop`).
        if ctx.is_sole_reference() {
            ctx.release();
        } else {
            ctx.cancel(Error::Cancelled, None, Location::caller());
        }
    }

    /// Cancels the context with [`Error::Cancelled`], recording `cause` (and this call as
    /// its [`location`](Cause::location)).
    #[track_caller]
    pub fn cancel_with(self, cause: impl Into<Cause>) {
        self.cancel_with_at(cause, Location::caller());
    }

    /// [`cancel_with`](CancelHandle::cancel_with), reported as ended at `at` rather than at
    /// the caller (see [`Context::with_cancel_at`]).
    pub fn cancel_with_at(self, cause: impl Into<Cause>, at: &'static Location<'static>) {
        let cause = cause.into(); // user code (`Into`) runs before the handle is taken apart
        self.into_context()
            .cancel(Error::Cancelled, Some(cause), at);
    }

    /// The context, without running `Drop` (the caller cancels it itself).
    fn into_context(self) -> Context {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again and never dropped, so its one field is moved
        // out exactly once.
        unsafe { std::ptr::read(&this.ctx) }
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        // Nothing else references the context (no clone, child, value node, waiter or
        // after-func; each holds a reference), so no one could observe its cancel: the node
        // is dropped now (its `Drop` unlinks it, releases its timer and dispatches its
        // after-funcs), and this thread keeps its memory for its next derivation.
        if self.ctx.is_sole_reference() {
            return self.ctx.release();
        }
        // `Drop` cannot track its caller: the cause's location is where the scope was made.
        if let Some(created) = self.ctx.created() {
            self.ctx.cancel(Error::Cancelled, None, created);
        }
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelHandle").field(&self.ctx).finish()
    }
}
