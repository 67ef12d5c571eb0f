//! The public handle: [`Context`], a cheap, cloneable reference to a node of the tree.

use std::fmt;
use std::panic::Location;
use std::time::{Duration, Instant};

use super::error::{Cause, Error};
use crate::context::key::{ContextKey, summary_bits};
use crate::context::scope::CancelScope;
use crate::context::tree::{Core, Link, NodeRef, OwnDeadline, Root};

/// A context: a deadline, a cancellation signal and request-scoped values, carried across
/// API boundaries and between threads and tasks. Go's `context.Context`.
///
/// Cloning is a reference-count increment. Derive children with [`with_cancel`],
/// [`with_timeout`], [`with_deadline`], [`with_value`] and [`without_cancel`]; a child ends
/// when its parent does, never the other way round. Check it with [`is_cancelled`] or
/// [`checkpoint`] (one atomic load), wait for it with [`done`], [`wait`] or [`run`].
///
/// [`with_cancel`]: Context::with_cancel
/// [`with_timeout`]: Context::with_timeout
/// [`with_deadline`]: Context::with_deadline
/// [`with_value`]: Context::with_value
/// [`without_cancel`]: Context::without_cancel
/// [`is_cancelled`]: Context::is_cancelled
/// [`checkpoint`]: Context::checkpoint
/// [`done`]: Context::done
/// [`wait`]: Context::wait
/// [`run`]: Context::run
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, Error};
///
/// fn crunch(ctx: &Context, items: &[u64]) -> Result<u64, Error> {
///     let mut sum = 0;
///     for item in items {
///         ctx.checkpoint()?; // stop as soon as the caller gives up
///         sum += item;
///     }
///     Ok(sum)
/// }
///
/// let request = Context::background().with_timeout(Duration::from_secs(2));
/// assert_eq!(crunch(&request, &[1, 2, 3]), Ok(6));
///
/// let gone = Context::background().with_cancel();
/// let ctx = gone.context().clone();
/// gone.cancel();
/// assert_eq!(crunch(&ctx, &[1, 2, 3]), Err(Error::Cancelled));
/// ```
#[derive(Clone, Default)]
pub struct Context {
    link: Link,
}

impl Context {
    /// The root of every context tree: never cancelled, no deadline, no values. Costs
    /// nothing (no allocation). Go's `context.Background()`.
    ///
    /// ```
    /// let ctx = ctx_core::Context::background();
    /// assert!(!ctx.is_cancelled());
    /// assert_eq!(ctx.deadline(), None);
    /// assert_eq!(ctx.to_string(), "context.Background");
    /// ```
    pub const fn background() -> Context {
        Context {
            link: Link::Root(Root::Background),
        }
    }

