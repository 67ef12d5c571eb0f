//! SQLite through sqlx under a context (feature `sqlx-sqlite`): [`run`].
//!
//! sqlx runs each SQLite connection's statements on a worker thread of its own; dropping a
//! query's future does not stop a statement that is stepping there. [`run`] takes the
//! connection's raw handle (`SqliteConnection::lock_handle` → `as_raw_handle`) and, when the
//! context ends, calls `sqlite3_interrupt` on it — the call SQLite allows from any thread —
//! with the guard `db::sqlite` uses: every interrupt is issued while `run` still borrows the
//! connection, and none after it returns, so no interrupt reaches a later statement (SQLite
//! clears the flag when the next statement starts on an idle connection).
//!
//! # Pitfalls
//!
//! - An interrupted write rolls back the statement; an explicit transaction `f` opened is
//!   rolled back when sqlx's `Transaction` is dropped.
//! - The interrupt is per connection: a statement of the same connection left running from
//!   *before* the call (a stream dropped mid-way) is interrupted with `f`'s.

use std::ptr::NonNull;

use sqlx::sqlite::SqliteConnection;

use super::super::{Error, interrupt};
use crate::Context;

/// Runs `f` on `conn` under `ctx`: when `ctx` ends first, the running statement is
/// interrupted (`sqlite3_interrupt`), `f`'s future is dropped, and `run` returns
/// [`Error::Context`] once the connection is idle again.
///
/// - If `ctx` is already done, `f` does not run: [`Error::Context`].
/// - If `f` finishes `Ok`, so does `run`, even if `ctx` ended meanwhile (the work is done).
/// - If `f` fails after this call interrupted it, [`Error::Context`]; any other error is
///   [`Error::Sqlx`].
/// - Once `run` returns, no interrupt from this call can reach `conn`.
///
/// # Cancellation safety
///
/// Dropping the returned future while `f` runs interrupts the statement running on the
/// connection (once, as the future drops).
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, db};
/// use ctx_core::db::sqlx::sqlx::{self, Connection, sqlite::SqliteConnection};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut conn = SqliteConnection::connect("sqlite::memory:").await?;
///
/// let request = Context::background().with_timeout(Duration::from_secs(5));
/// let n: i64 = db::sqlx::sqlite::run(&request, &mut conn, async |conn| {
///     sqlx::query_scalar("SELECT 6 * 7").fetch_one(conn).await
/// })
/// .await?;
/// assert_eq!(n, 42);
///
/// // Counting to a billion would take minutes; the deadline stops it on the database.
/// let short = Context::background().with_timeout(Duration::from_millis(50));
/// let err = db::sqlx::sqlite::run(&short, &mut conn, async |conn| {
///     sqlx::query_scalar::<_, i64>(
///         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1e9)
///          SELECT count(*) FROM c",
///     )
///     .fetch_one(conn)
///     .await
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.context_error(), Some(ctx_core::Error::DeadlineExceeded));
/// # Ok(()) }
/// ```
pub async fn run<T, F>(ctx: &Context, conn: &mut SqliteConnection, f: F) -> Result<T, Error>
where
    F: AsyncFnOnce(&mut SqliteConnection) -> Result<T, sqlx::Error>,
{
    ctx.checkpoint()?;
    let raw = RawHandle(conn.lock_handle().await?.as_raw_handle());
    let armed = interrupt::arm(ctx, move || raw.interrupt());
    let on_drop = InterruptOnDrop(Some(raw));
    let outcome = ctx.run(f(&mut *conn)).await;
    let result = match outcome {
        Ok(result) => result,
        Err(err) => {
            // `f`'s future is dropped, but its statement may still be stepping on the
            // worker thread (or queued there): wait until the worker is idle, while the
            // after-func (armed: the context is done) interrupts every statement it starts.
            let idle = conn.lock_handle().await.map(drop);
            armed.disarm();
            on_drop.defuse();
            idle?;
            return Err(Error::Context(err));
        }
    };
    let interrupted = armed.disarm();
    on_drop.defuse();
    match result {
        Ok(value) => Ok(value),
        Err(_) if interrupted => Err(Error::Context(ctx.err().unwrap_or(crate::Error::Cancelled))),
        Err(err) => Err(Error::Sqlx(err)),
    }
}

/// A connection's `sqlite3*`, for `sqlite3_interrupt` from another thread.
#[derive(Clone, Copy)]
struct RawHandle(NonNull<libsqlite3_sys::sqlite3>);

// SAFETY: the only use is `sqlite3_interrupt`, which SQLite documents as safe to call from
// any thread while the connection is open.
unsafe impl Send for RawHandle {}
// SAFETY: as for `Send`: `sqlite3_interrupt` only sets an atomic flag.
unsafe impl Sync for RawHandle {}

impl RawHandle {
    fn interrupt(self) {
        // SAFETY: the handle is open: it belongs to the `SqliteConnection` that `run`
        // borrows mutably (so it is neither closed nor dropped), and every call happens
        // before `run` returns (the interrupt guard, `InterruptOnDrop`).
        unsafe { libsqlite3_sys::sqlite3_interrupt(self.0.as_ptr()) }
    }
}

/// Interrupts once if `run`'s future is dropped while `f` is in flight.
struct InterruptOnDrop(Option<RawHandle>);

impl InterruptOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(raw) = self.0 {
            raw.interrupt();
        }
    }
}
