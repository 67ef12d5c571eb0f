//! `db::sqlx`: SQLite through sqlx (an interrupt through the connection's raw handle) and
//! PostgreSQL through sqlx (`pg_cancel_backend` from another connection) against real
//! databases: an in-memory SQLite, and a throw-away PostgreSQL cluster per test
//! (`db_support::cluster`). The race tests check that a stop signal never reaches a later
//! statement.

#![cfg(all(
    feature = "sqlx-sqlite",
    feature = "sqlx-postgres",
    feature = "postgres"
))]

mod db_support;

use std::time::{Duration, Instant};

use ctx_core::db::sqlx::sqlx::{
    self, Connection as _, postgres::PgPoolOptions, sqlite::SqliteConnection,
};
use ctx_core::{Context, Error, db};
use db_support::{ms, runtime};

mod sqlite {
    use super::*;

    /// Counts to `n` (`n = 0`: until interrupted).
    async fn count_to(conn: &mut SqliteConnection, n: i64) -> Result<i64, sqlx::Error> {
        let limit = if n == 0 { i64::MAX } else { n };
        sqlx::query_scalar(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
             SELECT count(*) FROM c",
        )
        .bind(limit)
        .fetch_one(conn)
        .await
    }

    async fn open() -> SqliteConnection {
        SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("an in-memory database")
    }

    #[test]
    fn a_live_context_runs_the_statement_and_errors_stay_sqlx_errors() {
        runtime().block_on(async {
            let mut conn = open().await;
            let ctx = Context::background().with_timeout(Duration::from_secs(30));
            let n = db::sqlx::sqlite::run(&ctx, &mut conn, async |c| count_to(c, 1_000).await)
                .await
                .unwrap();
            assert_eq!(n, 1_000);
            let err = db::sqlx::sqlite::run(&ctx, &mut conn, async |c| {
                sqlx::query("SELEC 1").execute(c).await
            })
            .await
            .unwrap_err();
            assert!(matches!(err, db::Error::Sqlx(_)), "{err:?}");
            assert_eq!(err.context_error(), None);
        });
    }

    #[test]
    fn a_done_context_runs_nothing() {
        runtime().block_on(async {
            let mut conn = open().await;
            let ctx = Context::background().with_timeout(Duration::ZERO);
            let err = db::sqlx::sqlite::run(&ctx, &mut conn, async |_| -> Result<(), _> {
                panic!("f ran under a done context")
            })
            .await
            .unwrap_err();
            assert!(
                matches!(err, db::Error::Context(Error::DeadlineExceeded)),
                "{err:?}"
            );
        });
    }

    #[test]
    fn a_deadline_interrupts_the_statement_and_the_connection_works_after() {
        runtime().block_on(async {
            let mut conn = open().await;
            let ctx = Context::background().with_timeout(Duration::from_millis(50));
            let deadline = ctx.deadline().unwrap();
            let err = db::sqlx::sqlite::run(&ctx, &mut conn, async |c| count_to(c, 0).await)
                .await
                .unwrap_err();
            let late = Instant::now().saturating_duration_since(deadline);
            eprintln!(
                "sqlx sqlite: run returned {:.2} ms after the deadline",
                ms(late)
            );
            assert!(
                matches!(err, db::Error::Context(Error::DeadlineExceeded)),
                "{err:?}"
            );
            assert!(late < Duration::from_secs(2), "returned {late:?} late");
            let n = db::sqlx::sqlite::run(&Context::background(), &mut conn, async |c| {
                count_to(c, 10).await
            })
            .await
            .unwrap();
            assert_eq!(n, 10);
        });
    }

    /// Dropping the future interrupts the running statement: the connection serves the
    /// next one at once, not after a count that would take minutes.
    #[test]
    fn dropping_the_future_interrupts_the_statement() {
        runtime().block_on(async {
            let mut conn = open().await;
            let ctx = Context::background();
            let call = db::sqlx::sqlite::run(&ctx, &mut conn, async |c| count_to(c, 0).await);
            assert!(
                tokio::time::timeout(Duration::from_millis(100), call)
                    .await
                    .is_err()
            );
            let next = tokio::time::timeout(Duration::from_secs(5), count_to(&mut conn, 10)).await;
            assert_eq!(next.expect("the statement ran on").unwrap(), 10);
        });
    }

