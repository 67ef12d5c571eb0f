//! Graceful shutdown with a real axum server on loopback: at the first request the server
//! stops accepting, a request that finishes within the grace period gets its 200, one that
//! does not is cancelled with the grace period's cause; a second request cancels at once;
//! signals drive the same; dropping every handle, or the parent ending, ends it all.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use ctx_core::Context;
use ctx_core::http::ContextLayer;
use ctx_core::signal::{GracePeriodEnded, Shutdown, SignalReceived};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Far beyond anything a loaded machine needs, far below the long waits being cut short.
const PROMPTLY: Duration = Duration::from_secs(20);

/// An axum server whose `/work/{ms}` works `ms` milliseconds under the request's context:
/// 200 "done" if it finishes, 503 with the context's cause if the context ends first. Each
/// request reports on `started` when its handler runs. The server shuts down gracefully on
/// `shutdown.requested()`.
async fn serve(
    shutdown: &Shutdown,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<u64>,
    JoinHandle<()>,
) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/work/{ms}",
            get(move |Path(ms): Path<u64>, ctx: Context| {
                let started = started.clone();
                async move {
                    let _ = started.send(ms);
                    match ctx.run(tokio::time::sleep(Duration::from_millis(ms))).await {
                        Ok(()) => (axum::http::StatusCode::OK, "done".to_owned()),
                        Err(_) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            ctx.cause().map_or("no cause".into(), |c| c.to_string()),
                        ),
                    }
                }
            }),
        )
        .layer(ContextLayer::new(shutdown.context()));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the test server");
    let addr = listener.local_addr().unwrap();
    let requested = shutdown.requested();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(requested)
            .await
            .unwrap();
    });
    (addr, started_rx, server)
}

