//! End-to-end over loopback: per-request contexts, deadline propagation across two hops,
//! client disconnects, graceful shutdown, malformed headers.
#![cfg(all(feature = "axum", feature = "tokio"))]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes_body::Full;
use ctx_core::http::{ClientDisconnected, ContextLayer, GRPC_TIMEOUT, PropagateDeadlineLayer};
use ctx_core::{Context, Error};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{Service, ServiceBuilder, ServiceExt};

mod bytes_body {
    pub use http_body_util::Full;
}

type Body = Full<axum::body::Bytes>;

const PROMPTLY: Duration = Duration::from_secs(10);

/// Serves `app` with hyper's HTTP/1 server directly: unlike a connection that may be
/// upgraded, it watches the socket while the handler runs and drops the handler's future
/// when the client hangs up.
async fn serve_hyper(app: Router, root: &Context) -> String {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let service = TowerToHyperService::new(app.layer(ContextLayer::new(root)));
    let root = root.clone();
    let accept = async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::spawn(async move { root.run(accept).await });
    addr
}

/// Serves `app` under a `ContextLayer` rooted at `root` on a loopback port.
async fn serve(
    app: Router,
    root: &Context,
    max: Duration,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let app = app.layer(ContextLayer::new(root).max_timeout(max));
    let shutdown = root.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.done().await;
            })
            .await
            .unwrap();
    });
    (addr, server)
}

fn client() -> impl Service<
    http::Request<Body>,
    Response = http::Response<hyper::body::Incoming>,
    Error = ctx_core::http::BoxError,
    Future: Send,
> + Clone {
    let inner = Client::builder(TokioExecutor::new()).build_http::<Body>();
    ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(inner)
}

