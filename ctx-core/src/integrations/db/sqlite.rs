//! SQLite statements under a context (feature `sqlite`): [`run`], and [`run_async`] for
//! async callers (with feature `tokio`).
//!
//! SQLite runs in the caller's thread, so the only way to stop a statement from outside is
//! `sqlite3_interrupt`, which sets a flag on the *connection*: every statement running on it
//! fails with `SQLITE_INTERRUPT` at its next check (SQLite checks between VM instructions,
//! so a long scan or a recursive CTE stops within microseconds). [`run`] issues it from
//! [`Context::after_func`] and makes sure it can never outlive the call:
//!
//! 1. the after-func calls `interrupt()` only while it holds the call's guard mutex and the
//!    guard is *armed*;
//! 2. before `run` returns (or unwinds) it stops the after-func, and if that came too late,
//!    takes the mutex and disarms the guard;
//! 3. so every interrupt from this call happens before `run` returns, and none after:
//!    the flag it sets is cleared by SQLite when the next statement starts on an otherwise
//!    idle connection, so it never reaches a later statement.
//!
//! While `f` runs on after the context ended (it ignored an interrupted statement and
//! started another), the after-func interrupts again every millisecond, so no statement of
//! `f` outlives the context by more than that.
//!
//! # Versions
//!
//! Any rusqlite from 0.32 to 0.40 (cargo picks one: the newest unless another crate needs
//! an older `libsqlite3-sys`, as sqlx 0.8 needs rusqlite 0.32's). The one in use is
//! re-exported as [`rusqlite`](self::rusqlite): name types through it, or depend on the
//! same version.
//!
//! # Pitfalls
//!
//! - The interrupt is per connection: a statement kept active on the same connection
//!   *across* a call (a [`Rows`](rusqlite::Rows) being iterated outside `f`) is interrupted
//!   with `f`'s, and SQLite clears the flag only when no statement is active. Finish or drop
//!   outer statements before calling [`run`], or use a connection per unit of work.
//! - An interrupted write rolls back the statement (and, in autocommit mode, its implicit
//!   transaction); an explicit transaction `f` opened stays open on the connection if `f`
//!   returns early. Use [`Connection::transaction`](rusqlite::Connection::transaction),
//!   which rolls back on drop.
//! - `run` blocks the calling thread; in async code use [`run_async`], which runs it on
//!   tokio's blocking pool.

pub use rusqlite;
use rusqlite::Connection;

use super::{Error, interrupt};
use crate::Context;