/// One HTTP/1.1 request on its own connection: the status and the body.
async fn get_path(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

/// Starts a request in the background and waits until its handler runs.
async fn in_flight(
    addr: std::net::SocketAddr,
    ms: u64,
    started: &mut mpsc::UnboundedReceiver<u64>,
) -> JoinHandle<std::io::Result<(u16, String)>> {
    let request = tokio::spawn(async move { get_path(addr, &format!("/work/{ms}")).await });
    let seen = tokio::time::timeout(PROMPTLY, async {
        while let Some(started) = started.recv().await {
            if started == ms {
                return true;
            }
        }
        false
    });
    assert_eq!(seen.await, Ok(true), "the handler for /work/{ms} never ran");
    request
}

/// Whether the server still accepts: tries to connect until it fails (the listener is
/// closed once the server saw the request to shut down), for up to `PROMPTLY`.
async fn stops_accepting(addr: std::net::SocketAddr) -> bool {
    let until = Instant::now() + PROMPTLY;
    while Instant::now() < until {
        match get_path(addr, "/work/0").await {
            Err(_) => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_within_the_grace_period_and_the_rest_are_cancelled() {
    let grace = Duration::from_secs(3);
    let shutdown = Shutdown::new(Context::background(), grace);
    let (addr, mut started, server) = serve(&shutdown).await;
    let (status, body) = get_path(addr, "/work/0").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));

    // One request that finishes within the grace period, one that would take a minute.
    let quick = in_flight(addr, 500, &mut started).await;
    let stuck = in_flight(addr, 60_000, &mut started).await;
    assert!(!shutdown.is_requested());
    let requested_at = Instant::now();
    shutdown.request("deploying");

    tokio::time::timeout(PROMPTLY, shutdown.requested())
        .await
        .expect("requested() resolves at the first request");
    assert_eq!(shutdown.reason().unwrap().to_string(), "deploying");
    assert!(stops_accepting(addr).await, "the server kept accepting");
    assert!(
        !shutdown.context().is_cancelled() || requested_at.elapsed() >= grace,
        "the root was cancelled before the grace period ended"
    );

    let (status, body) = quick.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "done"), "the quick request");

    let (status, body) = tokio::time::timeout(PROMPTLY, stuck)
        .await
        .expect("the stuck request is cancelled when the grace period ends")
        .unwrap()
        .unwrap();
    let ended_after = requested_at.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        "shutdown grace period of 3s ended (shutdown requested: deploying)"
    );
    assert!(ended_after >= grace, "cut after {ended_after:?}");
    let cause = shutdown.context().cause().unwrap();
    let ended = cause.downcast_ref::<GracePeriodEnded>().unwrap();
    assert_eq!(ended.grace, grace);
    assert_eq!(ended.requested_by.to_string(), "deploying");

    // Every connection ended, so the server returns.
    tokio::time::timeout(PROMPTLY, server)
        .await
        .expect("the server returns once its requests ended")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_cancels_at_once() {
    // A grace period far longer than the test may take: only the second request can end it.
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(3_600));
    let (addr, mut started, server) = serve(&shutdown).await;
    let stuck = in_flight(addr, 3_600_000, &mut started).await;

    shutdown.request("SIGTERM, as a test");
    tokio::time::timeout(PROMPTLY, shutdown.requested())
        .await
        .unwrap();
    assert!(!shutdown.context().is_cancelled());
    shutdown.request("SIGINT, as a test");

    let (status, body) = tokio::time::timeout(PROMPTLY, stuck)
        .await
        .expect("the second request cancels the request in flight")
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (503, "SIGINT, as a test"));
    assert_eq!(shutdown.reason().unwrap().to_string(), "SIGTERM, as a test");
    tokio::time::timeout(PROMPTLY, server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_request_the_shutdown() {
    let user1 = tokio::signal::unix::SignalKind::user_defined1();
    let shutdown =
        Shutdown::on_signals(Context::background(), &[user1], Duration::from_secs(3_600)).unwrap();
    let root = shutdown.context().clone();
    // SAFETY: `raise` only sends a signal to this thread; tokio installed its handler above,
    // so the signal is not fatal.
    let raise = || assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);

    raise();
    tokio::time::timeout(PROMPTLY, shutdown.requested())
        .await
        .expect("the first signal requests the shutdown");
    let reason = shutdown.reason().unwrap();
    assert_eq!(reason.downcast_ref(), Some(&SignalReceived(user1)));
    assert_eq!(reason.to_string(), "received SIGUSR1");
    assert!(!root.is_cancelled(), "the first signal cancelled the root");

    raise();
    tokio::time::timeout(PROMPTLY, root.done())
        .await
        .expect("the second signal cancels the root at once");
    assert_eq!(root.cause().unwrap().to_string(), "received SIGUSR1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_or_ending_the_parent_ends_it() {
    // Dropped before any request: the root is cancelled at once (as a dropped CancelScope).
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(3_600));
    let (root, requested) = (shutdown.context().clone(), shutdown.requested());
    let clone = shutdown.clone();
    drop(shutdown);
    assert!(!root.is_cancelled(), "a clone still holds it");
    drop(clone);
    tokio::time::timeout(PROMPTLY, root.done()).await.unwrap();
    tokio::time::timeout(PROMPTLY, requested).await.unwrap();

    // Dropped during the grace period (the server drained early): no wait for its end.
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(3_600));
    let root = shutdown.context().clone();
    shutdown.request("draining");
    shutdown.requested().await;
    drop(shutdown);
    tokio::time::timeout(PROMPTLY, root.done()).await.unwrap();

    // The parent ends: both end, with its cause.
    let parent = Context::background().with_cancel();
    let shutdown = Shutdown::new(&parent, Duration::from_secs(3_600));
    parent.cancel_with("parent gone");
    tokio::time::timeout(PROMPTLY, shutdown.requested())
        .await
        .unwrap();
    assert_eq!(shutdown.reason().unwrap().to_string(), "parent gone");
    assert_eq!(
        shutdown.context().cause().unwrap().to_string(),
        "parent gone"
    );
    // A request after the end changes nothing.
    shutdown.request("late");
    assert_eq!(
        shutdown.context().cause().unwrap().to_string(),
        "parent gone"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_zero_grace_period_cancels_at_the_first_request() {
    let shutdown = Shutdown::new(Context::background(), Duration::ZERO);
    let request = shutdown.context().with_cancel();
    shutdown.request("now");
    tokio::time::timeout(PROMPTLY, request.done())
        .await
        .unwrap();
    assert!(request.cause().unwrap().is::<GracePeriodEnded>());
    assert_eq!(shutdown.grace(), Duration::ZERO);
}
