//! `db::sqlite::run`: statements interrupted when their context ends, errors told apart,
//! the connection reusable afterwards, and (the race test) no interrupt ever reaching a
//! statement that runs after `run` returned.

#![cfg(feature = "sqlite")]

mod db_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ctx_core::db::sqlite::rusqlite::{self, Connection};
use ctx_core::{Context, Error, db};

/// Counts to `n` in SQLite: CPU work whose length `n` sets (about 10 ns a row in release,
/// more in debug builds). `n = 0` runs until interrupted.
fn count_to(conn: &Connection, n: u64) -> rusqlite::Result<i64> {
    let limit = if n == 0 { i64::MAX } else { n as i64 };
    conn.prepare_cached(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
         SELECT count(*) FROM c",
    )?
    .query_row([limit], |row| row.get(0))
}

fn open() -> Connection {
    Connection::open_in_memory().expect("an in-memory database")
}

#[test]
fn a_live_context_runs_the_statement() {
    let conn = open();
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    assert_eq!(
        db::sqlite::run(&ctx, &conn, |c| count_to(c, 1_000)).unwrap(),
        1_000
    );
    assert_eq!(
        db::sqlite::run(&Context::background(), &conn, |c| count_to(c, 10)).unwrap(),
        10
    );
}

#[test]
fn a_done_context_runs_nothing() {
    let conn = open();
    let ran = AtomicBool::new(false);
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let err = db::sqlite::run(&ctx, &conn, |_| {
        ran.store(true, Ordering::SeqCst);
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(err, db::Error::Context(Error::Cancelled)),
        "{err:?}"
    );
    assert!(!ran.load(Ordering::SeqCst), "f ran under a done context");

    let expired = Context::background().with_timeout(Duration::ZERO);
    let err = db::sqlite::run(&expired, &conn, |c| count_to(c, 10)).unwrap_err();
    assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
}

#[test]
fn a_deadline_interrupts_the_statement_and_the_connection_works_after() {
    let conn = open();
    let deadline = Duration::from_millis(50);
    let ctx = Context::background().with_timeout(deadline);
    let started = Instant::now();
    let err = db::sqlite::run(&ctx, &conn, |c| count_to(c, 0)).unwrap_err();
    let late = started.elapsed().saturating_sub(deadline);
    assert_eq!(
        err.context_error(),
        Some(Error::DeadlineExceeded),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "database work stopped: context deadline exceeded"
    );
    eprintln!(
        "interrupted {:.2} ms after the deadline",
        late.as_secs_f64() * 1e3
    );
    assert!(
        late < Duration::from_millis(500),
        "interrupted {late:?} late"
    );
    // The next statements on the same connection run normally, with or without a context.
    assert_eq!(count_to(&conn, 50_000).unwrap(), 50_000);
    let fresh = Context::background().with_timeout(Duration::from_secs(30));
    assert_eq!(
        db::sqlite::run(&fresh, &conn, |c| count_to(c, 50_000)).unwrap(),
        50_000
    );
}

#[test]
fn a_cancel_from_another_thread_interrupts_and_reports_cancelled() {
    let conn = open();
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        cancel.cancel();
    });
    let err = db::sqlite::run(&ctx, &conn, |c| count_to(c, 0)).unwrap_err();
    canceller.join().unwrap();
    assert!(
        matches!(err, db::Error::Context(Error::Cancelled)),
        "{err:?}"
    );
    assert_eq!(count_to(&conn, 1_000).unwrap(), 1_000);
}

#[test]
fn statements_that_ignore_the_interrupt_are_interrupted_again() {
    // `f` swallows the first interrupt and starts another endless statement: the
    // after-func keeps interrupting until `run` returns.
    let conn = open();
    let ctx = Context::background().with_timeout(Duration::from_millis(30));
    let started = Instant::now();
    let err = db::sqlite::run(&ctx, &conn, |c| {
        let first = count_to(c, 0);
        assert!(first.is_err(), "the endless count ended by itself");
        count_to(c, 0)
    })
    .unwrap_err();
    assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(count_to(&conn, 1_000).unwrap(), 1_000);
}

