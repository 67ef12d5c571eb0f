//! `testing::explore_cancellation{,_blocking}`: the points are every check and raced await
//! on the explored context and its descendants, on any thread, in order; one run per point
//! cancels there; a panic names the point; unrelated contexts checked at the same time (on
//! other threads, or in another exploration) are never counted.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctx_core::testing::{explore_cancellation, explore_cancellation_blocking};
use ctx_core::{Context, ContextKey, Error, cancellable};

#[derive(ContextKey)]
struct Tag(#[allow(dead_code)] u32);

fn lines(points: &[&'static Location<'static>]) -> Vec<u32> {
    points
        .iter()
        .inspect(|at| assert_eq!(at.file(), file!()))
        .map(|at| at.line())
        .collect()
}

#[test]
fn every_check_is_a_point_in_order_and_each_run_cancels_at_its_own() {
    let first = line!() + 5; // the lines of the three checks below
    let seen = Mutex::new(Vec::new());
    let explored = explore_cancellation_blocking(|ctx: Context| {
        let child = ctx.with_value(Tag(1));
        let saw = vec![
            ctx.checkpoint().err(),
            child.err(),
            child.is_cancelled().then_some(Error::Cancelled),
        ];
        seen.lock().unwrap().push(saw);
    });
    assert_eq!(lines(explored.points()), [first, first + 1, first + 2]);
    let none = None;
    let cancelled = Some(Error::Cancelled);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            vec![none, none, none],
            vec![cancelled, cancelled, cancelled],
            vec![none, cancelled, cancelled],
            vec![none, none, cancelled],
        ]
    );
}

#[test]
fn derived_contexts_and_other_threads_count_and_a_body_without_points_runs_once() {
    let explored = explore_cancellation_blocking(|ctx: Context| {
        let timed = ctx.with_timeout(Duration::from_secs(60));
        let child = timed.with_cancel();
        let cancelled = std::thread::scope(|s| {
            s.spawn(|| child.checkpoint().is_err() || timed.is_cancelled())
                .join()
                .unwrap()
        });
        // A context that does not descend from the explored one: never a point.
        let unrelated = Context::background().with_cancel();
        assert!(!unrelated.is_cancelled());
        let _ = ctx.without_cancel().is_cancelled(); // cancellation does not pass: no point
        cancelled
    });
    assert_eq!(explored.points().len(), 2);

    let runs = AtomicUsize::new(0);
    let explored = explore_cancellation_blocking(|_ctx| runs.fetch_add(1, Ordering::SeqCst));
    assert!(explored.points().is_empty());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn checks_of_unrelated_contexts_in_parallel_are_never_points() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let own = Context::background().with_timeout(Duration::from_secs(600));
                let child = own.with_value(Tag(2));
                let mut checks = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert!(!child.is_cancelled() && child.err().is_none());
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    // And another exploration at the same time, with points of its own.
    let other = std::thread::spawn(|| {
        (0..20)
            .map(|_| {
                explore_cancellation_blocking(|ctx: Context| {
                    let _ = ctx.checkpoint();
                })
                .points()
                .len()
            })
            .collect::<Vec<_>>()
    });
    for _ in 0..20 {
        let explored = explore_cancellation_blocking(|ctx: Context| {
            for _ in 0..5 {
                if ctx.is_cancelled() {
                    return;
                }
                std::thread::yield_now();
            }
        });
        assert_eq!(explored.points().len(), 5);
    }
    assert_eq!(other.join().unwrap(), vec![1; 20]);
    stop.store(true, Ordering::Relaxed);
    for thread in busy {
        assert!(thread.join().unwrap() > 0);
    }
}

#[test]
fn a_panic_names_the_point_and_keeps_the_body_s_message() {
    let line = line!() + 4; // the second checkpoint's
    let panicked = std::panic::catch_unwind(|| {
        explore_cancellation_blocking(|ctx: Context| {
            let first = ctx.checkpoint();
            let second = ctx.checkpoint(); // at `line`
            assert!(
                first.is_err() || second.is_ok(),
                "the second step saw {second:?}"
            );
        })
    })
    .unwrap_err();
    let message = panicked.downcast_ref::<String>().unwrap();
    assert!(message.contains("point 1"), "{message}");
    assert!(
        message.contains(&format!("{}:{}:", file!(), line)),
        "{message}"
    );
    assert!(
        message.contains("the second step saw Err(Cancelled)"),
        "{message}"
    );
    // The run that finds the points panicking is reported as such.
    let panicked = std::panic::catch_unwind(|| {
        explore_cancellation_blocking(|_ctx: Context| panic!("broken before any point"))
    })
    .unwrap_err();
    let message = panicked.downcast_ref::<String>().unwrap();
    assert!(message.contains("broken before any point"), "{message}");
}

