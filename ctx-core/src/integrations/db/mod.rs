//! Database work under a context: when the context ends, the query stops *on the database*
//! and the connection stays safe to reuse (features `sqlite` and `postgres`; for sqlx 0.8,
//! `sqlx-sqlite` and `sqlx-postgres`: [`sqlx`](mod@sqlx)).
//!
//! Dropping a query's future is not enough: the server (or SQLite, in the same thread) goes
//! on working, and with some drivers the connection is left mid-protocol. Cancelling by hand
//! has a trap of its own: PostgreSQL cancels by *backend*, not by statement, so a cancel
//! that arrives late kills the next query on that connection. Each module here does the
//! whole job:
//!
//! | | `sqlite::run` | `postgres::run` |
//! | --- | --- | --- |
//! | stops the work with | `sqlite3_interrupt` from [`Context::after_func`](crate::Context::after_func) | a cancel request (`CancelToken::cancel_query`) |
//! | the call returns | when the statement has stopped | at once |
//! | a late stop signal | cannot happen: every interrupt is issued before `run` returns | cannot reach anyone: the connection is held until the cancel is delivered |
//! | the connection after a stop | reused | back to the pool once the cancel is delivered and it answers (in the background); else closed |
//!
//! Both return [`Error`]; [`Error::context_error`] says whether the context's end is why.
//!
//! The examples below run with their feature on.
#![cfg_attr(
    feature = "sqlite",
    doc = r#"
# SQLite

```
use std::time::Duration;
use ctx_core::{Context, db};
use ctx_core::db::sqlite::rusqlite::Connection;

let conn = Connection::open_in_memory().unwrap();
conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);").unwrap();

// Under a live context a query is just a query.
let request = Context::background().with_timeout(Duration::from_secs(5));
let sum: i64 = db::sqlite::run(&request, &conn, |conn| {
    conn.query_row("SELECT sum(x) FROM t", [], |row| row.get(0))
})
.unwrap();
assert_eq!(sum, 6);

// A slow one is interrupted when the context ends (here: another thread cancels it).
let (ctx, cancel) = Context::background().with_cancel().into_parts();
std::thread::spawn(move || {
    std::thread::sleep(Duration::from_millis(20));
    cancel.cancel();
});
let err = db::sqlite::run(&ctx, &conn, |conn| {
    conn.query_row(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        [],
        |row| row.get::<_, i64>(0),
    )
})
.unwrap_err();
assert_eq!(err.context_error(), Some(ctx_core::Error::Cancelled));

// A done context runs nothing; the connection is as good as before.
assert!(db::sqlite::run(&ctx, &conn, |_| Ok(())).is_err());
let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).unwrap();
assert_eq!(n, 3);
```

"#
)]
#![cfg_attr(
    feature = "postgres",
    doc = r#"
# PostgreSQL

```no_run
use std::time::Duration;
use ctx_core::{Context, db};
use ctx_core::db::postgres::{deadpool_postgres, tokio_postgres};

# #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
let config: tokio_postgres::Config = std::env::var("DATABASE_URL")?.parse()?;
let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build()?;

let request = Context::background().with_timeout(Duration::from_millis(250));
let rows = db::postgres::run(&request, &pool, async |client| {
    client.query("SELECT relname FROM pg_class LIMIT 5", &[]).await
})
.await?;
println!("{} rows", rows.len());
# Ok(()) }
```

"#
)]
//! `ctx-core/examples/db_sqlite.rs` and `db_postgres.rs` are complete programs.

mod error;
#[cfg(any(feature = "sqlite", feature = "sqlx-sqlite"))]
mod interrupt;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]
pub mod sqlx;

pub use error::Error;

/// Runs `task` on the current tokio runtime, or (dropped outside one) on a thread with a
/// runtime of its own; nobody waits for it. Used for the background part of a cancel.
#[cfg(any(feature = "postgres", feature = "sqlx-postgres"))]
fn spawn_detached(task: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(task)),
        Err(_) => {
            // Rare; if the thread or its runtime cannot start, the task is dropped, which
            // closes the connection it holds.
            let _ = std::thread::Builder::new()
                .name("ctx-db-cancel".into())
                .spawn(move || {
                    if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        runtime.block_on(task);
                    }
                });
        }
    }
}
