//! Waiting for a context to end: the [`Done`] and [`Run`] futures, and blocking waits.
//!
//! A waiter registers its waker in the slab of the context's core the first time it would
//! return `Pending`, and removes it when dropped, so creating and dropping `Done` futures in
//! a loop (as `select!` does) leaves nothing behind. Registration and the done check happen
//! under the core's lock, which is also where cancel wakes everything: no wake-up is lost.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::error::Error;
use super::tree::Core;
use crate::Context;

/// A waker registration on a context's core (none until the first pending poll).
struct Waiter<C: AsRef<Context>> {
    ctx: C,
    key: Option<usize>,
}

impl<C: AsRef<Context>> Waiter<C> {
    fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let Some(core) = self.ctx.as_ref().core() else {
            return Poll::Pending; // never ends: nothing to register
        };
        // A deadline that passed ends the context here if the driver has not yet.
        if let Some(err) = core.err_or_expire() {
            return Poll::Ready(err);
        }
        match core.register_waker(&mut self.key, cx.waker()) {
            Some(err) => Poll::Ready(err),
            None => Poll::Pending,
        }
    }
}

impl<C: AsRef<Context>> Drop for Waiter<C> {
    fn drop(&mut self) {
        if let (Some(key), Some(core)) = (self.key, self.ctx.as_ref().core()) {
            core.deregister_waker(key);
        }
    }
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

/// Resolves to the context's [`Error`] when it ends; returned by [`Context::done`].
///
/// `'static`, `Send`, `Unpin`: usable in `select!` and storable. A context that can never
/// end (background, `without_cancel`) gives a `Done` that stays pending.
///
/// # Cancellation safety
///
/// Dropping a `Done` before it resolves has no effect other than removing its waker.
#[must_use = "futures do nothing unless polled"]
pub struct Done {
    /// The error, if the context was already done when `done()` was called: then the
    /// `Done` holds no reference to it.
    ready: Option<Error>,
    /// While `ready` holds an error, the background context and no registration: nothing
    /// to drop (see `Drop`).
    waiter: std::mem::ManuallyDrop<Waiter<Context>>,
}

/// perf (bench instructions, CheckCanceled/Done): inline, only the test of `ready`: a
/// `Done` that was ready when made holds nothing to release, so its drop is one test and
/// what wraps it (`now_or_never`) stays small. Whether the compiler then inlines the wrapper
/// is its choice.
impl Drop for Done {
    #[inline]
    fn drop(&mut self) {
        if self.ready.is_none() {
            self.drop_waiter();
        }
    }
}

impl Future for Done {
    type Output = Error;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        match self.ready {
            Some(err) => Poll::Ready(err),
            None => self.poll_waiter(cx),
        }
    }
}

impl Done {
    /// perf (bench instructions, CheckCanceled/Done): out of line, so that an inlined `poll`
    /// is a load and a branch, small enough that what wraps it (`now_or_never`, a `select!`)
    /// is inlined in turn and builds the `Done` in place rather than moving it through
    /// memory.
    #[inline(never)]
    fn poll_waiter(&mut self, cx: &mut TaskContext<'_>) -> Poll<Error> {
        self.waiter.poll(cx)
    }

    /// Drops the waiter: its registration, and its reference to the context.
    #[inline(never)]
    fn drop_waiter(&mut self) {
        // SAFETY: called once, from `drop`; the waiter is never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.waiter) }
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Done").field(&self.waiter.ctx).finish()
    }
}

pin_project_lite::pin_project! {
    /// Runs a future until it completes or the context ends, whichever comes first;
    /// returned by [`Context::run`].
    ///
    /// # Cancellation safety
    ///
    /// When the context ends first, the inner future is dropped at once (on that poll).
    ///
    /// The one future for this job: the HTTP, gRPC and database integrations race their
    /// calls through it too ([`Context::into_run`] for one that owns its context).
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<'a, F> {
        #[pin]
        future: Option<F>,
        waiter: Waiter<RunContext<'a>>,
        at: RunPoint,
    }
}