    /// Contexts ended at random points around the end of a short statement; the next
    /// statement on the connection must never be interrupted.
    #[test]
    fn an_interrupt_never_reaches_a_later_statement() {
        const ITERATIONS: usize = 500;
        runtime().block_on(async {
            let mut conn = open().await;
            let rows = 5_000;
            let mut times = Vec::new();
            for _ in 0..7 {
                let t = Instant::now();
                let ctx = Context::background();
                db::sqlx::sqlite::run(&ctx, &mut conn, async |c| count_to(c, rows).await)
                    .await
                    .unwrap();
                times.push(t.elapsed());
            }
            times.sort();
            // How long a call takes, kept current (the machine's load changes it).
            let mut took = times[3];
            let cancel_at = db_support::canceller();
            let (mut cancelled, mut finished) = (0, 0);
            for i in 0..ITERATIONS {
                let (ctx, handle) = Context::background().with_cancel().into_parts();
                cancel_at
                    .send((handle, took.mul_f64(0.5 + fastrand::f64())))
                    .unwrap();
                let started = Instant::now();
                match db::sqlx::sqlite::run(&ctx, &mut conn, async |c| count_to(c, rows).await)
                    .await
                {
                    Ok(n) => {
                        assert_eq!(n, rows);
                        finished += 1;
                        took = took.mul_f64(0.8) + started.elapsed().mul_f64(0.2);
                    }
                    Err(db::Error::Context(Error::Cancelled)) => {
                        cancelled += 1;
                        // Cancelled: perhaps aimed too early for the machine's load now.
                        took = took.mul_f64(1.05);
                    }
                    Err(err) => panic!("iteration {i}: unexpected {err:?}"),
                }
                let next = count_to(&mut conn, 1_000).await;
                assert_eq!(
                    next.ok(),
                    Some(1_000),
                    "iteration {i}: the next statement failed"
                );
                // The cancel has happened, so the canceller is not behind for the next one.
                ctx.done().await;
            }
            eprintln!(
                "sqlx sqlite: {ITERATIONS} iterations on a {:.2} ms statement: {cancelled} \
                 interrupted, {finished} finished; no later statement interrupted",
                ms(took)
            );
            assert!(
                cancelled >= ITERATIONS / 50 && finished >= ITERATIONS / 50,
                "{cancelled} cancelled, {finished} finished: the cancels missed the window"
            );
        });
    }
}

mod postgres {
    use sqlx::postgres::{PgConnection, PgPool};

    use super::db_support::activity::{gone_after, monitor, reconnects_for_timeouts, wait_running};
    use super::db_support::cluster::Cluster;
    use super::*;

    async fn pool(cluster: &Cluster, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .connect(&cluster.url())
            .await
            .expect("a pool")
    }

    async fn backend_pid(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
    }

    #[test]
    fn queries_run_and_connections_are_reused_under_a_live_context() {
        let cluster = Cluster::start();
        runtime().block_on(async {
            let pool = pool(&cluster, 1).await;
            let ctx = Context::background().with_timeout(Duration::from_secs(30));
            let first = db::sqlx::postgres::run(&ctx, &pool, backend_pid)
                .await
                .unwrap();
            let again = db::sqlx::postgres::run(&ctx, &pool, backend_pid)
                .await
                .unwrap();
            assert_eq!(first, again);
            let err = db::sqlx::postgres::run(&ctx, &pool, async |c| {
                sqlx::query("SELEC 1").execute(c).await
            })
            .await
            .unwrap_err();
            assert!(matches!(err, db::Error::Sqlx(_)), "{err:?}");
            assert!(err.to_string().starts_with("sqlx: "), "{err}");
            let after = db::sqlx::postgres::run(&ctx, &pool, backend_pid)
                .await
                .unwrap();
            assert_eq!(first, after, "a server error keeps the connection");
            let expired = Context::background().with_timeout(Duration::ZERO);
            let err = db::sqlx::postgres::run(&expired, &pool, backend_pid)
                .await
                .unwrap_err();
            assert!(
                matches!(err, db::Error::Context(Error::DeadlineExceeded)),
                "{err:?}"
            );
        });
    }

