//! Spawning that carries the caller's ambient context into the task.

use std::future::Future;

use tokio::task::JoinHandle;

use crate::Context;

/// Spawns `future` on the current tokio runtime, running every poll of it with the caller's
/// [`Context::current`] (as of this call) as the task's current context.
///
/// tokio's task-locals do not follow `tokio::spawn`; this does, and only into this task: the
/// worker thread's own current context is restored after each poll.
///
/// ```
/// use ctx_core::{Context, ContextKey};
///
/// #[derive(ContextKey)]
/// struct Tenant(u32);
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let ctx = Context::background().with_value(Tenant(9));
/// let seen = ctx.enter(|| ctx_core::spawn(async { Context::current().value::<Tenant>().map(|t| t.0) }));
/// assert_eq!(seen.await.unwrap(), Some(9));
/// # }
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Context::current().scope(future))
}

/// Runs `f` on tokio's blocking pool with the caller's [`Context::current`] as its current
/// context.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ctx = Context::current();
    tokio::task::spawn_blocking(move || ctx.enter(f))
}
