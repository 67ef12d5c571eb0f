//! [`Group`]: Go's `errgroup`, with structure: no task outlives its group.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::sync::lock;
use crate::{CancelHandle, Cause, Context};

/// A set of tasks working on one job under one context: the first error cancels the rest,
/// [`wait`](Group::wait) joins them all. Go's `errgroup.Group`, with structure:
///
/// - the tasks start at once (`spawn` does not wait), each with the group's context as
///   [`Context::current`];
/// - the first task to fail cancels the group's context, and `wait` returns its error once
///   every task has ended; the context's [`cause`](Context::cause) displays that error's text
///   (see [Causes](#causes));
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
///
/// # Causes
///
/// The group keeps the first error for `wait`, which hands it back by value: `E` needs no
/// `Clone` (`std::io::Error` will do) and `wait` never waits for anyone to drop a
/// [`Cause`]. The cause it cancels the context with is a snapshot of the error: its
/// `Display` text, rendered once by the failing task (and its `Debug` text, for `{:?}`).
/// So `ctx.cause().unwrap().to_string()` is the error's text, forever, whoever holds the
/// cause, but `cause.downcast_ref::<E>()` is `None`: the cause is the error's text, not the
/// error, and it has no [`source`](std::error::Error::source). If the error's `Display`
/// panics, the panic is caught and the cause reads "a task of the group failed (its error's
/// Display panicked)"; `wait` still returns the error.
///
/// For a typed cause, give the group a parent you cancel yourself: the failing task cancels
/// that parent with a clone of its error before returning it, and the group's context,
/// a child, takes the parent's cause (the first cancel wins, so the group's own is a no-op):
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use ctx_core::{Cause, Context, Group};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Unavailable(&'static str);
/// impl std::fmt::Display for Unavailable {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{} is unavailable", self.0)
///     }
/// }
/// impl std::error::Error for Unavailable {}
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (parent, handle) = Context::background().with_cancel().into_parts();
/// let handle = Arc::new(Mutex::new(Some(handle)));
/// let group = Group::<Unavailable>::new(&parent);
/// group.spawn(async move {
///     let err = Unavailable("users");
///     if let Some(handle) = handle.lock().unwrap().take() {
///         handle.cancel_with(Cause::from_error(err.clone()));
///     }
///     Err(err)
/// });
/// let ctx = group.context().clone();
/// assert_eq!(group.wait().await, Err(Unavailable("users")));
/// let cause = ctx.cause().unwrap();
/// assert_eq!(cause.downcast_ref::<Unavailable>(), Some(&Unavailable("users")));
/// # }
/// ```
pub struct Group<E> {
    shared: Arc<Shared<E>>,
    /// Dropped after `shared` (declaration order), which aborts every task left. Each task's
    /// output is its reference to `Shared`, handed back for `wait` to drop (see [`GroupTask`]).
    tasks: Mutex<JoinSet<Option<Arc<Shared<E>>>>>,
    limit: Mutex<Option<Arc<Semaphore>>>,
    /// Whether `limit` was ever set (so an unlimited group's spawn takes no lock for it).
    limited: AtomicBool,
}

/// What every task of the group holds (one reference count per task).
///
/// Aligned to its own cache lines, apart from the `Arc`'s counts: the thread spawning tasks
/// increments the count once per task while the workers running them read `ctx` on every
/// poll, and on one line each would take the other's copy away.
#[repr(align(128))]
struct Shared<E> {
    /// The group's context, current in every task (entered on each poll, not cloned).
    ctx: Context,
    /// Cancels the group's context: taken by the first failure, by `wait`, or by the drop.
    cancel: Mutex<Option<CancelHandle>>,
    /// The first error, owned by the group alone (the context's cause is its snapshot,
    /// [`TaskFailed`]), so `wait` can hand it back without waiting for anyone.
    first_error: Mutex<Option<E>>,
    /// The first panic's payload, resumed by `wait`.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<E> Shared<E> {
    /// Cancels the group's context without a cause of its own (when `wait` returns or the
    /// group is dropped); a no-op after a failure did.
    fn end(&self) {
        let handle = lock(&self.cancel).take();
        drop(handle);
    }
}

impl<E: std::error::Error + Send + Sync + 'static> Shared<E> {
    /// Records a task's error, if it is the first failure, and cancels the group with its
    /// snapshot. Runs in the failing task.
    fn fail(&self, err: E) {
        if self.failed() {
            return; // not the first failure: dropped, as errgroup does
        }
        // Rendered here, outside any lock: `E`'s `Display`/`Debug` are user code.
        let cause = Cause::from_error(TaskFailed::of(&err));
        {
            let mut first = lock(&self.first_error);
            if first.is_some() || lock(&self.panic).is_some() {
                return; // another task failed first while we rendered
            }
            *first = Some(err);
        }
        self.cancel(cause);
    }

    fn failed(&self) -> bool {
        lock(&self.first_error).is_some() || lock(&self.panic).is_some()
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
        let handle = lock(&self.cancel).take();
        if let Some(handle) = handle {
            handle.cancel_with(cause);
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
                ctx,
                cancel: Mutex::new(Some(cancel)),
                first_error: Mutex::new(None),
                panic: Mutex::new(None),
            }),
            tasks: Mutex::new(JoinSet::new()),
            limit: Mutex::new(None),
            limited: AtomicBool::new(false),
        }
    }

    /// The group's context: cancelled by the first failure, by a panic, by the parent, or
    /// when the group is dropped.
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// Lets at most `n` task bodies run at once from now on; the others wait for a slot
    /// (and give up waiting if the group is cancelled). Go's `SetLimit`. With `n == 0` no
    /// new task runs until the limit is raised, as in Go.
    pub fn set_limit(&self, n: usize) {
        *lock(&self.limit) = Some(Arc::new(Semaphore::new(n)));
        self.limited.store(true, Ordering::Release);
    }

    /// Starts `task` at once on the runtime, with the group's context as
    /// [`Context::current`] on every poll. An `Err` cancels the group (if it is the first).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.start(task);
    }

    /// Starts `task` on tokio's blocking pool, passing it the group's context (also its
    /// [`Context::current`]). Blocking code cannot be aborted: it should check
    /// `ctx.checkpoint()` and return when the group is cancelled.
    pub fn spawn_blocking<F>(&self, task: F)
    where
        F: FnOnce(&Context) -> Result<(), E> + Send + 'static,
    {
        let ctx = self.shared.ctx.clone();
        self.start(async move {
            let run = tokio::task::spawn_blocking(move || ctx.enter(|| task(&ctx)));
            match run.await {
                Ok(result) => result,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => Ok(()), // the runtime is shutting down
            }
        });
    }

    /// Spawns `future` as a task of the group; under a limit, the task first waits for a
    /// slot (giving up if the group ends first) and holds it until `future` ends.
    fn start<F>(&self, future: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let task = GroupTask {
            shared: Some(self.shared.clone()),
            future,
        };
        let limit = if self.limited.load(Ordering::Acquire) {
            lock(&self.limit).clone()
        } else {
            None
        };
        let mut tasks = lock(&self.tasks);
        match limit {
            // No limit, the usual case: the task is the future itself, nothing around it.
            None => drop(tasks.spawn(task)),
            Some(semaphore) => drop(tasks.spawn(async move {
                let ctx = &task.shared().ctx;
                let Ok(Ok(_permit)) = ctx.run(semaphore.acquire_owned()).await else {
                    return None; // the group ended while we waited
                };
                task.await
            })),
        }
    }

    /// Waits for every task to end, then returns the first error (in time), if any. If a
    /// task panicked, resumes that panic once the others have ended.
    ///
    /// Returns as soon as the last task has ended, whoever still holds the context or its
    /// [`Cause`] (a task that kept `ctx.cause()`, one that outlived the group through
    /// [`without_cancel`](Context::without_cancel)): the error is the group's alone, and the
    /// cause is only its text (see [Causes](Group#causes)), so
    /// `cause().downcast_ref::<E>()` does not find it.
    ///
    /// The group's context is cancelled when `wait` returns (a finished group's context
    /// is done, like Go's).
    pub async fn wait(self) -> Result<(), E> {
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        while let Some(joined) = tasks.join_next().await {
            match joined {
                // The task's reference, dropped here, on the thread that took it in `spawn`.
                Ok(shared) => drop(shared),
                Err(join) if join.is_panic() => self.shared.panicked(join.into_panic()),
                Err(_) => {} // aborted: the runtime is shutting down
            }
        }
        if let Some(payload) = lock(&self.shared.panic).take() {
            std::panic::resume_unwind(payload);
        }
        let first = lock(&self.shared.first_error).take();
        self.shared.end(); // cancels the group context, as Go's Wait does
        match first {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }
}

