//! Feature `test-util`: inside a runtime whose clock is paused, every ctx deadline is on
//! tokio's clock (auto-advance, `advance`, `with_deadline`, `#[cancellable(timeout)]`,
//! `wait_timeout`, the layers' budgets and the `grpc-timeout` they send); with a running
//! clock, or outside a runtime, deadlines stay on the real clock.

use std::convert::Infallible;
use std::time::Duration;

use ctx_core::http::{ContextLayer, GRPC_TIMEOUT, PropagateDeadlineLayer, parse_grpc_timeout};
use ctx_core::{Context, Error, cancellable};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

/// Real time a paused test may take, however loaded the machine: far below the deadlines
/// it waits for.
const REAL: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn a_timeout_ends_when_tokio_s_clock_passes_it_not_before() {
    let real = std::time::Instant::now();
    let scope = Context::background().with_timeout(Duration::from_secs(30));
    advance(Duration::from_secs(29)).await;
    assert_eq!(scope.err(), None);
    advance(Duration::from_millis(999)).await;
    assert_eq!(scope.err(), None);
    advance(Duration::from_millis(1)).await;
    assert_eq!(scope.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        scope.cause().unwrap().to_string(),
        "context deadline exceeded"
    );
    assert!(real.elapsed() < REAL);
}

#[tokio::test(start_paused = true)]
async fn deadlines_and_budgets_agree_with_tokio_s_clock() {
    advance(Duration::from_secs(3600)).await; // tokio's clock an hour ahead of the real one
    let start = Instant::now();
    let scope = Context::background().with_timeout(Duration::from_secs(30));
    assert_eq!(
        scope.deadline(),
        Some((start + Duration::from_secs(30)).into_std())
    );
    assert_eq!(Context::now(), start.into_std());
    let at = Instant::now() + Duration::from_secs(5);
    let by_instant = Context::background().with_deadline(at.into_std());
    advance(Duration::from_secs(5)).await;
    assert_eq!(by_instant.err(), Some(Error::DeadlineExceeded));
    assert_eq!(scope.err(), None);
    let left = scope.deadline().unwrap() - Context::now();
    assert_eq!(left, Duration::from_secs(25));
}

