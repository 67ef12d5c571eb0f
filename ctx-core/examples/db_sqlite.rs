//! SQLite under a context: a query that fits its deadline, one that does not (interrupted
//! on the database, not just abandoned), and the same connection reused afterwards.
//!
//! `cargo run -p ctx-core --features sqlite --example db_sqlite` (no server needed: SQLite is
//! compiled in).

use std::time::{Duration, Instant};

use ctx_core::db::sqlite::rusqlite::Connection;
use ctx_core::{Context, db};

/// Counts to `?1`, one row at a time: CPU work on the database whose length we choose.
const COUNT: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
                     SELECT count(*) FROM c";

fn count_to(ctx: &Context, conn: &Connection, n: i64) -> Result<i64, db::Error> {
    db::sqlite::run(ctx, conn, |conn| {
        conn.query_row(COUNT, [n], |row| row.get(0))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::open_in_memory()?;

    // 1. A request with time to spare: the query is just a query.
    let request = Context::background().with_timeout(Duration::from_secs(10));
    let started = Instant::now();
    let n = count_to(&request, &conn, 100_000)?;
    println!(
        "counted to {n} in {:.1?} under a 10s deadline",
        started.elapsed()
    );

    // 2. A 100 ms budget for a count that would take minutes: SQLite stops at the deadline.
    let request = Context::background().with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    match count_to(&request, &conn, i64::MAX) {
        Err(err) if err.context_error().is_some() => {
            println!("interrupted after {:.1?}: {err}", started.elapsed());
        }
        Err(err) => return Err(err.into()),
        Ok(n) => return Err(format!("counted to {n}: the deadline should have stopped it").into()),
    }

    // 3. The interrupt stayed with that query: the connection serves the next one.
    let n = count_to(&Context::background(), &conn, 1_000)?;
    println!("the same connection then counted to {n}");
    Ok(())
}