impl<E> Drop for Group<E> {
    fn drop(&mut self) {
        // Cancel first so tasks see the context end; then the fields drop, and with them the
        // `JoinSet`, which aborts whatever is left.
        self.shared.end();
    }
}

impl<E> fmt::Debug for Group<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("ctx", &self.shared.ctx)
            .field("tasks", &lock(&self.tasks).len())
            .finish_non_exhaustive()
    }
}

/// The cause a failing task cancels its group with: a snapshot of its error's text, taken
/// once in the failing task, so the cause outlives the error and shares nothing with it.
struct TaskFailed {
    /// The error's `Display` text.
    display: Box<str>,
    /// The error's `Debug` text.
    debug: Box<str>,
}

impl TaskFailed {
    /// Renders `err`. A `Display` or `Debug` that panics (or fails) is caught, and a fixed
    /// text stands in for it: the group must cancel and `wait` must return regardless.
    fn of<E: std::error::Error>(err: &E) -> TaskFailed {
        TaskFailed {
            display: render(|| err.to_string(), DISPLAY_PANICKED),
            debug: render(|| format!("{err:?}"), DEBUG_PANICKED),
        }
    }
}

const DISPLAY_PANICKED: &str = "a task of the group failed (its error's Display panicked)";
const DEBUG_PANICKED: &str = "a task of the group failed (its error's Debug panicked)";