async fn get_text(
    client: &mut (
             impl Service<
        http::Request<Body>,
        Response = http::Response<hyper::body::Incoming>,
        Error = ctx_core::http::BoxError,
    > + Clone
         ),
    url: String,
) -> Result<(u16, String), ctx_core::http::BoxError> {
    use http_body_util::BodyExt;
    let request = http::Request::get(url).body(Body::default()).unwrap();
    let response = client.ready().await?.call(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_reaches_a_handler_two_hops_away() {
    let root = Context::background().with_cancel();
    // Hop 2 reports the time it was given.
    let hop2 = Router::new().route(
        "/",
        get(|ctx: Context| async move {
            let left = ctx
                .deadline()
                .map(|d| d.saturating_duration_since(std::time::Instant::now()));
            format!("{}", left.map_or(-1, |d| d.as_millis() as i64))
        }),
    );
    let (hop2_addr, _s2) = serve(hop2, &root, Duration::from_secs(60)).await;
    // Hop 1 calls hop 2 with its own request context as the current one.
    let hop1 = Router::new().route(
        "/",
        get(move || {
            let url = hop2_addr.clone();
            async move {
                let mut client = client();
                get_text(&mut client, url)
                    .await
                    .map(|(_, body)| body)
                    .unwrap_or_else(|e| e.to_string())
            }
        }),
    );
    let (hop1_addr, _s1) = serve(hop1, &root, Duration::from_secs(60)).await;

    let edge = Context::background().with_timeout(Duration::from_secs(3));
    let mut client = client();
    let (status, body) = edge.scope(get_text(&mut client, hop1_addr)).await.unwrap();
    assert_eq!(status, 200);
    let left_ms: i64 = body.parse().unwrap_or_else(|_| panic!("{body}"));
    assert!(
        (1_000..=3_000).contains(&left_ms),
        "hop 2 saw {left_ms} ms of the 3 s budget"
    );
    root.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_and_defaults_timeouts() {
    let root = Context::background().with_cancel();
    let app = Router::new().route(
        "/",
        get(|ctx: Context| async move {
            ctx.deadline()
                .map_or(-1, |d| {
                    d.saturating_duration_since(std::time::Instant::now())
                        .as_millis() as i64
                })
                .to_string()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let layer = ContextLayer::new(&root)
        .default_timeout(Duration::from_secs(5))
        .max_timeout(Duration::from_secs(20));
    tokio::spawn(async move { axum::serve(listener, app.layer(layer)).await.unwrap() });
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    for (header, low, high) in [
        (None, 4_000, 5_000),
        (Some("1H"), 19_000, 20_000),
        (Some("2S"), 1_000, 2_000),
    ] {
        let mut request = http::Request::get(&addr).body(Body::default()).unwrap();
        if let Some(h) = header {
            request
                .headers_mut()
                .insert(GRPC_TIMEOUT, h.parse().unwrap());
        }
        use http_body_util::BodyExt;
        let body = http
            .request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let ms: i64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
        assert!((low..=high).contains(&ms), "{header:?}: {ms}");
    }
    root.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_grpc_timeout_is_a_400_with_a_reason() {
    let root = Context::background().with_cancel();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let (addr, _server) = serve(app, &root, Duration::from_secs(60)).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    for bad in ["", "10", "1.5S", "123456789m", "5x"] {
        let request = http::Request::get(&addr)
            .header(GRPC_TIMEOUT, bad)
            .body(Body::default())
            .unwrap();
        let response = http.request(request).await.unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .starts_with("invalid grpc-timeout header: "),
            "{bad:?}"
        );
    }
    assert_eq!(called.load(Ordering::SeqCst), 0, "the handler never ran");
    root.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_cancels_the_handler_and_its_downstream_call() {
    let root = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, Option<Error>, String)>();
    /// A handler's future is dropped when its client goes away, so hops report what their
    /// context saw from an `after_func`.
    fn report(
        ctx: &Context,
        hop: &'static str,
        tx: mpsc::UnboundedSender<(&'static str, Option<Error>, String)>,
    ) {
        let watched = ctx.clone();
        let _after = ctx.after_func(move || {
            let _ = tx.send((
                hop,
                watched.err(),
                watched.cause().map(|c| c.to_string()).unwrap_or_default(),
            ));
        });
    }
    let tx2 = tx.clone();
    let hop2 = Router::new().route(
        "/",
        get(move |ctx: Context| {
            report(&ctx, "hop2", tx2.clone());
            async move { ctx.done().await.to_string() } // slow: only the end of the context ends it
        }),
    );
    let hop2_addr = serve_hyper(hop2, &root).await;
    let hop1 = Router::new().route(
        "/",
        get(move |ctx: Context| {
            report(&ctx, "hop1", tx.clone());
            let url = hop2_addr.clone();
            async move {
                let mut client = client();
                get_text(&mut client, url)
                    .await
                    .map(|(_, body)| body)
                    .unwrap_or_else(|e| e.to_string())
            }
        }),
    );
    let hop1_addr = serve_hyper(hop1, &root).await;

    // A raw client that sends a request and hangs up before the answer.
    let mut socket = tokio::net::TcpStream::connect(hop1_addr.trim_start_matches("http://"))
        .await
        .unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);

    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            tokio::time::timeout(PROMPTLY, rx.recv())
                .await
                .expect("both hops ended")
                .unwrap(),
        );
    }
    seen.sort_by_key(|s| s.0);
    let (_, hop1_err, hop1_text) = &seen[0];
    assert_eq!(*hop1_err, Some(Error::Cancelled));
    assert_eq!(hop1_text, &ClientDisconnected.to_string());
    let (_, hop2_err, hop2_cause) = &seen[1];
    assert_eq!(*hop2_err, Some(Error::Cancelled));
    assert_eq!(
        hop2_cause,
        &ClientDisconnected.to_string(),
        "hop 1 dropped the call, so hop 2's client went away"
    );
    root.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_requests_in_flight_and_waits_for_them() {
    let root = Context::background().with_cancel();
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let app = Router::new().route(
        "/",
        get(move |ctx: Context| {
            let f = f.clone();
            async move {
                let err = ctx.done().await;
                tokio::time::sleep(Duration::from_millis(50)).await; // clean-up takes a while
                f.fetch_add(1, Ordering::SeqCst);
                err.to_string()
            }
        }),
    );
    let (addr, server) = serve(app, &root, Duration::from_secs(60)).await;
    let mut requests = Vec::new();
    for _ in 0..3 {
        let addr = addr.clone();
        requests.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
                .await
                .unwrap();
            socket
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).await.unwrap();
            response
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    root.cancel();
    tokio::time::timeout(PROMPTLY, server)
        .await
        .expect("graceful shutdown finished")
        .unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        3,
        "the server waited for every handler"
    );
    for request in requests {
        let response = request.await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("context cancelled"), "{response}");
    }
}

/// One call of `svc` with an empty request.
async fn call_once<S: Service<http::Request<()>>>(svc: &mut S) -> Result<S::Response, S::Error> {
    svc.ready().await?.call(http::Request::new(())).await
}

#[tokio::test]
async fn a_done_context_fails_the_call_without_sending() {
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let inner = tower::service_fn(move |_req: http::Request<()>| {
        s.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(http::Response::new(())) }
    });
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let mut svc = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::with_context(&ctx))
        .service(inner);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Error>(), Some(&Error::Cancelled));
    assert_eq!(sent.load(Ordering::SeqCst), 0);
}

