//! Test support (feature `test-util`): ctx deadlines on tokio's paused clock, and every
//! cancellation point of a piece of code, explored one by one.
//!
//! # Deadlines on tokio's paused clock
//!
//! Inside a tokio runtime whose clock is paused (`#[tokio::test(start_paused = true)]`,
//! [`tokio::time::pause`]), every ctx deadline is on tokio's clock:
//! [`with_timeout`](Context::with_timeout), [`with_deadline`](Context::with_deadline),
//! `#[cancellable(timeout = ..)]`, [`wait_timeout`](Context::wait_timeout), the HTTP and gRPC
//! layers' budgets and the `grpc-timeout` they send. A 30-second timeout ends when tokio's
//! clock passes it: at once when the runtime has nothing else to do (auto-advance), or when
//! [`tokio::time::advance`] passes it, and not a moment before. [`Context::deadline`] and
//! remaining budgets agree with [`tokio::time::Instant::now`] (for `with_deadline`, write
//! `Context::now() + d`, not `std::time::Instant::now() + d`). A blocking
//! [`wait`](Context::wait) or [`wait_timeout`](Context::wait_timeout) cannot let the runtime
//! advance the clock, so the clock jumps, as an idle runtime's would, to the context's
//! deadline or the timeout, whichever comes first. Outside such a runtime, or with a running
//! clock, nothing changes.
//!
//! ```
//! use std::time::Duration;
//! use ctx_core::{Context, Error};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! // In a test: #[tokio::test(start_paused = true)]
//! let started = std::time::Instant::now();
//! let request = Context::background().with_timeout(Duration::from_secs(30));
//! tokio::time::advance(Duration::from_secs(29)).await;
//! assert_eq!(request.err(), None);
//! tokio::time::advance(Duration::from_secs(1)).await;
//! assert_eq!(request.err(), Some(Error::DeadlineExceeded));
//! // Auto-advance: nothing else to do, so tokio's clock jumps to the deadline.
//! let slow = Context::background().with_timeout(Duration::from_secs(3600));
//! assert_eq!(slow.done().await, Error::DeadlineExceeded);
//! assert!(started.elapsed() < Duration::from_secs(5)); // not an hour
//! # });
//! ```
//!
//! # Exploring cancellation points
//!
//! [`explore_cancellation`] (and [`explore_cancellation_blocking`] for synchronous code) runs
//! a body once to find its cancellation points, then once more per point, cancelling its
//! context exactly there. A body asserts what must hold however it was cancelled (money is
//! never debited without being credited, a connection is never left mid-protocol), and a
//! failing run names the point.
//!
//! A point is each check of the body's context, or of any context derived from it, on any
//! thread: [`checkpoint`](Context::checkpoint), [`is_cancelled`](Context::is_cancelled),
//! [`err`](Context::err); and each await raced against it: [`run`](Context::run) and
//! [`into_run`](Context::into_run) (the point is the first poll), `#[cancellable]`'s awaits
//! and loop checkpoints (located at the `.await` and the loop in your source), and the
//! integrations' own checks and races. Waiting ([`done`](Context::done),
//! [`wait`](Context::wait)) and formatting a context are not points; neither are checks of
//! unrelated contexts, such as those of tests running at the same time. While nothing is
//! explored, a check still costs one atomic load.
//!
//! ```
//! use ctx_core::{Context, Error, testing::explore_cancellation_blocking};
//!
//! fn two_steps(ctx: &Context, log: &mut Vec<&str>) -> Result<(), Error> {
//!     ctx.checkpoint()?;
//!     log.push("first");
//!     ctx.checkpoint()?;
//!     log.push("second");
//!     Ok(())
//! }
//!
//! let explored = explore_cancellation_blocking(|ctx| {
//!     let mut log = Vec::new();
//!     let done = two_steps(&ctx, &mut log);
//!     // Cancelled anywhere, the steps done are a prefix, and the error says so.
//!     assert!(done.is_ok() || log.len() < 2);
//! });
//! assert_eq!(explored.points().len(), 2);
//! ```

use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use super::tree::{Link, explored};
use crate::{Cause, Context, Error};

/// What an exploration found: the cancellation points the body passed, in the order it
/// passed them (one entry per pass: a check in a loop is as many points as iterations).
#[derive(Clone, Debug)]
pub struct Explored {
    points: Vec<&'static Location<'static>>,
}

impl Explored {
    /// Where each point is in the source, in the order the body passed them.
    pub fn points(&self) -> &[&'static Location<'static>] {
        &self.points
    }
}

