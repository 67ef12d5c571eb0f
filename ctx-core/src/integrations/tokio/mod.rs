//! Structured concurrency on tokio (feature `tokio`).
//!
//! The two things a service needs from its tasks are "stop when told" and "let me wait until
//! every one has finished". Go answers with `context` plus `sync.WaitGroup`/`errgroup`;
//! tokio users juggle `JoinSet`, `CancellationToken` and `TaskTracker`. ctx gives one answer:
//!
//! | Go | ctx |
//! | --- | --- |
//! | `var wg sync.WaitGroup; wg.Add(1); go f(); wg.Wait()` | `let g = Group::new(&ctx); g.spawn(f); g.wait().await` |
//! | `g, ctx := errgroup.WithContext(ctx); g.Go(f); g.Wait()` | the same [`Group`]: the first error cancels `g.context()` and is returned by `wait` |
//! | `g.SetLimit(n)` | [`Group::set_limit`] |
//! | `go f(ctx)` (the context passed by hand) | [`spawn`]: the caller's `Context::current()` follows the task |
//! | `signal.NotifyContext(ctx, os.Interrupt)` | [`signal::notify`](crate::signal::notify) |
//! | `srv.Shutdown(ctx)` after a signal, with a grace period | [`signal::graceful`](crate::signal::graceful) |
//! | `exec.CommandContext(ctx, ...)` + `Cancel` + `WaitDelay` | [`process::output`](crate::process::output) |
//!
//! # WaitGroup and errgroup: [`Group`]
//!
//! ```
//! use std::time::Duration;
//! use ctx_core::{Context, Group};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let group = Group::<std::io::Error>::new(&Context::background());
//! group.set_limit(2); // at most two bodies at once
//! for backend in ["users", "orders", "prices"] {
//!     group.spawn(async move {
//!         let ctx = Context::current(); // the group's context
//!         ctx.run(tokio::time::sleep(Duration::from_millis(5))).await?;
//!         println!("{backend} answered");
//!         Ok(())
//!     });
//! }
//! group.wait().await.unwrap(); // every task has ended here
//! # }
//! ```
//!
//! # Carrying the context into tasks: [`spawn`]
//!
//! ```
//! use ctx_core::Context;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let request = Context::background().with_cancel();
//! let task = request.enter(|| ctx_core::spawn(async { Context::current().done().await }));
//! request.cancel();
//! assert_eq!(task.await.unwrap(), ctx_core::Error::Cancelled);
//! # }
//! ```
//!
//! # NotifyContext: [`signal::notify`](crate::signal::notify)
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use ctx_core::signal::{self, DEFAULT_SIGNALS};
//! let root = signal::notify(&ctx_core::Context::background(), DEFAULT_SIGNALS)?; // SIGINT, SIGTERM
//! // ... serve with `root` as the parent of every request ...
//! root.done().await; // a signal arrived
//! # Ok(()) }
//! ```
//!
//! # CommandContext: [`process::output`](crate::process::output)
//!
//! ```
//! use std::time::Duration;
//! use ctx_core::{Context, process};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ctx = Context::background().with_timeout(Duration::from_secs(10));
//! let mut echo = tokio::process::Command::new("echo");
//! echo.arg("hello");
//! let out = process::output(&ctx, &mut echo, Duration::from_secs(1)).await.unwrap();
//! assert_eq!(out.stdout, b"hello\n");
//! # }
//! ```

mod group;
pub mod process;
pub mod signal;
mod spawn;

pub use group::Group;
pub use spawn::{spawn, spawn_blocking};