#[tokio::test(start_paused = true)]
async fn auto_advance_jumps_to_a_ctx_deadline_when_nothing_else_is_pending() {
    let real = std::time::Instant::now();
    let start = Instant::now();
    let scope = Context::background().with_timeout(Duration::from_secs(3600));
    assert_eq!(scope.done().await, Error::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    assert_eq!(
        Context::background()
            .with_timeout(Duration::from_secs(60))
            .run(std::future::pending::<()>())
            .await,
        Err(Error::DeadlineExceeded)
    );
    assert!(real.elapsed() < REAL);
}

#[tokio::test(start_paused = true)]
async fn a_ctx_deadline_beats_a_later_tokio_sleep_in_select() {
    let scope = Context::background().with_timeout(Duration::from_secs(10));
    let start = Instant::now();
    let winner = tokio::select! {
        err = scope.done() => format!("ctx: {err}"),
        () = tokio::time::sleep(Duration::from_secs(20)) => "sleep".to_owned(),
    };
    assert_eq!(winner, "ctx: context deadline exceeded");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    // And the other way round: a sooner sleep wins.
    let scope = Context::background().with_timeout(Duration::from_secs(20));
    let winner = tokio::select! {
        _ = scope.done() => "ctx",
        () = tokio::time::sleep(Duration::from_secs(10)) => "sleep",
    };
    assert_eq!(winner, "sleep");
    assert_eq!(scope.err(), None);
}

#[tokio::test(start_paused = true)]
async fn advance_fires_exactly_the_deadlines_it_passes() {
    let scopes: Vec<_> = (1..=6)
        .map(|i| Context::background().with_timeout(Duration::from_secs(5 * i)))
        .collect();
    let ended = || scopes.iter().filter(|s| s.is_cancelled()).count();
    assert_eq!(ended(), 0);
    advance(Duration::from_secs(10)).await;
    assert_eq!(ended(), 2);
    advance(Duration::from_secs(14)).await;
    assert_eq!(ended(), 4);
    advance(Duration::from_secs(1)).await;
    assert_eq!(ended(), 5);
    // A child whose parent's deadline is sooner ends with it.
    let parent = Context::background().with_timeout(Duration::from_secs(1));
    let child = parent.with_timeout(Duration::from_secs(100));
    let value_child = parent.with_cancel();
    advance(Duration::from_secs(1)).await;
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(value_child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ended(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_or_cancelled_deadline_never_fires() {
    let scope = Context::background().with_timeout(Duration::from_secs(5));
    let ctx = scope.context().clone();
    scope.cancel();
    advance(Duration::from_secs(10)).await;
    assert_eq!(ctx.err(), Some(Error::Cancelled));
    for _ in 0..1_000 {
        drop(Context::background().with_timeout(Duration::from_secs(1)));
    }
    advance(Duration::from_secs(10)).await;
}

#[cancellable(timeout = "30s")]
async fn stuck(ctx: &Context) -> Result<(), Error> {
    std::future::pending::<()>().await;
    Ok(())
}

#[cancellable(timeout = "30s")]
fn counts_until_cancelled(
    ctx: &Context,
    steps: &std::sync::atomic::AtomicU64,
) -> Result<(), Error> {
    loop {
        steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::hint::spin_loop();
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancellable_timeout_is_on_tokio_s_clock() {
    let start = Instant::now();
    assert_eq!(
        stuck(&Context::background()).await,
        Err(Error::DeadlineExceeded)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_cancellable_loop_runs_until_tokio_s_clock_passes_its_deadline() {
    // A sync loop cannot let the runtime advance the clock: another task does, from a
    // blocking thread's point of view the loop only ends once `advance` passes 30 s.
    let steps = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ctx = Context::background().with_cancel();
    let parent = ctx.context().clone();
    let counted = steps.clone();
    let handle = tokio::runtime::Handle::current();
    let looping = std::thread::spawn(move || {
        handle.block_on(async { counts_until_cancelled(&parent, &counted) })
    });
    while steps.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    advance(Duration::from_secs(29)).await;
    assert!(!looping.is_finished());
    advance(Duration::from_secs(1)).await;
    let real = std::time::Instant::now();
    while !looping.is_finished() {
        assert!(real.elapsed() < REAL, "the loop's deadline never fired");
        tokio::task::yield_now().await;
    }
    assert_eq!(looping.join().unwrap(), Err(Error::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_waits_on_tokio_s_clock() {
    let real = std::time::Instant::now();
    let start = Instant::now();
    let scope = Context::background().with_timeout(Duration::from_secs(30));
    assert_eq!(scope.wait_timeout(Duration::from_secs(10)), None);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(
        scope.wait_timeout(Duration::from_secs(60)),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    let never = Context::background().with_cancel();
    assert_eq!(never.wait_timeout(Duration::from_secs(3600)), None);
    let timed = Context::background().with_timeout(Duration::from_secs(5));
    assert_eq!(timed.wait(), Error::DeadlineExceeded);
    assert!(real.elapsed() < REAL);
}

#[tokio::test(start_paused = true)]
async fn the_grpc_timeout_sent_is_the_budget_left_on_tokio_s_clock() {
    let inner = tower::service_fn(|req: http::Request<()>| async move {
        Ok::<_, Infallible>(http::Response::new(
            req.headers()
                .get(GRPC_TIMEOUT)
                .map(|v| v.to_str().unwrap().to_owned()),
        ))
    });
    let scope = Context::background().with_timeout(Duration::from_secs(30));
    advance(Duration::from_secs(12)).await;
    let mut svc = PropagateDeadlineLayer::with_context(&scope).layer(inner);
    let sent = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap()
        .into_body()
        .unwrap();
    assert_eq!(
        parse_grpc_timeout(sent.as_bytes()),
        Ok(Duration::from_secs(18))
    );
    advance(Duration::from_secs(18)).await;
    let failed = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await;
    assert_eq!(
        failed.unwrap_err().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_layer_s_budget_is_on_tokio_s_clock() {
    let handler = tower::service_fn(|_req: http::Request<()>| async move {
        let ctx = Context::current();
        let start = Instant::now();
        let err = ctx.done().await;
        Ok::<_, Infallible>(http::Response::new(format!(
            "{err} after {:?}",
            start.elapsed()
        )))
    });
    let root = Context::background().with_cancel();
    // Handlers that finish: each sees its own deadline end on tokio's clock.
    let mut svc = ContextLayer::new(&root)
        .default_timeout(Duration::from_secs(30))
        .finish_handlers(true)
        .layer(handler);
    let request = http::Request::builder()
        .header(GRPC_TIMEOUT, "7S")
        .body(())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(
        response.into_body().into_inner().as_deref(),
        Some("context deadline exceeded after 7s")
    );
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await;
    assert_eq!(
        response.unwrap().into_body().into_inner().as_deref(),
        Some("context deadline exceeded after 30s")
    );
    // By default the layer itself answers 504 at the deadline, on tokio's clock too, to a
    // handler that ignores its context.
    let deaf = tower::service_fn(|_req: http::Request<()>| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, Infallible>(http::Response::new(String::from("too late")))
    });
    let mut svc = ContextLayer::new(&root).layer(deaf);
    let request = http::Request::builder()
        .header(GRPC_TIMEOUT, "7S")
        .body(())
        .unwrap();
    let start = Instant::now();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

#[tokio::test]
async fn with_a_running_clock_deadlines_take_real_time() {
    let real = std::time::Instant::now();
    let scope = Context::background().with_timeout(Duration::from_millis(200));
    assert_eq!(scope.done().await, Error::DeadlineExceeded);
    assert!(real.elapsed() >= Duration::from_millis(200));
}

#[test]
fn outside_a_runtime_deadlines_take_real_time() {
    let real = std::time::Instant::now();
    let scope = Context::background().with_timeout(Duration::from_millis(200));
    assert_eq!(scope.wait(), Error::DeadlineExceeded);
    assert!(real.elapsed() >= Duration::from_millis(200));
    let scope = Context::background().with_cancel();
    let real = std::time::Instant::now();
    assert_eq!(scope.wait_timeout(Duration::from_millis(200)), None);
    assert!(real.elapsed() >= Duration::from_millis(200));
}

#[test]
fn a_paused_runtime_on_another_thread_does_not_pause_this_one() {
    let paused = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let scope = Context::background().with_timeout(Duration::from_secs(3600));
                scope.done().await
            })
    });
    let real = std::time::Instant::now();
    let scope = Context::background().with_timeout(Duration::from_millis(200));
    assert_eq!(scope.wait(), Error::DeadlineExceeded);
    assert!(real.elapsed() >= Duration::from_millis(200));
    assert_eq!(paused.join().unwrap(), Error::DeadlineExceeded);
}