// On tokio's paused clock with `test-util`: the budget sent is exactly what is left.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn the_remaining_time_is_sent_as_grpc_timeout() {
    let inner = tower::service_fn(|req: http::Request<()>| async move {
        Ok::<_, Infallible>(http::Response::new(
            req.headers()
                .get(GRPC_TIMEOUT)
                .map(|v| v.to_str().unwrap().to_owned()),
        ))
    });
    let mut svc = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(inner);
    let plain = call_once(&mut svc).await.unwrap();
    assert_eq!(plain.into_body(), None, "no deadline, no header");
    let scope = Context::background().with_timeout(Duration::from_secs(2));
    let svc = svc.ready().await.unwrap();
    // The context is read when the call is made (tower calls are made synchronously).
    let call = scope.enter(|| svc.call(http::Request::new(())));
    let sent = call.await.unwrap().into_body().unwrap();
    let sent = ctx_core::http::parse_grpc_timeout(sent.as_bytes()).unwrap();
    assert!(
        sent <= Duration::from_secs(2) && sent > Duration::from_secs(1),
        "{sent:?}"
    );
    if cfg!(feature = "test-util") {
        assert_eq!(sent, Duration::from_secs(2));
    }
}

// On tokio's paused clock with `test-util` (the 50 ms pass at once), the real one without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn a_call_in_flight_is_dropped_when_the_context_ends() {
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let inner = tower::service_fn(move |_req: http::Request<()>| {
        let flag = Flag(d.clone());
        async move {
            let _flag = flag;
            std::future::pending::<Result<http::Response<()>, Infallible>>().await
        }
    });
    let scope = Context::background().with_timeout(Duration::from_millis(50));
    let mut svc = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::with_context(&scope))
        .service(inner);
    let err = call_once(&mut svc).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Error>(), Some(&Error::DeadlineExceeded));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

/// A handler error for the `#[cancellable]` handler below.
#[derive(Debug)]
struct HandlerError(Error);

impl From<Error> for HandlerError {
    fn from(err: Error) -> HandlerError {
        HandlerError(err)
    }
}

impl axum::response::IntoResponse for HandlerError {
    fn into_response(self) -> axum::response::Response {
        (http::StatusCode::GATEWAY_TIMEOUT, self.0.to_string()).into_response()
    }
}

/// Derives from the request context with no parameter at all.
#[ctx_core::cancellable]
async fn derived_handler() -> Result<String, HandlerError> {
    let ctx = Context::current();
    let left = ctx
        .deadline()
        .map(|d| d.saturating_duration_since(std::time::Instant::now()));
    if left.is_some_and(|left| left < Duration::from_millis(500)) {
        tokio::time::sleep(Duration::from_secs(30)).await; // raced: the deadline ends it
    }
    Ok(format!(
        "{} {}",
        left.map_or(-1, |d| d.as_millis() as i64),
        ctx
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellable_handler_derives_from_the_request_context() {
    use http_body_util::BodyExt;
    let root = Context::background().with_cancel();
    let app = Router::new().route("/", get(derived_handler));
    let (addr, _server) = serve(app, &root, Duration::from_secs(60)).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let ask = |timeout: &'static str| {
        let request = http::Request::get(&addr)
            .header(GRPC_TIMEOUT, timeout)
            .body(Body::default())
            .unwrap();
        http.request(request)
    };
    let response = ask("5S").await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let (ms, chain) = text.split_once(' ').unwrap();
    let ms: i64 = ms.parse().unwrap();
    assert!(
        (4_000..=5_000).contains(&ms),
        "the handler's child has the request deadline: {text}"
    );
    assert!(
        chain.starts_with("context.Background.WithCancel.WithDeadline("),
        "{chain}"
    );
    assert!(
        chain.ends_with(".WithCancel"),
        "a child derived by #[cancellable]: {chain}"
    );

    let started = std::time::Instant::now();
    let response = ask("100m").await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < PROMPTLY,
        "the pending sleep was dropped at the deadline"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"context deadline exceeded");
    root.cancel();
}