/// Runs `f` on `conn` under `ctx`: when `ctx` ends while `f` runs, the running statement is
/// interrupted (`sqlite3_interrupt`) and `run` returns [`Error::Context`].
///
/// - If `ctx` is already done, `f` does not run: [`Error::Context`].
/// - If `f` returns `Ok`, so does `run`, even if `ctx` ended meanwhile: the work is done
///   (a write is committed), and reporting it as cancelled would invite a retry.
/// - If `f` returns `Err` after this call interrupted it, `run` returns
///   [`Error::Context`] with the context's error; any other error is [`Error::Sqlite`].
/// - Once `run` returns (or unwinds from a panic in `f`), no interrupt from this call can
///   reach `conn`: the next statement on it runs normally (see the module docs for why).
///
/// ```
/// use std::time::{Duration, Instant};
/// use ctx_core::{Context, db};
/// use ctx_core::db::sqlite::rusqlite::Connection;
///
/// let conn = Connection::open_in_memory().unwrap();
/// let ctx = Context::background().with_timeout(Duration::from_millis(50));
/// let started = Instant::now();
/// // Counting to a billion would take minutes; the deadline stops it on the database.
/// let err = db::sqlite::run(&ctx, &conn, |conn| {
///     conn.query_row(
///         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1e9)
///          SELECT count(*) FROM c",
///         [],
///         |row| row.get::<_, i64>(0),
///     )
/// })
/// .unwrap_err();
/// assert_eq!(err.context_error(), Some(ctx_core::Error::DeadlineExceeded));
/// assert!(started.elapsed() < Duration::from_secs(5));
///
/// // The connection is fine for the next statement.
/// let one: i64 = conn.query_row("SELECT 1", [], |row| row.get(0)).unwrap();
/// assert_eq!(one, 1);
/// ```
pub fn run<T>(
    ctx: &Context,
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, Error> {
    ctx.checkpoint()?;
    let handle = conn.get_interrupt_handle();
    let armed = interrupt::arm(ctx, move || handle.interrupt());
    let result = f(conn);
    // On unwind from a panic in `f`, dropping `armed` disarms just the same.
    let interrupted = armed.disarm();
    match result {
        Ok(value) => Ok(value),
        // The after-func runs only once the context is done, so `err()` is `Some` here.
        Err(_) if interrupted => Err(Error::Context(ctx.err().unwrap_or(crate::Error::Cancelled))),
        Err(err) => Err(Error::Sqlite(err)),
    }
}

/// [`run`] for async callers: waits for `conn`'s lock (no longer than `ctx` lasts), then runs
/// `f` on tokio's blocking pool under `ctx`, with `ctx` as [`Context::current`] there
/// (feature `tokio` too).
///
/// A connection shared by async code sits behind a [`tokio::sync::Mutex`]: its owned guard
/// is what moves into the blocking pool, so `f` has the connection to itself and the lock is
/// released when `f` is done. Everything [`run`] promises holds: the statement is
/// interrupted when `ctx` ends, and no interrupt reaches a later statement on `conn`.
///
/// - If `ctx` is already done, or ends while waiting for the lock, `f` does not run:
///   [`Error::Context`].
/// - A panic in `f` resumes in the caller.
///
/// # Cancellation safety
///
/// Dropping the returned future while `f` runs interrupts its statement too (the call
/// works under a child of `ctx` that the drop cancels); `f` then returns on the blocking
/// pool, and the lock is released once it has.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ctx_core::{Context, db};
/// use ctx_core::db::sqlite::rusqlite::Connection;
/// use tokio::sync::Mutex;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let conn = Arc::new(Mutex::new(Connection::open_in_memory().unwrap()));
///
/// let request = Context::background().with_timeout(Duration::from_secs(5));
/// let sum: i64 = db::sqlite::run_async(&request, &conn, |conn| {
///     conn.query_row("SELECT 1 + 2 + 3", [], |row| row.get(0))
/// })
/// .await
/// .unwrap();
/// assert_eq!(sum, 6);
///
/// // Counting to a billion would take minutes; the deadline stops it on the database.
/// let short = Context::background().with_timeout(Duration::from_millis(50));
/// let err = db::sqlite::run_async(&short, &conn, |conn| {
///     conn.query_row(
///         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1e9)
///          SELECT count(*) FROM c",
///         [],
///         |row| row.get::<_, i64>(0),
///     )
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.context_error(), Some(ctx_core::Error::DeadlineExceeded));
/// # }
/// ```
#[cfg(feature = "tokio")]
pub async fn run_async<T, F>(
    ctx: &Context,
    conn: &std::sync::Arc<tokio::sync::Mutex<Connection>>,
    f: F,
) -> Result<T, Error>
where
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    T: Send + 'static,
{
    ctx.checkpoint()?;
    let guard = ctx.run(std::sync::Arc::clone(conn).lock_owned()).await?;
    // Dropping this future drops `scope`, which cancels `child` and so interrupts `f`.
    let scope = ctx.with_cancel();
    let child = scope.context().clone();
    let task = tokio::task::spawn_blocking(move || child.enter(|| run(&child, &guard, f)));
    let outcome = task.await;
    drop(scope);
    match outcome {
        Ok(result) => result,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // The runtime is shutting down and dropped the task before it ran.
            Err(_) => Err(Error::Context(crate::Error::Cancelled)),
        },
    }
}
