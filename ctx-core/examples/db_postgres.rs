//! PostgreSQL under a context: a `pg_sleep(10)` given a 200 ms budget is cancelled *on the
//! server* at the deadline, its connection goes back to the pool once the server has the
//! cancel (so it can hit no later query), and the pool serves the next query.
//!
//! Needs a server you may connect to:
//!
//! ```sh
//! DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
//!     cargo run -p ctx-core --features postgres --example db_postgres
//! ```
//!
//! (`cargo test -p ctx-core --all-features --test db_postgres` runs it against a throw-away
//! server of its own.)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ctx_core::db::postgres::deadpool_postgres::{Manager, Pool};
use ctx_core::db::postgres::tokio_postgres::{self, NoTls};
use ctx_core::{Context, db};

const SLEEP: &str = "SELECT pg_sleep(10) /* ctx db_postgres example */";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "set DATABASE_URL to a PostgreSQL server, e.g.\n    \
             DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
             cargo run -p ctx-core --features postgres --example db_postgres"
        );
        return ExitCode::from(2);
    };
    match demo(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config: tokio_postgres::Config = url.parse()?;
    let pool = Pool::builder(Manager::new(config, NoTls))
        .max_size(2)
        .build()?;
    let backend = async |client: &mut db::postgres::deadpool_postgres::ClientWrapper| {
        client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .try_get::<_, i32>(0)
    };

    // 1. With time to spare, a query is just a query.
    let request = Context::background().with_timeout(Duration::from_secs(5));
    let first = db::postgres::run(&request, &pool, backend).await?;
    println!("connected; backend {first}");

    // 2. Ten seconds of work, a 200 ms budget.
    let request = Context::background().with_timeout(Duration::from_millis(200));
    let deadline = request.deadline().expect("a timeout sets a deadline");
    let result = db::postgres::run(&request, &pool, async |client| {
        client.execute(SLEEP, &[]).await
    })
    .await;
    let returned = Instant::now().saturating_duration_since(deadline);
    match result {
        Err(err) if err.context_error().is_some() => {
            println!("pg_sleep(10) returned {returned:.1?} after the deadline: {err}")
        }
        Err(err) => return Err(err.into()),
        Ok(_) => return Err("pg_sleep(10) finished within 200 ms?".into()),
    }

    // 3. Ask the server: is it still sleeping?
    let watch = Context::background().with_timeout(Duration::from_secs(5));
    loop {
        let running: i64 = db::postgres::run(&watch, &pool, async |client| {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
                    &[&SLEEP],
                )
                .await?
                .try_get(0)
        })
        .await?;
        if running == 0 {
            let gone = Instant::now().saturating_duration_since(deadline);
            println!("the server stopped it: no pg_sleep running {gone:.1?} after the deadline");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // 4. The cancelled query's connection is back in the pool (or, unconfirmed, replaced).
    let request = Context::background().with_timeout(Duration::from_secs(5));
    let next = db::postgres::run(&request, &pool, backend).await?;
    println!("the next query ran fine (backend {next})");
    Ok(())
}