async fn two_calls(ctx: &Context, log: &Mutex<Vec<&'static str>>) -> Result<(), Error> {
    let push = |step| async move { log.lock().unwrap().push(step) };
    ctx.run(push("debit")).await?;
    tokio::task::yield_now().await;
    ctx.run(push("credit")).await?;
    Ok(())
}

#[tokio::test]
async fn a_raced_await_is_a_point_at_its_first_poll() {
    let line = line!() - 8;
    let logs = Mutex::new(Vec::new());
    let explored = explore_cancellation(|ctx| {
        let logs = &logs;
        async move {
            let log = Mutex::new(Vec::new());
            let done = two_calls(&ctx, &log).await;
            logs.lock().unwrap().push((done, log.into_inner().unwrap()));
        }
    })
    .await;
    assert_eq!(lines(explored.points()), [line, line + 2]);
    assert_eq!(
        logs.into_inner().unwrap(),
        [
            (Ok(()), vec!["debit", "credit"]),
            (Err(Error::Cancelled), vec![]),
            (Err(Error::Cancelled), vec!["debit"]),
        ]
    );
}

#[cancellable]
async fn fetch_all(ctx: &Context, n: usize) -> Result<usize, Error> {
    let mut total = 0;
    for _ in 0..n {
        total += std::future::ready(1).await;
    }
    Ok(total)
}

#[tokio::test]
async fn cancellable_awaits_and_loops_are_points_at_the_user_s_lines() {
    let line = line!() - 10;
    let explored = explore_cancellation(|ctx| async move {
        match fetch_all(&ctx, 2).await {
            Ok(total) => assert_eq!(total, 2),
            Err(err) => assert_eq!(err, Error::Cancelled),
        }
    })
    .await;
    // Each iteration: the loop's checkpoint, then the await.
    assert_eq!(
        lines(explored.points()),
        [line + 2, line + 3, line + 2, line + 3]
    );
}

#[tokio::test(start_paused = true)]
async fn exploring_works_on_a_paused_clock_and_across_tasks() {
    let ended = Mutex::new(Vec::new());
    let explored = explore_cancellation(|ctx| {
        let ended = &ended;
        async move {
            let theirs = ctx.clone();
            let task = tokio::spawn(async move {
                theirs.run(tokio::time::sleep(Duration::from_secs(5))).await
            });
            let timed = ctx.with_timeout(Duration::from_secs(60));
            let slept = timed.run(tokio::time::sleep(Duration::from_secs(30))).await;
            let joined = task.await.unwrap();
            ended.lock().unwrap().push((slept, joined));
        }
    })
    .await;
    assert_eq!(explored.points().len(), 2, "{explored:?}");
    // Cancelled at either point, the root is cancelled: both races end at once.
    let cancelled = Err(Error::Cancelled);
    assert_eq!(
        ended.into_inner().unwrap(),
        [
            (Ok(()), Ok(())),
            (cancelled, cancelled),
            (cancelled, cancelled)
        ]
    );
}

#[cancellable]
async fn handler_without_a_context_parameter() -> Result<u32, Error> {
    let a = std::future::ready(1).await;
    let b = std::future::ready(2).await;
    Ok(a + b)
}

#[tokio::test]
async fn the_body_s_context_is_also_the_current_one() {
    let explored = explore_cancellation(|_ctx| async {
        let _ = handler_without_a_context_parameter().await;
    })
    .await;
    assert_eq!(explored.points().len(), 2, "{explored:?}");
    let explored = explore_cancellation_blocking(|_ctx| Context::current().is_cancelled());
    assert_eq!(explored.points().len(), 1);
}

#[tokio::test]
async fn waiting_and_formatting_are_not_points() {
    let explored = explore_cancellation(|ctx| async move {
        let _ = format!("{ctx} {ctx:?}");
        let timed = ctx.with_timeout(Duration::from_millis(1));
        let _ = timed.done().await;
        let _ = timed.wait_timeout(Duration::from_millis(1));
        let _ = ctx.checkpoint(); // the one point
    })
    .await;
    assert_eq!(explored.points().len(), 1, "{explored:?}");
}

#[tokio::test]
async fn an_exploration_is_a_send_future_and_its_result_is_send_and_sync() {
    fn send<T: Send>(value: T) -> T {
        value
    }
    let explored = tokio::spawn(send(explore_cancellation(|ctx| async move {
        let _ = ctx.run(tokio::task::yield_now()).await;
    })))
    .await
    .unwrap();
    let shared: &(dyn Send + Sync) = &explored;
    let _ = shared;
    assert_eq!(explored.points().len(), 1);
}