    /// `pg_sleep(10)` under a 300 ms deadline: `run` returns at the deadline, the server
    /// shows the query gone soon after, and the connection (confirmed cancelled) goes back
    /// to the pool: the next query runs on the same backend.
    #[test]
    fn a_deadline_cancels_on_the_server_and_the_connection_is_reused() {
        let cluster = Cluster::start();
        runtime().block_on(async {
            let pool = pool(&cluster, 1).await;
            let monitor = monitor(&cluster).await;
            let pid = db::sqlx::postgres::run(&Context::background(), &pool, backend_pid)
                .await
                .unwrap();
            for round in 0..3 {
                let query = format!("SELECT pg_sleep(10) /* sqlx round {round} */");
                let ctx = Context::background().with_timeout(Duration::from_millis(300));
                let deadline = ctx.deadline().unwrap();
                let (result, ()) = tokio::join!(
                    db::sqlx::postgres::run(&ctx, &pool, async |c| {
                        sqlx::query(&query).execute(c).await
                    }),
                    wait_running(&monitor, &query)
                );
                let returned = Instant::now().saturating_duration_since(deadline);
                let err = result.unwrap_err();
                assert!(
                    matches!(err, db::Error::Context(Error::DeadlineExceeded)),
                    "{err:?}"
                );
                let gone = gone_after(&monitor, &query, deadline).await;
                eprintln!(
                    "sqlx round {round}: returned {:.2} ms after the deadline; query gone \
                     {:.2} ms after it",
                    ms(returned),
                    ms(gone)
                );
                assert!(
                    returned < Duration::from_secs(1),
                    "returned {returned:?} late"
                );
                assert!(
                    gone < Duration::from_secs(2),
                    "still running {gone:?} later"
                );
                let ctx = Context::background().with_timeout(Duration::from_secs(10));
                let next = db::sqlx::postgres::run(&ctx, &pool, backend_pid)
                    .await
                    .unwrap();
                assert_eq!(
                    next, pid,
                    "the confirmed-cancelled connection was not reused"
                );
            }
        });
    }

    /// Dropping `run`'s future mid-query (a handler whose client went away) cancels on the
    /// server just the same, and the pool of one still serves.
    #[test]
    fn dropping_the_future_cancels_the_query_too() {
        let cluster = Cluster::start();
        runtime().block_on(async {
            let pool = pool(&cluster, 1).await;
            let monitor = monitor(&cluster).await;
            let query = "SELECT pg_sleep(10) /* sqlx dropped */";
            let ctx = Context::background();
            let call =
                db::sqlx::postgres::run(&ctx, &pool, async |c| sqlx::query(query).execute(c).await);
            let timed_out = tokio::time::timeout(Duration::from_millis(300), async {
                tokio::join!(call, wait_running(&monitor, query)).0
            })
            .await;
            let dropped_at = Instant::now();
            assert!(timed_out.is_err(), "pg_sleep(10) finished?");
            let gone = gone_after(&monitor, query, dropped_at).await;
            assert!(
                gone < Duration::from_secs(2),
                "still running {gone:?} after the drop"
            );
            let ctx = Context::background().with_timeout(Duration::from_secs(10));
            db::sqlx::postgres::run(&ctx, &pool, backend_pid)
                .await
                .unwrap();
        });
    }