    /// Like [`background`](Context::background), but says "the right context is not
    /// plumbed here yet"; searchable, and shown as `context.TODO`. Go's `context.TODO()`.
    #[cfg_attr(
        ctx_deny_todo,
        deprecated(
            note = "a context is not plumbed here yet (`--cfg ctx_deny_todo` reports each `Context::todo()`): take the caller's `&Context` as a parameter and pass it on, or use `Context::current()` where the caller made it current"
        )
    )]
    pub const fn todo() -> Context {
        Context {
            link: Link::Root(Root::Todo),
        }
    }

    /// Whether this handle is the only reference to its node (so no one can observe it).
    #[inline]
    pub(in crate::context) fn is_sole_reference(&self) -> bool {
        self.link.is_sole_reference()
    }

    /// Drops this context's reference, the last one to its node (the caller checked), now,
    /// leaving the background context: a plain cancel node keeps its memory for reuse
    /// (`tree/recycle.rs`). Out of line: every `Context`'s drop tests for it, few take it.
    ///
    /// perf (bench instructions, CancelTree/depth=1/Root=OpenCanceler): a `CancelHandle`
    /// that found itself the sole reference calls it directly, so that `Context`'s drop
    /// does not test the count again.
    #[inline(never)]
    pub(in crate::context) fn release(&mut self) {
        if let Link::Node(node) = std::mem::take(&mut self.link) {
            super::tree::recycle::release(node);
        }
    }

    /// The core that decides when this context is done; `None` if it never will be.
    #[inline]
    pub(in crate::context) fn core(&self) -> Option<&Core> {
        self.link.core()
    }

    /// The node this context is (for the explorer's walk up the chain).
    #[cfg(feature = "test-util")]
    pub(in crate::context) fn link(&self) -> &Link {
        &self.link
    }

    /// Cancels this context and its subtree with `err`, ended `at` there; returns once all
    /// of it is done.
    pub(in crate::context) fn cancel(
        &self,
        err: Error,
        cause: Option<Cause>,
        at: &'static Location<'static>,
    ) {
        self.link.cancel(err, cause, at);
    }

    /// Where this context was derived, if it is a cancellable one.
    pub(in crate::context) fn created(&self) -> Option<&'static Location<'static>> {
        self.link.created()
    }

    /// A child that ends when [`CancelScope`] is cancelled or dropped, or when `self` ends.
    /// Go's `WithCancel`.
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    ///
    /// let parent = Context::background().with_cancel();
    /// let child = parent.with_cancel();
    /// parent.cancel(); // cancels every descendant before it returns
    /// assert_eq!(child.err(), Some(Error::Cancelled));
    /// ```
    #[track_caller]
    #[inline] // the scope is built in the caller's frame (see `Link::derive_child`)
    pub fn with_cancel(&self) -> CancelScope {
        CancelScope::new(Context::of(self.link.derive_child(Location::caller())))
    }

    /// A child that ends at `deadline` (with [`Error::DeadlineExceeded`]), when cancelled,
    /// or when `self` ends. If `self` already has an earlier deadline, that one stands.
    /// Go's `WithDeadline`. Needs no async runtime: a driver thread fires deadlines, and a
    /// waiter ([`done`](Context::done), [`run`](Context::run), [`wait`](Context::wait)) that
    /// looks after the deadline ends the context itself, should that thread be late.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ctx_core::{Context, Error};
    ///
    /// let scope = Context::background().with_deadline(Instant::now() + Duration::from_millis(10));
    /// assert_eq!(scope.wait(), Error::DeadlineExceeded);
    /// ```
    #[track_caller]
    #[inline]
    pub fn with_deadline(&self, deadline: Instant) -> CancelScope {
        self.derive_cancel(Some(OwnDeadline::at(deadline)), None)
    }

    /// [`with_deadline`](Context::with_deadline) at now + `timeout`. Go's `WithTimeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::Context;
    ///
    /// let scope = Context::background().with_timeout(Duration::from_secs(5));
    /// assert!(scope.deadline().is_some());
    /// assert!(!scope.is_cancelled());
    /// ```
    #[track_caller]
    #[inline]
    pub fn with_timeout(&self, timeout: Duration) -> CancelScope {
        self.derive_cancel(Some(OwnDeadline::after(timeout)), None)
    }

    /// Like [`with_deadline`](Context::with_deadline), and when the deadline fires,
    /// [`cause`](Context::cause) reports `cause`. Go's `WithDeadlineCause`.
    #[track_caller]
    #[inline]
    pub fn with_deadline_cause(&self, deadline: Instant, cause: impl Into<Cause>) -> CancelScope {
        self.derive_cancel(Some(OwnDeadline::at(deadline)), Some(cause.into()))
    }

    /// Like [`with_timeout`](Context::with_timeout), and when the deadline fires,
    /// [`cause`](Context::cause) reports `cause`. Go's `WithTimeoutCause`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::{Context, Error};
    ///
    /// let scope = Context::background().with_timeout_cause(Duration::from_millis(5), "backend too slow");
    /// assert_eq!(scope.wait(), Error::DeadlineExceeded);
    /// assert_eq!(scope.cause().unwrap().to_string(), "backend too slow");
    /// ```
    #[track_caller]
    #[inline]
    pub fn with_timeout_cause(&self, timeout: Duration, cause: impl Into<Cause>) -> CancelScope {
        self.derive_cancel(Some(OwnDeadline::after(timeout)), Some(cause.into()))
    }

    /// [`with_cancel`](Context::with_cancel), created at `at` rather than at the caller:
    /// for a library that derives contexts on its user's behalf (a middleware, a signal
    /// listener), so that [`Cause::location`] names the user's line — the one that built the
    /// middleware, captured there with `#[track_caller]` and [`Location::caller`] — rather
    /// than a line of the library. ctx's own server layers and `signal` do this.
    ///
    /// ```
    /// use std::panic::Location;
    /// use ctx_core::Context;
    ///
    /// struct Middleware { root: Context, built_at: &'static Location<'static> }
    ///
    /// impl Middleware {
    ///     #[track_caller]
    ///     fn new(root: Context) -> Middleware {
    ///         Middleware { root, built_at: Location::caller() }
    ///     }
    ///     fn request(&self) -> ctx_core::CancelScope {
    ///         self.root.with_cancel_at(self.built_at)
    ///     }
    /// }
    ///
    /// let line = line!() + 1;
    /// let middleware = Middleware::new(Context::background());
    /// let request = middleware.request();
    /// let ctx = request.context().clone();
    /// drop(request); // a dropped scope's cause names where it was created
    /// assert_eq!(ctx.cause().unwrap().location().unwrap().line(), line);
    /// ```
    #[inline]
    pub fn with_cancel_at(&self, at: &'static Location<'static>) -> CancelScope {
        CancelScope::new(Context::of(self.link.derive_child(at)))
    }

    /// [`with_timeout`](Context::with_timeout), created at `at` (see
    /// [`with_cancel_at`](Context::with_cancel_at)): a fired deadline's cause names `at`.
    #[inline]
    pub fn with_timeout_at(
        &self,
        timeout: Duration,
        at: &'static Location<'static>,
    ) -> CancelScope {
        CancelScope::new(Context::of(self.link.derive_cancel(
            Some(OwnDeadline::after(timeout)),
            None,
            at,
        )))
    }

    /// `deadline` comes with the time it was computed against, so deriving reads the clock
    /// once.
    #[track_caller]
    #[inline]
    fn derive_cancel(&self, deadline: Option<OwnDeadline>, cause: Option<Cause>) -> CancelScope {
        CancelScope::new(Context::of(self.link.derive_cancel(
            deadline,
            cause,
            Location::caller(),
        )))
    }

    /// A derived context, built in the caller's frame (see `Link::derive_child`).
    #[inline]
    fn of(node: NodeRef) -> Context {
        Context {
            link: Link::Node(node),
        }
    }

    /// A child carrying `value`, found by [`value::<K>()`](Context::value) here and in
    /// every descendant, unless a descendant sets its own `K`. Go's `WithValue`.
    ///
    /// ```
    /// # #[cfg(feature = "macros")] fn main() {
    /// use ctx_core::{Context, ContextKey};
    ///
    /// #[derive(ContextKey)]
    /// struct User(&'static str);
    ///
    /// let outer = Context::background().with_value(User("ann"));
    /// let inner = outer.with_cancel().with_value(User("bob"));
    /// assert_eq!(outer.value::<User>().unwrap().0, "ann");
    /// assert_eq!(inner.value::<User>().unwrap().0, "bob"); // innermost first
    /// # }
    /// # #[cfg(not(feature = "macros"))] fn main() {}
    /// ```
    #[cfg_attr(feature = "debug-tree", track_caller)]
    pub fn with_value<K: ContextKey>(&self, value: K) -> Context {
        Context::of(self.link.derive_value(
            std::any::TypeId::of::<K>(),
            K::NAME,
            summary_bits::<K>(),
            value,
            Location::caller(),
        ))
    }

    /// A child with `self`'s values but none of its cancellation: never cancelled, no
    /// deadline. For work that must finish even when the request that started it is gone
    /// (an audit write, a cache fill). Go's `WithoutCancel`.
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// let request = Context::background().with_cancel();
    /// let detached = request.without_cancel();
    /// request.cancel();
    /// assert!(!detached.is_cancelled());
    /// ```
    #[cfg_attr(feature = "debug-tree", track_caller)]
    #[inline]
    pub fn without_cancel(&self) -> Context {
        Context::of(self.link.derive_without_cancel(Location::caller()))
    }

    /// The deadline after which this context ends, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.link.deadline()
    }

    /// Now, on the clock deadlines are on: [`Instant::now`], or, with feature `test-util`
    /// inside a tokio runtime whose clock is paused, tokio's clock (see `ctx_core::testing`).
    /// Subtract it from [`deadline`](Context::deadline) for the time left.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::Context;
    ///
    /// let request = Context::background().with_timeout(Duration::from_secs(5));
    /// let left = request.deadline().unwrap().saturating_duration_since(Context::now());
    /// assert!(left <= Duration::from_secs(5));
    /// ```
    pub fn now() -> Instant {
        #[cfg(feature = "test-util")]
        if let Some(paused) = super::tree::clock::paused_now() {
            return paused;
        }
        Instant::now()
    }

    /// Whether this context is done. The checkpoint hot path: one atomic load, no lock, no
    /// clock read (deadlines are fired by the driver, not checked here).
    #[inline]
    #[cfg_attr(feature = "test-util", track_caller)] // a cancellation point (`testing`)
    pub fn is_cancelled(&self) -> bool {
        #[cfg(feature = "test-util")]
        if let Some(core) = self.core() {
            return super::tree::explored::check(core, self, Location::caller()).is_some();
        }
        self.core().is_some_and(Core::is_done)
    }

    /// Why this context is done, or `None` while it is not. Go's `Err()`.
    #[inline]
    #[cfg_attr(feature = "test-util", track_caller)] // a cancellation point (`testing`)
    pub fn err(&self) -> Option<Error> {
        #[cfg(feature = "test-util")]
        if let Some(core) = self.core() {
            return super::tree::explored::check(core, self, Location::caller());
        }
        self.core().and_then(Core::err)
    }

    /// The cause given when this context (or the ancestor that ended it) was cancelled;
    /// the [`Error`] itself when none was given; `None` while not done. Go's `Cause`.
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    ///
    /// let parent = Context::background().with_cancel();
    /// let child = parent.with_cancel();
    /// parent.cancel_with("shutting down");
    /// assert_eq!(child.err(), Some(Error::Cancelled));
    /// assert_eq!(child.cause().unwrap().to_string(), "shutting down");
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        self.core().and_then(Core::cause)
    }

    /// `Err(error)` once this context is done, else `Ok(())`: put `ctx.checkpoint()?` in a
    /// loop to stop when the caller gives up. As cheap as [`is_cancelled`](Context::is_cancelled).
    #[inline]
    #[cfg_attr(feature = "test-util", track_caller)] // a cancellation point (`testing`)
    pub fn checkpoint(&self) -> Result<(), Error> {
        match self.err() {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }

    /// The innermost value of key type `K` in this context's chain. Go's `Value`.
    ///
    /// A miss usually costs one test of the key's summary bits, not a walk: each node
    /// summarizes the key types above it.
    pub fn value<K: ContextKey>(&self) -> Option<&K> {
        let bits = summary_bits::<K>();
        if self.link.keys() & bits != bits {
            return None;
        }
        self.link
            .value(std::any::TypeId::of::<K>())
            .and_then(|value| value.downcast_ref::<K>())
    }

    /// A context that ends when either `self` or `other` ends, with the error and cause of
    /// the first to end; its deadline is the earlier of theirs, and its values are looked up
    /// in `self`, then in `other`. Go declined this (golang/go#36503) and every project
    /// writes its own; here it costs one allocation, no thread and no task.
    ///
    /// The merged context is a child of `self` in the tree (a cancel of `self` reaches it
    /// before returning, like any child) and is registered with `other`, which ends it right
    /// after its own subtree, before its cancel returns. Dropping the returned
    /// [`CancelScope`] cancels the merge and unregisters it from both, so a long-lived
    /// `other` (a server's root, say) does not grow.
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    ///
    /// let request = Context::background().with_cancel(); // the client's request
    /// let server = Context::background().with_cancel();  // the server's lifetime
    /// let work = request.merge(&server);
    /// server.cancel_with("shutting down");
    /// assert_eq!(work.err(), Some(Error::Cancelled));
    /// assert_eq!(work.cause().unwrap().to_string(), "shutting down");
    /// assert!(!request.is_cancelled());
    /// ```
    #[track_caller]
    #[inline]
    pub fn merge(&self, other: &Context) -> CancelScope {
        CancelScope::new(Context::of(
            self.link.derive_merge(&other.link, Location::caller()),
        ))
    }

    /// Runs `f` once this context is done (at once if it already is), unless
    /// [`AfterFunc::stop`](crate::AfterFunc::stop) is called first. Go's `context.AfterFunc`.
    ///
    /// `f` runs on a pool of worker threads, never under a lock and never on the thread that
    /// cancels: it may block or be slow without delaying the canceller or any other
    /// after-func (the pool grows while every worker is busy, up to 64 threads; past that,
    /// after-funcs queue, and each runs once a worker returns). Dropping the returned
    /// [`AfterFunc`](crate::AfterFunc) does not stop `f`: it still runs when the context
    /// ends, also when its scope is dropped unobserved. A panic in `f` is caught on the
    /// worker (the panic hook reports it) and affects nothing else.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use ctx_core::Context;
    ///
    /// let scope = Context::background().with_cancel();
    /// let (tx, rx) = mpsc::channel();
    /// let _after = scope.after_func(move || tx.send("closed the connection").unwrap());
    /// scope.cancel();
    /// assert_eq!(rx.recv().unwrap(), "closed the connection");
    /// ```
    pub fn after_func(&self, f: impl FnOnce() + Send + 'static) -> crate::AfterFunc {
        crate::context::after::register(self, Box::new(f))
    }

    /// Runs `f` with `self` as [`Context::current`], restoring the previous current context
    /// when `f` returns or panics.
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// let scope = Context::background().with_cancel();
    /// scope.enter(|| assert_eq!(Context::current().to_string(), "context.Background.WithCancel"));
    /// assert_eq!(Context::current().to_string(), "context.Background");
    /// ```
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        crate::context::ambient::enter(self, f)
    }

    /// Wraps `future` so every poll of it sees `self` as [`Context::current`], on any
    /// executor. Nested scopes shadow outer ones for as long as they poll.
    ///
    /// ```
    /// # #[cfg(feature = "macros")] fn main() {
    /// use ctx_core::{Context, ContextKey};
    ///
    /// #[derive(ContextKey)]
    /// struct Tenant(u32);
    ///
    /// let ctx = Context::background().with_value(Tenant(42));
    /// let seen = futures::executor::block_on(ctx.scope(async {
    ///     Context::current().value::<Tenant>().map(|t| t.0)
    /// }));
    /// assert_eq!(seen, Some(42));
    /// # }
    /// # #[cfg(not(feature = "macros"))] fn main() {}
    /// ```
    pub fn scope<F: std::future::Future>(&self, future: F) -> crate::Scoped<F> {
        crate::context::ambient::Scoped::new(self.clone(), future)
    }

    /// The ambient context: the innermost [`scope`](Context::scope) or
    /// [`enter`](Context::enter) of this task or thread, else [`background`](Context::background).
    #[inline]
    pub fn current() -> Context {
        crate::context::ambient::current()
    }
}

/// The last reference to a context's node, dropped, leaves its memory to this thread's
/// next derivation (`tree/recycle.rs`); any other is a plain decrement.
impl Drop for Context {
    #[inline]
    fn drop(&mut self) {
        if self.is_sole_reference() {
            self.release();
        }
    }
}

/// Prints the derivation chain as Go does, e.g. `context.Background.WithCancel.WithValue(User)`.
impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.link.fmt_chain(f)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("chain", &format_args!("{self}"))
            .field("deadline", &self.deadline())
            .field("err", &self.core().and_then(Core::err))
            .finish()
    }
}

// A panic never leaves a context half-updated: every lock is taken poison-tolerantly and
// each critical section completes its state change before running anything that can panic.
impl std::panic::UnwindSafe for Context {}
impl std::panic::RefUnwindSafe for Context {}
