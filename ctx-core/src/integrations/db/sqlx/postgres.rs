//! PostgreSQL through sqlx under a context (feature `sqlx-postgres`): [`run`] on a
//! [`PgPool`].
//!
//! sqlx has no cancel request of its own, so [`run`] cancels from SQL: it takes the
//! connection's backend pid (`SELECT pg_backend_pid()`) when it checks the connection out,
//! and when the context ends while `f` runs, it drops `f`'s future, returns
//! [`Error::Context`] at once, and in the background
//!
//! 1. runs `SELECT pg_cancel_backend(pid)` on another connection: an idle one of the pool,
//!    or a fresh one when none is idle. The cancelled connection is held (open, out of the
//!    pool) all the while, so the pid is still its backend's: a pid cannot have been reused
//!    by another session;
//! 2. reads what is left of the cancelled query on that connection (sqlx's `ping` drains
//!    it). The connection goes back to the pool only if the server reports that *this*
//!    cancel ended the query: SQLSTATE 57014 with the message "canceling statement due to
//!    user request" (a `statement_timeout` has the same code and another message). Once
//!    the backend has reported it, the cancel is spent: it can reach no later query;
//! 3. otherwise — the query had finished before the cancel, the server said something
//!    else, the cancel failed, or nothing came back within 5 s — the connection is closed
//!    and the pool opens a new one when it needs one.
//!
//! So a cancel never reaches a later query on the same backend (lib/pq#1001), and a query
//! cancelled mid-way costs no reconnect.
//!
//! # Pitfalls
//!
//! - The cancelling role must be allowed to signal the backend: the same role (the pool's)
//!   always is.
//! - With `lc_messages` other than English the server's message differs: no cancel is then
//!   confirmed, and every cancelled connection is closed (safe, but a reconnect each).
//! - A result that arrives as the context ends is dropped: `run` reports the context's
//!   error although the server may have done the work (a `COMMIT` racing the deadline may
//!   have committed). Make writes that you retry idempotent.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::{Connection, Error as SqlxError};

use super::super::{Error, spawn_detached};
use crate::Context;

/// How long the background reclaim waits for the cancel and the cancelled query's end
/// before it closes the connection instead.
const RECLAIM_WITHIN: Duration = Duration::from_secs(5);

/// Runs `f` on a connection from `pool` under `ctx`: when `ctx` ends first, the query is
/// cancelled on the server (`pg_cancel_backend`) and `run` returns [`Error::Context`]
/// without waiting; the connection goes back to the pool once the server confirms the
/// cancel ended its query, and is closed otherwise (see the module docs).
///
/// - If `ctx` is already done, no connection is taken and `f` does not run.
/// - Waiting for a free connection also ends with `ctx` ([`Error::Context`]).
/// - `f`'s error is [`Error::Sqlx`]; the connection goes back to the pool.
///
/// Each call runs one extra statement, `SELECT pg_backend_pid()`, before `f`: sqlx does not
/// expose the backend's pid.
///
/// # Cancellation safety
///
/// Dropping the returned future while `f` is in flight does what the context's end does.
/// It needs a tokio runtime for the background part; dropped outside one, a thread with
/// its own runtime does it.
///
/// ```no_run
/// use std::time::Duration;
/// use ctx_core::{Context, db};
/// use ctx_core::db::sqlx::sqlx::{self, postgres::PgPoolOptions};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PgPoolOptions::new()
///     .max_connections(8)
///     .connect("postgres://postgres@127.0.0.1/postgres")
///     .await?;
///
/// let ctx = Context::background().with_timeout(Duration::from_millis(100));
/// let result = db::sqlx::postgres::run(&ctx, &pool, async |conn| {
///     sqlx::query("SELECT pg_sleep(10)").execute(conn).await
/// })
/// .await;
/// // Returned at the deadline; the server stopped the sleep a moment later.
/// assert_eq!(result.unwrap_err().context_error(), Some(ctx_core::Error::DeadlineExceeded));
/// # Ok(()) }
/// ```
pub async fn run<T, F>(ctx: &Context, pool: &PgPool, f: F) -> Result<T, Error>
where
    F: AsyncFnOnce(&mut PgConnection) -> Result<T, SqlxError>,
{
    ctx.checkpoint()?;
    let mut conn = ctx.run(pool.acquire()).await??;
    // Should the context end here, the pid query is dropped like any other: sqlx drains it
    // when the connection goes back to the pool; nothing was cancelled.
    let pid: i32 = ctx
        .run(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn))
        .await??;
    let mut checkout = Checkout {
        conn: Some(conn),
        pid,
        pool: pool.clone(),
        settled: false,
    };
    let outcome = ctx.run(f(checkout.conn())).await;
    match outcome {
        Ok(result) => {
            // `f` finished and no cancel was sent.
            checkout.settled = true;
            result.map_err(Error::Sqlx)
        }
        // `f`'s future is already dropped; dropping `checkout` cancels and reclaims.
        Err(err) => Err(Error::Context(err)),
    }
}

/// A connection lent to `f`. Unless `run` settles it, dropping it starts the background
/// cancel and reclaim.
struct Checkout {
    conn: Option<PoolConnection<Postgres>>,
    pid: i32,
    pool: PgPool,
    settled: bool,
}

impl Checkout {
    fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .expect("the connection is taken only on drop")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.settled {
            return; // `conn` drops here: back to the pool
        }
        spawn_detached(reclaim(conn, self.pid, self.pool.clone()));
    }
}

/// Cancels the backend's query and returns the connection to the pool if the server
/// confirms that this cancel ended it; closes it otherwise.
async fn reclaim(mut conn: PoolConnection<Postgres>, pid: i32, pool: PgPool) {
    let confirmed = tokio::time::timeout(RECLAIM_WITHIN, async {
        if !matches!(cancel_backend(&pool, pid).await, Ok(true)) {
            return false;
        }
        // The first `ping` reads up to the cancelled query's end and reports its error;
        // the second proves the connection is idle and sound.
        match conn.ping().await {
            Err(err) if is_user_cancel(&err) => conn.ping().await.is_ok(),
            // It finished before the cancel came (or failed otherwise): whether the cancel
            // is spent cannot be known.
            _ => false,
        }
    })
    .await
    .unwrap_or(false);
    if !confirmed {
        // Out of the pool for good; a timed-out wait leaves the connection mid-protocol,
        // so it is closed, not reused.
        let _ = conn.detach().close().await;
    }
    // Confirmed: `conn` drops here and goes back to the pool.
}

/// `pg_cancel_backend(pid)` on an idle connection of `pool`, or on a fresh one when none is
/// idle (waiting for one could wait on connections that are themselves being reclaimed).
async fn cancel_backend(pool: &PgPool, pid: i32) -> Result<bool, SqlxError> {
    let cancel = sqlx::query_scalar("SELECT pg_cancel_backend($1)").bind(pid);
    match pool.try_acquire() {
        Some(mut other) => cancel.fetch_one(&mut *other).await,
        None => {
            let mut fresh = PgConnection::connect_with(&pool.connect_options()).await?;
            let sent = cancel.fetch_one(&mut fresh).await;
            let _ = fresh.close().await;
            sent
        }
    }
}

/// SQLSTATE 57014 with the message a cancel request (not a `statement_timeout`) gives.
fn is_user_cancel(err: &SqlxError) -> bool {
    err.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("57014")
            && db.message() == "canceling statement due to user request"
    })
}