    /// The context ends after `f`'s query has finished: nothing confirms that the cancel
    /// is spent, so the connection is closed and the pool opens another.
    #[test]
    fn a_cancel_that_finds_no_query_closes_the_connection() {
        let cluster = Cluster::start();
        runtime().block_on(async {
            let pool = pool(&cluster, 1).await;
            let ctx = Context::background().with_timeout(Duration::from_millis(100));
            let used = std::sync::Mutex::new(None);
            let err = db::sqlx::postgres::run(&ctx, &pool, async |c| {
                *used.lock().unwrap() = Some(backend_pid(c).await?);
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
            assert!(err.context_error().is_some(), "{err:?}");
            let used = used.lock().unwrap().expect("f ran its query");
            // The pool (of one) waits for the background part, which closes that
            // connection: the next query runs on a new backend, unharmed.
            let ctx = Context::background().with_timeout(Duration::from_secs(10));
            let next = db::sqlx::postgres::run(&ctx, &pool, backend_pid)
                .await
                .unwrap();
            assert_ne!(
                next, used,
                "a connection whose cancel is unaccounted for was reused"
            );
            let slept = db::sqlx::postgres::run(&Context::background(), &pool, async |c| {
                sqlx::query("SELECT pg_sleep(0.05)").execute(c).await
            })
            .await;
            assert!(slept.is_ok(), "{slept:?}");
        });
    }

    /// 800 requests that time out mid-query on a pool of 16: cancelled connections go back
    /// to the pool, and the cancels go out on the pool's idle connections or its one
    /// canceller. Prints the count of sessions the server started after the pool's 16.
    #[test]
    fn timeouts_mid_query_do_not_reconnect() {
        const REQUESTS: usize = 800;
        const POOL: usize = 16;
        let cluster = Cluster::start();
        runtime().block_on(async {
            let pool = pool(&cluster, POOL as u32).await;
            let warm: Vec<_> = (0..POOL)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        db::sqlx::postgres::run(&Context::background(), &pool, async |c| {
                            sqlx::query("SELECT pg_sleep(0.5)").execute(c).await
                        })
                        .await
                    })
                })
                .collect();
            for task in warm {
                task.await.unwrap().unwrap();
            }
            let query = move |ctx: Context| {
                let pool = pool.clone();
                async move {
                    db::sqlx::postgres::run(&ctx, &pool, async |c| {
                        sqlx::query("SELECT pg_sleep(10)").execute(c).await
                    })
                    .await
                }
            };
            let reconnects = reconnects_for_timeouts(&cluster, POOL, REQUESTS, query).await;
            eprintln!(
                "sqlx: {REQUESTS} requests on a pool of {POOL}, each timed out: the server \
                 started {reconnects} new sessions"
            );
            assert!(
                reconnects < 100,
                "{reconnects} reconnects for {REQUESTS} cancelled queries"
            );
        });
    }

    /// lib/pq#1001 for sqlx: contexts ended at random points around the end of a short
    /// query on a pool of one; the next query through the pool must never be cancelled.
    #[test]
    fn a_late_cancel_never_reaches_a_later_query() {
        const ITERATIONS: usize = 400;
        let cluster = Cluster::start();
        runtime().block_on(async {
            let pool = pool(&cluster, 1).await;
            let short = "SELECT pg_sleep(0.002)";
            let next = "SELECT pg_sleep(0.005)";
            let run = async |ctx: &Context, query: &str| {
                db::sqlx::postgres::run(ctx, &pool, async |c| sqlx::query(query).execute(c).await)
                    .await
            };
            run(&Context::background(), short).await.unwrap();
            let mut times = Vec::new();
            for _ in 0..7 {
                let t = Instant::now();
                run(&Context::background(), short).await.unwrap();
                times.push(t.elapsed());
            }
            times.sort();
            // How long a call takes, kept current (the machine's load changes it).
            let mut took = times[3];
            let cancel_at = db_support::canceller();
            let (mut cancelled, mut finished) = (0, 0);
            for i in 0..ITERATIONS {
                let (ctx, handle) = Context::background().with_cancel().into_parts();
                cancel_at
                    .send((handle, took.mul_f64(0.5 + fastrand::f64())))
                    .unwrap();
                let started = Instant::now();
                match run(&ctx, short).await {
                    Ok(_) => {
                        finished += 1;
                        took = took.mul_f64(0.8) + started.elapsed().mul_f64(0.2);
                    }
                    Err(db::Error::Context(Error::Cancelled)) => {
                        cancelled += 1;
                        took = took.mul_f64(1.05);
                    }
                    Err(err) => panic!("iteration {i}: unexpected {err:?}"),
                }
                if let Err(err) = run(&Context::background(), next).await {
                    panic!(
                        "iteration {i}: the next query failed ({cancelled} cancelled, \
                         {finished} finished so far): {err:?}"
                    );
                }
                ctx.done().await;
            }
            eprintln!(
                "sqlx postgres: {ITERATIONS} iterations on a {:.2} ms query: {cancelled} \
                 cancelled, {finished} finished; no later query cancelled",
                ms(took)
            );
            assert!(
                cancelled >= ITERATIONS / 50 && finished >= ITERATIONS / 50,
                "{cancelled} cancelled, {finished} finished: the cancels missed the window"
            );
        });
    }
}
