//! ctx's rusqlite integration and sqlx's SQLite in one test binary: a query through each,
//! and through ctx's sqlx integration.

use std::time::Duration;

use ctx_compat_sqlx::{rusqlite_sum, sqlite_versions, sqlx_sum};
use ctx_core::{Context, db};
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn a_query_runs_through_rusqlite_under_a_context() {
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    assert_eq!(rusqlite_sum(&ctx, 100).unwrap(), 5050);
}

#[test]
fn a_query_runs_through_sqlx() {
    assert_eq!(runtime().block_on(sqlx_sum(100)).unwrap(), 5050);
}

#[test]
fn both_link_the_same_sqlite() {
    let (rusqlite_side, sqlx_side) = runtime().block_on(sqlite_versions()).unwrap();
    assert_eq!(rusqlite_side, sqlx_side);
}

#[test]
fn a_query_runs_through_ctx_on_an_sqlx_connection() {
    runtime().block_on(async {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let ctx = Context::background().with_timeout(Duration::from_secs(30));
        let n: i64 = db::sqlx::sqlite::run(&ctx, &mut conn, async |conn| {
            sqlx::query_scalar("SELECT 6 * 7").fetch_one(conn).await
        })
        .await
        .unwrap();
        assert_eq!(n, 42);
    });
}
