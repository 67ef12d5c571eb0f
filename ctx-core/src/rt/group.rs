//! [`Group`]: Go's `errgroup`, with structure: no task outlives its group.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::{CancelHandle, Cause, Context, Error};

/// A set of tasks working on one job under one context: the first error cancels the rest,
/// [`wait`](Group::wait) joins them all. Go's `errgroup.Group`, with structure:
///
/// - the tasks start at once (`spawn` does not wait), each with the group's context as
///   [`Context::current`];
/// - the first task to fail cancels the group's context, with its error as the
///   [`cause`](Context::cause), and `wait` returns that error once every task has ended;
/// - a panicking task cancels the group too; `wait` joins the others, then resumes the panic
///   (as `std::thread::scope` does), so `E` needs no conversion from panics;
/// - dropping a group before `wait` cancels it and aborts what is left: no task outlives it.
///
/// Must be used within a tokio runtime.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Group};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let group = Group::<std::io::Error>::new(&Context::background());
/// for i in 0..3 {
///     group.spawn(async move {
///         if i == 1 {
///             return Err(std::io::Error::other("backend 1 failed"));
///         }
///         // The others see the failure and stop.
///         Context::current().done().await;
///         Ok(())
///     });
/// }
/// let err = group.wait().await.unwrap_err();
/// assert_eq!(err.to_string(), "backend 1 failed");
/// # }
/// ```
pub struct Group<E> {
    ctx: Context,
    cancel: Option<CancelHandle>,
    shared: Arc<Shared<E>>,
    tasks: Mutex<JoinSet<()>>,
    limit: Mutex<Option<Arc<Semaphore>>>,
}

struct Shared<E> {
    ctx: Context,
    /// The first error, shared with the context's cause until `wait` takes it back.
    first_error: Mutex<Option<Arc<E>>>,
    /// The first panic's payload, resumed by `wait`.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<E: std::error::Error + Send + Sync + 'static> Shared<E> {
    fn fail(&self, err: E) {
        let err = Arc::new(err);
        {
            let mut first = lock(&self.first_error);
            if first.is_some() || lock(&self.panic).is_some() {
                return; // not the first failure: dropped, as errgroup does
            }
            *first = Some(err.clone());
        }
        self.cancel(Cause::from_shared(err));
    }

    fn panicked(&self, payload: Box<dyn Any + Send>) {
        {
            let mut panic = lock(&self.panic);
            if panic.is_some() {
                return;
            }
            *panic = Some(payload);
        }
        self.cancel(Cause::from("a task of the group panicked"));
    }

    fn cancel(&self, cause: Cause) {
        if let Some(core) = self.ctx.signal() {
            crate::tree::cancel(core, Error::Cancelled, Some(cause));
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> Group<E> {
    /// A group whose context is a child of `parent` (a `&Context`, a `Context` or a
    /// `&CancelScope`).
    pub fn new(parent: impl AsRef<Context>) -> Group<E> {
        let (ctx, cancel) = parent.as_ref().with_cancel().into_parts();
        Group {
            shared: Arc::new(Shared {
                ctx: ctx.clone(),
                first_error: Mutex::new(None),
                panic: Mutex::new(None),
            }),
            ctx,
            cancel: Some(cancel),
            tasks: Mutex::new(JoinSet::new()),
            limit: Mutex::new(None),
        }
    }

    /// The group's context: cancelled by the first failure, by a panic, by the parent, or
    /// when the group is dropped.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Lets at most `n` task bodies run at once from now on; the others wait for a slot
    /// (and give up waiting if the group is cancelled). Go's `SetLimit`. With `n == 0` no
    /// new task runs until the limit is raised, as in Go.
    pub fn set_limit(&self, n: usize) {
        *lock(&self.limit) = Some(Arc::new(Semaphore::new(n)));
    }

    /// Starts `task` at once on the runtime, with the group's context as
    /// [`Context::current`] on every poll. An `Err` cancels the group (if it is the first).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.launch(move |ctx, permit| async move {
            let _permit = permit;
            CatchUnwind {
                future: ctx.scope(task),
            }
            .await
        });
    }

