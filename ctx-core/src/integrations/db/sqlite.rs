//! SQLite statements under a context (feature `sqlite`): [`run`].
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
//! - `run` blocks the calling thread; in async code call it from `spawn_blocking`.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use rusqlite;
use rusqlite::{Connection, InterruptHandle};

use super::Error;
use crate::{AfterFunc, Context};

/// How often the after-func repeats the interrupt while `f` keeps running after the context
/// ended.
const REPEAT: Duration = Duration::from_millis(1);

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
    let guard = Arc::new(Guard::default());
    let after = {
        let guard = Arc::clone(&guard);
        let handle = conn.get_interrupt_handle();
        ctx.after_func(move || guard.interrupt_while_armed(&handle))
    };
    let disarm = Disarm {
        after: &after,
        guard: &guard,
    };
    let result = f(conn);
    let interrupted = disarm.disarm();
    match result {
        Ok(value) => Ok(value),
        // The after-func runs only once the context is done, so `err()` is `Some` here.
        Err(_) if interrupted => Err(Error::Context(ctx.err().unwrap_or(crate::Error::Cancelled))),
        Err(err) => Err(Error::Sqlite(err)),
    }
}

/// What the after-func and `run` share: whether interrupting is still allowed, and whether
/// it happened.
#[derive(Default)]
struct Guard {
    state: Mutex<GuardState>,
    /// Signalled when `run` disarms, so a repeating after-func stops at once.
    disarmed: Condvar,
}

#[derive(Default)]
struct GuardState {
    /// Set once, by `run`, before it returns; until then, interrupting is allowed.
    disarmed: bool,
    /// Whether the after-func interrupted the connection.
    interrupted: bool,
}

impl Guard {
    fn lock(&self) -> MutexGuard<'_, GuardState> {
        // Nothing panics while holding it (`interrupt` only locks rusqlite's own mutex).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The after-func: interrupt, and again every [`REPEAT`] until `run` disarms. Every
    /// `interrupt()` happens with the lock held and the guard armed: that is what keeps
    /// it from outliving `run`.
    fn interrupt_while_armed(&self, handle: &InterruptHandle) {
        let mut state = self.lock();
        while !state.disarmed {
            handle.interrupt();
            state.interrupted = true;
            state = self
                .disarmed
                .wait_timeout(state, REPEAT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Disarms the guard when `run` ends, on return or unwind.
struct Disarm<'a> {
    after: &'a AfterFunc,
    guard: &'a Guard,
}

impl Disarm<'_> {
    /// Disarms; returns whether the connection was interrupted by this call.
    fn disarm(self) -> bool {
        let interrupted = self.disarm_now();
        std::mem::forget(self);
        interrupted
    }

    fn disarm_now(&self) -> bool {
        if self.after.stop() {
            // The after-func will never run: nothing was or will be interrupted.
            return false;
        }
        // It ran, runs, or is about to. Once we hold the lock it is not inside
        // `interrupt()`, and after we disarm it never will be.
        let mut state = self.guard.lock();
        state.disarmed = true;
        self.guard.disarmed.notify_all();
        state.interrupted
    }
}

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        // Only on unwind from a panic in `f`: the normal path calls `disarm`.
        self.disarm_now();
    }
}