fn render(text: impl FnOnce() -> String, fallback: &str) -> Box<str> {
    match std::panic::catch_unwind(AssertUnwindSafe(text)) {
        Ok(text) => text.into_boxed_str(),
        Err(payload) => {
            // A payload whose own `Drop` panics must not escape either: leak that one.
            if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            fallback.into()
        }
    }
}

impl fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for TaskFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskFailed({})", self.debug)
    }
}

impl std::error::Error for TaskFailed {}

pin_project_lite::pin_project! {
    /// A task of the group: its future, polled with the group's context current; its error
    /// or its panic settles the group at once.
    ///
    /// Its output is its reference to `Shared`, which `wait` drops: so the count is
    /// incremented (in `spawn`) and decremented on one thread, not bounced between the
    /// spawning thread and the workers, once per task. (A task aborted, or that panicked,
    /// drops it where it ends.)
    struct GroupTask<E, F> {
        // `Some` until the task is ready (a ready future is never polled again).
        shared: Option<Arc<Shared<E>>>,
        #[pin]
        future: F,
    }
}

impl<E, F> Future for GroupTask<E, F>
where
    E: std::error::Error + Send + Sync + 'static,
    F: Future<Output = Result<(), E>>,
{
    type Output = Option<Arc<Shared<E>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(shared) = this.shared.as_deref() else {
            return Poll::Ready(None); // polled after it ended (tokio never does)
        };
        let future = this.future;
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| shared.ctx.enter(|| future.poll(cx))));
        match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => {}
            Ok(Poll::Ready(Err(err))) => shared.fail(err),
            // Ready too: a panicked future is never polled again.
            Err(payload) => shared.panicked(payload),
        }
        Poll::Ready(this.shared.take())
    }
}

impl<E, F> GroupTask<E, F> {
    /// The group's shared state, before the task has run.
    fn shared(&self) -> &Shared<E> {
        self.shared
            .as_deref()
            .expect("a task holds its reference until it ends")
    }
}