    /// Starts `task` on tokio's blocking pool, passing it the group's context (also its
    /// [`Context::current`]). Blocking code cannot be aborted: it should check
    /// `ctx.checkpoint()` and return when the group is cancelled.
    pub fn spawn_blocking<F>(&self, task: F)
    where
        F: FnOnce(&Context) -> Result<(), E> + Send + 'static,
    {
        self.launch(move |ctx, permit| async move {
            let run = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                ctx.enter(|| task(&ctx))
            });
            match run.await {
                Ok(result) => Ok(result),
                Err(join) if join.is_panic() => Err(join.into_panic()),
                Err(_) => Ok(Ok(())), // the runtime is shutting down
            }
        });
    }

    /// Spawns a task that waits for a slot under the limit (giving up if the group ends
    /// first), runs `body` with the group's context, and settles its outcome.
    fn launch<B, Fut>(&self, body: B)
    where
        B: FnOnce(Context, Option<OwnedSemaphorePermit>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<E>> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        let shared = self.shared.clone();
        let slot = lock(&self.limit).clone();
        lock(&self.tasks).spawn(async move {
            let Some(permit) = acquire(&ctx, slot).await else {
                return;
            };
            match body(ctx, permit).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => shared.fail(err),
                Err(payload) => shared.panicked(payload),
            }
        });
    }

    /// Waits for every task to end, then returns the first error (in time), if any. If a
    /// task panicked, resumes that panic once the others have ended.
    ///
    /// The group's context is cancelled when `wait` returns (a finished group's context
    /// is done, like Go's). The error is shared with that context's cause while the group
    /// runs (so `cause().downcast_ref::<E>()` finds it); when `wait` takes it back, the
    /// cause becomes the error's text. `E` need not be `Clone`, so a `Cause` of the error
    /// still held elsewhere delays `wait` until it is dropped: read causes, don't hoard them.
    pub async fn wait(mut self) -> Result<(), E> {
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        while let Some(joined) = tasks.join_next().await {
            if let Err(join) = joined
                && join.is_panic()
            {
                self.shared.panicked(join.into_panic());
            }
        }
        if let Some(payload) = lock(&self.shared.panic).take() {
            std::panic::resume_unwind(payload);
        }
        let first = lock(&self.shared.first_error).take();
        drop(self.cancel.take()); // cancels the group context, as Go's Wait does
        match first {
            None => Ok(()),
            Some(err) => Err(self.take_back(err).await),
        }
    }

    /// Recovers sole ownership of the first error from the context's cause.
    async fn take_back(&self, mut err: Arc<E>) -> E {
        if let Some(core) = self.ctx.signal() {
            // Only the cancelled core holds the cause (descendants refer to it); swap in
            // its text so the `Arc` is ours alone, unless someone kept a `Cause` clone.
            core.replace_cause(Cause::from(err.to_string()));
        }
        let mut backoff = std::time::Duration::from_micros(50);
        loop {
            match Arc::try_unwrap(err) {
                Ok(err) => return err,
                // A `Cause` clone of the error is still held elsewhere (by a task that
                // outlived the group through `without_cancel`, say): `E` need not be
                // `Clone`, so wait for its holder to drop it.
                Err(shared) => {
                    err = shared;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

impl<E> Drop for Group<E> {
    fn drop(&mut self) {
        // Cancel first so tasks see the context end, then abort whatever is left.
        drop(self.cancel.take());
        lock(&self.tasks).abort_all();
    }
}

impl<E> fmt::Debug for Group<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("ctx", &self.ctx)
            .field("tasks", &lock(&self.tasks).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a task ended: its own result, or the payload of its panic.
type Outcome<E> = Result<Result<(), E>, Box<dyn Any + Send>>;

/// Waits for a slot under the limit, if there is one; `None` if the group ended first.
async fn acquire(
    ctx: &Context,
    slot: Option<Arc<Semaphore>>,
) -> Option<Option<OwnedSemaphorePermit>> {
    match slot {
        None => Some(None),
        Some(semaphore) => match ctx.run(semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Some(Some(permit)),
            _ => None,
        },
    }
}

pin_project_lite::pin_project! {
    /// Polls a future, turning a panic into `Err(payload)` so the group can react at once.
    struct CatchUnwind<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}