/// Where a [`Run`] was made, until its first poll: a cancellation point (`testing`);
/// nothing without feature `test-util`.
#[cfg(feature = "test-util")]
type RunPoint = Option<&'static std::panic::Location<'static>>;
#[cfg(not(feature = "test-util"))]
type RunPoint = ();

#[cfg(feature = "test-util")]
#[track_caller]
#[inline(always)]
fn run_point() -> RunPoint {
    Some(std::panic::Location::caller())
}

#[cfg(not(feature = "test-util"))]
#[inline(always)]
fn run_point() -> RunPoint {}

/// The context a [`Run`] races against: borrowed ([`Context::run`]) or owned
/// ([`Context::into_run`]).
enum RunContext<'a> {
    Borrowed(&'a Context),
    Owned(Context),
}

impl AsRef<Context> for RunContext<'_> {
    fn as_ref(&self) -> &Context {
        match self {
            RunContext::Borrowed(ctx) => ctx,
            RunContext::Owned(ctx) => ctx,
        }
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        #[cfg(feature = "test-util")] // the first poll is the point; later ones look quietly
        if let (Some(at), Some(core)) = (this.at.take(), this.waiter.ctx.as_ref().core())
            && let Some(err) = super::tree::explored::check(core, this.waiter.ctx.as_ref(), at)
        {
            this.future.set(None);
            return Poll::Ready(Err(err));
        }
        if let Some(err) = this.waiter.ctx.as_ref().core().and_then(Core::err) {
            this.future.set(None);
            return Poll::Ready(Err(err));
        }
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("`Run` polled after completion");
        };
        if let Poll::Ready(output) = future.poll(cx) {
            this.future.set(None);
            return Poll::Ready(Ok(output));
        }
        match this.waiter.poll(cx) {
            Poll::Ready(err) => {
                this.future.set(None);
                Poll::Ready(Err(err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for Run<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("ctx", self.waiter.ctx.as_ref())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A future that resolves to this context's [`Error`] once it is done: Go's
    /// `<-ctx.Done()`. Cheap to create (no lock, no allocation until first pending poll).
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel().into_parts();
    /// std::thread::spawn(move || cancel.cancel());
    /// assert_eq!(futures::executor::block_on(ctx.done()), Error::Cancelled);
    /// ```
    // perf (bench instructions, CheckCanceled/Done): inline, so the `Done` is built in the
    // caller's frame rather than returned through memory.
    #[inline]
    pub fn done(&self) -> Done {
        match self.core().and_then(Core::err) {
            Some(err) => Done {
                ready: Some(err),
                waiter: std::mem::ManuallyDrop::new(Waiter {
                    ctx: Context::background(),
                    key: None,
                }),
            },
            None => Done {
                ready: None,
                waiter: std::mem::ManuallyDrop::new(Waiter {
                    ctx: self.clone(),
                    key: None,
                }),
            },
        }
    }

    /// Runs `future` until it completes (`Ok(output)`) or this context ends (`Err(error)`,
    /// and the future is dropped on the spot): cancellation that does not depend on the
    /// callee checking anything. If the context is already done, `future` is never polled.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::{Context, Error};
    ///
    /// # futures::executor::block_on(async {
    /// let scope = Context::background().with_timeout(Duration::from_millis(10));
    /// let forever = std::future::pending::<()>();
    /// assert_eq!(scope.run(forever).await, Err(Error::DeadlineExceeded));
    /// assert_eq!(scope.run(async { 7 }).await, Err(Error::DeadlineExceeded));
    /// assert_eq!(Context::background().run(async { 7 }).await, Ok(7));
    /// # });
    /// ```
    #[cfg_attr(feature = "test-util", track_caller)] // a cancellation point (`testing`)
    pub fn run<F: IntoFuture>(&self, future: F) -> Run<'_, F::IntoFuture> {
        Run {
            future: Some(future.into_future()),
            waiter: Waiter {
                ctx: RunContext::Borrowed(self),
                key: None,
            },
            at: run_point(),
        }
    }

    /// Like [`run`](Context::run), owning the context: a `Run<'static, _>` to store in a
    /// struct or return from a `tower` service (a clone of a `Context` is a reference-count
    /// increment).
    ///
    /// ```
    /// use ctx_core::{Context, Error, Run};
    ///
    /// fn call_backend(ctx: &Context) -> Run<'static, std::future::Ready<u32>> {
    ///     ctx.clone().into_run(std::future::ready(7))
    /// }
    ///
    /// # futures::executor::block_on(async {
    /// let scope = Context::background().with_cancel();
    /// assert_eq!(call_backend(&scope).await, Ok(7));
    /// let call = call_backend(&scope);
    /// scope.cancel();
    /// assert_eq!(call.await, Err(Error::Cancelled));
    /// # });
    /// ```
    #[cfg_attr(feature = "test-util", track_caller)] // a cancellation point (`testing`)
    pub fn into_run<F: IntoFuture>(self, future: F) -> Run<'static, F::IntoFuture> {
        Run {
            future: Some(future.into_future()),
            waiter: Waiter {
                ctx: RunContext::Owned(self),
                key: None,
            },
            at: run_point(),
        }
    }

    /// Blocks the thread until this context is done and returns why. Blocks forever on a
    /// context that can never end, as Go's `<-ctx.Done()` does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::{Context, Error};
    ///
    /// let scope = Context::background().with_timeout(Duration::from_millis(5));
    /// assert_eq!(scope.wait(), Error::DeadlineExceeded);
    /// ```
    pub fn wait(&self) -> Error {
        loop {
            if let Some(err) = self.block_until(None) {
                return err;
            }
        }
    }

    /// Blocks until this context is done or `timeout` passes; `None` on timeout. (With
    /// feature `test-util`, on tokio's paused clock: see `ctx_core::testing`.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::Context;
    ///
    /// let scope = Context::background().with_cancel();
    /// assert_eq!(scope.wait_timeout(Duration::from_millis(1)), None);
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Error> {
        #[cfg(feature = "test-util")] // tokio's clock, if paused
        let until = super::tree::clock::now().checked_add(timeout);
        #[cfg(not(feature = "test-util"))]
        let until = Instant::now().checked_add(timeout);
        match until {
            Some(until) => self.block_until(Some(until)),
            None => Some(self.wait()),
        }
    }

    fn block_until(&self, until: Option<Instant>) -> Option<Error> {
        if let Some(err) = self.core().and_then(Core::err) {
            return Some(err);
        }
        #[cfg(feature = "test-util")] // a paused clock jumps, as its idle runtime would
        if let Some(waited) = super::tree::clock::wait(self, until) {
            return waited;
        }
        let waker = Waker::from(Arc::new(ThreadWaker(crate::sync::thread::current())));
        let mut cx = TaskContext::from_waker(&waker);
        let mut waiter = Waiter {
            ctx: self,
            key: None,
        };
        loop {
            if let Poll::Ready(err) = waiter.poll(&mut cx) {
                return Some(err);
            }
            match until {
                None => crate::sync::thread::park(),
                Some(until) => {
                    let now = Instant::now();
                    if now >= until {
                        return None;
                    }
                    park_timeout(until - now);
                }
            }
        }
    }
}

#[cfg(not(ctx_loom))]
fn park_timeout(timeout: Duration) {
    std::thread::park_timeout(timeout);
}

#[cfg(ctx_loom)]
fn park_timeout(_: Duration) {
    loom::thread::yield_now();
}

/// Wakes a thread parked in [`Context::wait`].
struct ThreadWaker(crate::sync::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}