/// Runs `body` once with a fresh context (also [`Context::current`] while it runs), recording every cancellation point it passes (see
/// the [module docs](self)), then once per point `k`, cancelling the context at point `k`
/// ([`Error::Cancelled`]; that check sees it). A body with no point runs once.
///
/// # Panics
///
/// When a run of `body` panics: the panic is raised again, its message kept, with the
/// index and source location of the point that run cancelled at.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Error, testing::explore_cancellation};
///
/// async fn fetch(ctx: &Context) -> Result<u32, Error> {
///     let a = ctx.run(async { 1 }).await?;
///     let b = ctx.run(async { 2 }).await?;
///     Ok(a + b)
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let explored = explore_cancellation(|ctx| async move {
///     match fetch(&ctx).await {
///         Ok(sum) => assert_eq!(sum, 3),
///         Err(err) => assert_eq!(err, Error::Cancelled),
///     }
/// })
/// .await;
/// assert_eq!(explored.points().len(), 2);
/// # });
/// ```
pub async fn explore_cancellation<F, Fut>(mut body: F) -> Explored
where
    F: FnMut(Context) -> Fut,
    Fut: Future,
{
    let session = Session::start(None);
    let ran = CatchUnwind {
        future: session.context().scope(body(session.context())),
    }
    .await;
    let points = session.finish().points;
    if let Err(payload) = ran {
        reraise(payload, None);
    }
    for (k, at) in points.iter().enumerate() {
        let session = Session::start(Some(k));
        let ran = CatchUnwind {
            future: session.context().scope(body(session.context())),
        }
        .await;
        session.finish();
        if let Err(payload) = ran {
            reraise(payload, Some((k, at)));
        }
    }
    Explored { points }
}

/// [`explore_cancellation`] for a synchronous body.
///
/// # Panics
///
/// When a run of `body` panics: the panic is raised again, its message kept, with the
/// index and source location of the point that run cancelled at.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, testing::explore_cancellation_blocking};
///
/// let explored = explore_cancellation_blocking(|ctx: Context| {
///     let mut sum = 0;
///     for i in 0..3 {
///         if ctx.is_cancelled() {
///             return;
///         }
///         sum += i;
///     }
///     assert_eq!(sum, 3);
/// });
/// assert_eq!(explored.points().len(), 3);
/// ```
pub fn explore_cancellation_blocking<F, R>(mut body: F) -> Explored
where
    F: FnMut(Context) -> R,
{
    let run = |body: &mut F, cancel_at| {
        let session = Session::start(cancel_at);
        let ctx = session.context();
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            ctx.enter(|| drop(body(ctx.clone())));
        }));
        (session.finish().points, ran)
    };
    let (points, ran) = run(&mut body, None);
    if let Err(payload) = ran {
        reraise(payload, None);
    }
    for (k, at) in points.iter().enumerate() {
        if let (_, Err(payload)) = run(&mut body, Some(k)) {
            reraise(payload, Some((k, at)));
        }
    }
    Explored { points }
}

/// Panics again with `payload`'s message and the point the run cancelled at.
fn reraise(payload: Box<dyn std::any::Any + Send>, point: Option<(usize, &Location<'_>)>) -> ! {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)");
    match point {
        Some((k, at)) => panic!(
            "explore_cancellation: the run cancelled at point {k} ({at}) panicked: {message}"
        ),
        None => panic!(
            "explore_cancellation: the run that found the points (no cancellation) panicked: \
             {message}"
        ),
    }
}

/// One run of an exploration: its root context, explored, and what it saw.
struct Session {
    scope: crate::CancelScope,
    shared: Arc<Shared>,
}

struct Shared {
    /// The address of the root's core: how a check finds its session.
    root: usize,
    /// The point to cancel at, or `None` to record them all.
    cancel_at: Option<usize>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Points passed so far.
    passed: usize,
    /// Their locations (recording run only).
    points: Vec<&'static Location<'static>>,
}

/// The runs in progress, of every exploration in the process.
static SESSIONS: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

impl Session {
    fn start(cancel_at: Option<usize>) -> Session {
        let scope = Context::background().with_cancel();
        let core = scope.context().core().expect("a cancel scope has a core");
        explored::mark(core);
        let shared = Arc::new(Shared {
            root: core as *const _ as usize,
            cancel_at,
            seen: Mutex::default(),
        });
        lock(&SESSIONS).push(shared.clone());
        Session { scope, shared }
    }

    fn context(&self) -> Context {
        self.scope.context().clone()
    }

    /// Ends the run (its context is cancelled: checks of contexts it leaked are not
    /// points of a later run) and returns what it saw.
    fn finish(self) -> Seen {
        lock(&SESSIONS).retain(|shared| !Arc::ptr_eq(shared, &self.shared));
        drop(self.scope);
        std::mem::take(&mut *lock(&self.shared.seen))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A check of `ctx`, explored, at `at`: counts the point in its run, and cancels the run's
/// root if this is the point to cancel at.
pub(in crate::context) fn point(ctx: &Context, at: &'static Location<'static>) {
    // The run whose root is on `ctx`'s chain (its checks are ours), and that root.
    let found = {
        let sessions = lock(&SESSIONS);
        let mut link = ctx.link();
        loop {
            let Link::Node(node) = link else { break None };
            if let Some(core) = node.core()
                && explored::is_explored(core)
                && let Some(shared) = sessions
                    .iter()
                    .find(|shared| shared.root == core as *const _ as usize)
            {
                break Some((shared.clone(), link.clone()));
            }
            link = &node.parent;
        }
    };
    let Some((shared, root)) = found else {
        return; // a context leaked from a run that is over
    };
    let mut seen = lock(&shared.seen);
    let index = seen.passed;
    seen.passed += 1;
    match shared.cancel_at {
        None => seen.points.push(at),
        Some(k) if k == index => {
            drop(seen);
            let cause = Cause::from(format!(
                "cancelled by explore_cancellation at point {k} ({at})"
            ));
            root.cancel(Error::Cancelled, Some(cause), at);
        }
        Some(_) => {}
    }
}

pin_project_lite::pin_project! {
    /// Catches a panic of the future it polls.
    struct CatchUnwind<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}
