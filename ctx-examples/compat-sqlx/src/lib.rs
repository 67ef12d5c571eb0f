//! ctx's `sqlite` feature next to sqlx's SQLite in one build: this crate depends on both
//! (see its `Cargo.toml`), and its tests run a query through each. It exists to prove that
//! the two resolve to one `libsqlite3-sys` — cargo allows only one crate that links SQLite —
//! so that a service already on sqlx 0.8 can add ctx.
//!
//! [`rusqlite_sum`] and [`sqlx_sum`] are the two paths: the same query, one through
//! `ctx_core::db::sqlite::run` (rusqlite), one through sqlx.

use ctx_core::Context;
use ctx_core::db;
use ctx_core::db::sqlite::rusqlite::Connection;
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

/// The query both paths run: the sum of 1..=n.
const SUM: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) \
                   SELECT sum(x) FROM c";

/// 1 + 2 + … + n through rusqlite, under `ctx` (`ctx_core::db::sqlite::run`).
pub fn rusqlite_sum(ctx: &Context, n: i64) -> Result<i64, db::Error> {
    let conn = Connection::open_in_memory()?;
    db::sqlite::run(ctx, &conn, |conn| {
        conn.query_row(SUM, [n], |row| row.get(0))
    })
}

/// 1 + 2 + … + n through sqlx, on an in-memory connection of its own.
pub async fn sqlx_sum(n: i64) -> Result<i64, sqlx::Error> {
    let mut conn = SqliteConnection::connect("sqlite::memory:").await?;
    let sum: i64 = sqlx::query_scalar(SUM).bind(n).fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(sum)
}

/// The SQLite library version both paths link, as each reports it: they are one library.
pub async fn sqlite_versions() -> Result<(String, String), Box<dyn std::error::Error>> {
    let rusqlite_side = ctx_core::db::sqlite::rusqlite::version().to_owned();
    let mut conn = SqliteConnection::connect("sqlite::memory:").await?;
    let sqlx_side: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await?;
    Ok((rusqlite_side, sqlx_side))
}