#[test]
fn sqlite_errors_stay_sqlite_errors() {
    let conn = open();
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let err = db::sqlite::run(&ctx, &conn, |c| c.execute("SELEC nonsense", [])).unwrap_err();
    assert!(matches!(err, db::Error::Sqlite(_)), "{err:?}");
    assert_eq!(err.context_error(), None);
    assert!(err.to_string().starts_with("sqlite: "), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    // A constraint failure, then the connection goes on.
    let err = db::sqlite::run(&ctx, &conn, |c| {
        c.execute_batch("CREATE TABLE t(x UNIQUE); INSERT INTO t VALUES (1);")?;
        c.execute("INSERT INTO t VALUES (1)", [])
    })
    .unwrap_err();
    assert!(matches!(err, db::Error::Sqlite(_)), "{err:?}");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_result_that_made_it_is_returned_even_if_the_context_ended_meanwhile() {
    // The work is done (a write committed): reporting it as cancelled would invite a retry.
    let conn = open();
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    let value = db::sqlite::run(&ctx, &conn, move |c| {
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
        scope.cancel(); // ends the context after the last statement
        std::thread::sleep(Duration::from_millis(5)); // let the after-func interrupt
        Ok(7)
    })
    .unwrap();
    assert_eq!(value, 7);
    assert_eq!(count_to(&conn, 10_000).unwrap(), 10_000);
}

#[test]
fn a_panic_in_f_disarms_the_interrupt() {
    let conn = open();
    let scope = Context::background().with_cancel();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db::sqlite::run(&scope, &conn, |_| -> rusqlite::Result<()> {
            panic!("boom")
        })
    }));
    assert!(panicked.is_err());
    scope.cancel(); // after `run` unwound: must reach nothing
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(count_to(&conn, 200_000).unwrap(), 200_000);
}

/// The race the guard exists for: a context that ends just as `f` finishes. Its
/// after-func runs on another thread a moment later; without the guard, that late
/// `interrupt()` lands on whatever statement the connection runs next. Each iteration
/// ends a context at a random point around the end of a short statement, then at once runs
/// the next statement on the same connection, which must never be interrupted.
#[test]
fn an_interrupt_never_reaches_a_later_statement() {
    const ITERATIONS: usize = 2_000;
    let conn = open();
    // A short statement (~200 µs) whose end the cancels aim at; the next one is 4x longer.
    let call = |n| {
        let scope = Context::background().with_cancel();
        let t = Instant::now();
        db::sqlite::run(&scope, &conn, |c| count_to(c, n)).unwrap();
        t.elapsed()
    };
    let median = |n| {
        let mut times: Vec<Duration> = (0..5).map(|_| call(n)).collect();
        times.sort();
        times[2]
    };
    let mut short = 100;
    while median(short) < Duration::from_micros(200) && short < 10_000_000 {
        short *= 2;
    }
    let took = median(short);
    let cancel_at = db_support::canceller();
    let (mut interrupted, mut finished) = (0, 0);
    for i in 0..ITERATIONS {
        let (ctx, handle) = Context::background().with_cancel().into_parts();
        // Aim the cancels at the call's end: [0.5, 1.3] x its usual length.
        let delay = took.mul_f64(0.5 + 0.8 * fastrand::f64());
        cancel_at.send((handle, delay)).unwrap();
        match db::sqlite::run(&ctx, &conn, |c| count_to(c, short)) {
            Ok(n) => {
                assert_eq!(n, short as i64);
                finished += 1;
            }
            Err(db::Error::Context(Error::Cancelled)) => interrupted += 1,
            Err(err) => panic!("iteration {i}: unexpected {err:?}"),
        }
        // The next statement on the connection, with no context: must run to its end.
        if let Err(err) = count_to(&conn, short * 4) {
            panic!(
                "iteration {i}: a late interrupt hit the next statement: {err} \
                 ({interrupted} interrupted, {finished} finished so far)"
            );
        }
        ctx.wait(); // the cancel has happened (the after-func may still be running)
    }
    eprintln!(
        "{ITERATIONS} iterations on a {:.0} µs call: {interrupted} interrupted, \
         {finished} finished; no later statement interrupted",
        took.as_secs_f64() * 1e6
    );
    // Both sides of the race were exercised, not just one.
    assert!(
        interrupted >= ITERATIONS / 50 && finished >= ITERATIONS / 50,
        "{interrupted} interrupted, {finished} finished: the cancels missed the race window"
    );
}

