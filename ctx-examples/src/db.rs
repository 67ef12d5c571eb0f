//! The demo's database: a few SQLite connections whose "slow query" is real work on the
//! database (a recursive CTE), run under the request's context with `ctx_core::db::sqlite`,
//! so a request whose budget ends interrupts its query in SQLite instead of leaving it
//! running. The "work saved" of `/slow` is what those interrupted queries did not do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctx_core::Context;
use ctx_core::db;
use ctx_core::db::sqlite::rusqlite::{self, Connection, StatementStatus};
use tokio::sync::Semaphore;

use crate::api::{ApiError, App};

/// Counts to `?1`, one row at a time: CPU work on the database whose length `?1` sets.
const SLOW_QUERY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
                          SELECT sum(x % 7) FROM c";

/// A small pool of SQLite connections (in-memory: the work is CPU, not I/O).
pub struct Db {
    connections: Mutex<Vec<Connection>>,
    /// One permit per connection; waiting for one ends with the request's context.
    slots: Arc<Semaphore>,
    /// Rows the slow query counts, calibrated at start to take `planned` on an idle core.
    rows: i64,
    planned: Duration,
    /// SQLite VM steps the whole query takes: the steps an interrupted query had run tell
    /// how much of it was done, whatever the machine's load.
    steps: f64,
    /// Queries started, and interrupted by their context.
    pub started: AtomicU64,
    pub interrupted: AtomicU64,
}

impl Db {
    /// Opens `size` connections and calibrates the slow query to take about `planned`.
    pub fn open(size: usize, planned: Duration) -> Result<Db, String> {
        let connections = (0..size.max(1))
            .map(|_| Connection::open_in_memory())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("opening SQLite: {e}"))?;
        let (rows, steps) =
            calibrate(&connections[0], planned).map_err(|e| format!("calibrating SQLite: {e}"))?;
        Ok(Db {
            slots: Arc::new(Semaphore::new(connections.len())),
            connections: Mutex::new(connections),
            rows,
            planned,
            steps,
            started: AtomicU64::new(0),
            interrupted: AtomicU64::new(0),
        })
    }

    fn checkout(&self) -> Result<Connection, rusqlite::Error> {
        let pooled = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        pooled.map_or_else(Connection::open_in_memory, Ok)
    }

    fn checkin(&self, conn: Connection) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

/// How many rows the slow query must count to take about `planned` on an idle core, and
/// how many SQLite VM steps that is.
fn calibrate(conn: &Connection, planned: Duration) -> rusqlite::Result<(i64, f64)> {
    let probe = 50_000;
    let mut statement = conn.prepare(SLOW_QUERY)?;
    let mut best = Duration::MAX;
    let mut steps = 0;
    for _ in 0..3 {
        statement.reset_status(StatementStatus::VmStep);
        let started = Instant::now();
        statement.query_row([probe], |row| row.get::<_, i64>(0))?;
        best = best.min(started.elapsed());
        steps = statement.reset_status(StatementStatus::VmStep);
    }
    let rows = (planned.as_secs_f64() / best.as_secs_f64() * probe as f64) as i64;
    let rows = rows.max(probe);
    Ok((rows, f64::from(steps) / probe as f64 * rows as f64))
}

/// Runs the slow query for `endpoint` under `ctx` on a pooled connection, on a blocking
/// thread, and records in the stats how much of it ran and, when the context interrupted
/// it, how much it did not have to.
pub async fn slow_query(
    app: &Arc<App>,
    ctx: &Context,
    endpoint: &'static str,
) -> Result<i64, ApiError> {
    let stats = app.clone();
    query_with(app, ctx, move |worked, abandoned| {
        stats.stats.backend(endpoint, worked, abandoned)
    })
    .await
}

/// Runs the slow query under `ctx` on a pooled connection, on a blocking thread; when it
/// ran, calls `record` on that thread as it ends (even if this future was dropped) with the
/// part of the planned work done and the part an interrupt saved.
pub async fn query_with(
    app: &Arc<App>,
    ctx: &Context,
    record: impl FnOnce(Duration, Duration) + Send + 'static,
) -> Result<i64, ApiError> {
    let permit = ctx
        .run(app.db.slots.clone().acquire_owned())
        .await?
        .map_err(|_| ApiError::Backend("the database is closed".into()))?;
    let (app, ctx) = (app.clone(), ctx.clone());
    let query = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let conn = app.db.checkout().map_err(db::Error::Sqlite)?;
        let (mut ran, mut steps) = (false, 0);
        let result = db::sqlite::run(&ctx, &conn, |conn| {
            ran = true;
            app.db.started.fetch_add(1, Ordering::Relaxed);
            let mut statement = conn.prepare_cached(SLOW_QUERY)?;
            statement.reset_status(StatementStatus::VmStep);
            let sum = statement.query_row([app.db.rows], |row| row.get(0));
            steps = statement.reset_status(StatementStatus::VmStep);
            sum
        });
        app.db.checkin(conn);
        let planned = app.db.planned;
        match &result {
            _ if !ran => {} // the context ended before the query started
            Err(err) if err.context_error().is_some() => {
                // Interrupted in SQLite: the steps it ran are the part of the work done.
                app.db.interrupted.fetch_add(1, Ordering::Relaxed);
                let done = (f64::from(steps) / app.db.steps).clamp(0.0, 1.0);
                let worked = planned.mul_f64(done);
                record(worked, planned - worked);
            }
            _ => record(planned, Duration::ZERO),
        }
        result
    });
    match query.await {
        Ok(Ok(sum)) => Ok(sum),
        Ok(Err(db::Error::Context(err))) => Err(ApiError::Context(err)),
        Ok(Err(err)) => Err(ApiError::Backend(err.to_string())),
        Err(join) => Err(ApiError::Backend(format!(
            "the query's thread failed: {join}"
        ))),
    }
}