#[test]
fn the_example_runs() {
    let out = db_support::output(&mut db_support::example("db_sqlite"));
    assert!(out.status.success(), "{}", db_support::describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("interrupted after"),
        "{}",
        db_support::describe(&out)
    );
}

/// `run_async`: the context (deadline and values) reaches `f` on the blocking pool, a
/// deadline interrupts the statement there, and the connection is reusable.
#[cfg(feature = "tokio")]
mod run_async {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use ctx_core::{Context, ContextKey, Error, db};
    use tokio::sync::Mutex;

    use super::db_support::runtime;
    use super::{count_to, open, rusqlite};

    #[derive(ContextKey)]
    struct Tenant(u32);

    #[test]
    fn runs_on_the_blocking_pool_under_the_context() {
        runtime().block_on(async {
            let conn = Arc::new(Mutex::new(open()));
            let ctx = Context::background()
                .with_value(Tenant(7))
                .with_timeout(Duration::from_secs(30));
            let deadline = ctx.deadline();
            let (n, tenant, seen_deadline) = db::sqlite::run_async(&ctx, &conn, |c| {
                let current = Context::current();
                let tenant = current.value::<Tenant>().map(|t| t.0);
                Ok((count_to(c, 1_000)?, tenant, current.deadline()))
            })
            .await
            .unwrap();
            assert_eq!(n, 1_000);
            assert_eq!(tenant, Some(7), "the context's values reach f");
            assert_eq!(seen_deadline, deadline, "the context's deadline reaches f");
        });
    }

    #[test]
    fn a_deadline_interrupts_the_statement() {
        runtime().block_on(async {
            let conn = Arc::new(Mutex::new(open()));
            let ctx = Context::background().with_timeout(Duration::from_millis(50));
            let started = Instant::now();
            let err = db::sqlite::run_async(&ctx, &conn, |c| count_to(c, 0))
                .await
                .unwrap_err();
            assert!(
                matches!(err, db::Error::Context(Error::DeadlineExceeded)),
                "{err:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
            // The connection is fine for the next statement.
            let n = db::sqlite::run_async(&Context::background(), &conn, |c| count_to(c, 10))
                .await
                .unwrap();
            assert_eq!(n, 10);
        });
    }

    #[test]
    fn waiting_for_the_lock_ends_with_the_context() {
        runtime().block_on(async {
            let conn = Arc::new(Mutex::new(open()));
            let held = conn.clone().lock_owned().await;
            let ctx = Context::background().with_timeout(Duration::from_millis(50));
            let err = db::sqlite::run_async(&ctx, &conn, |_| -> rusqlite::Result<()> {
                panic!("f ran without the lock")
            })
            .await
            .unwrap_err();
            assert!(
                matches!(err, db::Error::Context(Error::DeadlineExceeded)),
                "{err:?}"
            );
            drop(held);
        });
    }

    /// Dropping the future (a handler whose client went away) interrupts the statement:
    /// the lock comes free soon after, not when a minutes-long count would end.
    #[test]
    fn dropping_the_future_interrupts_the_statement() {
        runtime().block_on(async {
            let conn = Arc::new(Mutex::new(open()));
            let ctx = Context::background();
            let call = db::sqlite::run_async(&ctx, &conn, |c| count_to(c, 0));
            assert!(
                tokio::time::timeout(Duration::from_millis(100), call)
                    .await
                    .is_err(),
                "an endless count ended"
            );
            let relocked = tokio::time::timeout(Duration::from_secs(5), conn.lock()).await;
            assert!(relocked.is_ok(), "the statement ran on after the drop");
        });
    }

    #[test]
    fn a_panic_in_f_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            runtime().block_on(async {
                let conn = Arc::new(Mutex::new(open()));
                let _ = db::sqlite::run_async(
                    &Context::background(),
                    &conn,
                    |_| -> rusqlite::Result<()> { panic!("boom in f") },
                )
                .await;
            })
        });
        let payload = caught.expect_err("the panic was swallowed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in f"));
    }
}
