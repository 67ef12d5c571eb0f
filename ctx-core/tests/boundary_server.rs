//! The server layers at the service boundary (`ContextLayer`, `grpc::ServerLayer`), at the
//! tower level and over loopback: no call without budget, budgets capped by the server's
//! limit, deadlines enforced, fixed texts for clients, per-request values, the extractor
//! without a layer, the request context until the body ends, and errors that map.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use ctx_core::http::grpc::ServerLayer;
use ctx_core::http::{ContextLayer, GRPC_TIMEOUT, HopError, Origin};
use ctx_core::http::{format_grpc_timeout, parse_grpc_timeout};
use ctx_core::{Context, ContextKey, Error};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt, service_fn};

const PROMPTLY: Duration = Duration::from_secs(10);

type Text = http::Response<String>;

/// A service that counts its calls and answers with the budget it was given (ms, or -1).
fn counting(
    calls: &Arc<AtomicUsize>,
) -> impl tower::Service<http::Request<String>, Response = Text, Error = Infallible, Future: Send>
+ Clone
+ Send
+ use<> {
    let calls = Arc::clone(calls);
    service_fn(move |_: http::Request<String>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let budget = Context::current().deadline().map_or(-1, |d| {
                d.saturating_duration_since(Instant::now()).as_millis() as i64
            });
            Ok(http::Response::new(budget.to_string()))
        }
    })
}

fn request(timeout: Option<&str>) -> http::Request<String> {
    let mut request = http::Request::builder();
    if let Some(timeout) = timeout {
        request = request.header(GRPC_TIMEOUT, timeout);
    }
    request.body(String::new()).unwrap()
}

/// The status, content type and text of a response.
async fn read<B>(response: http::Response<B>) -> (u16, String, String)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

// ---- Issue 22 (2): no budget, no call -------------------------------------------------

#[tokio::test]
async fn a_request_with_no_budget_is_answered_without_calling_the_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let root = Context::background().with_cancel();
    let server = ContextLayer::new(&root).layer(counting(&calls));
    for zero in ["0n", "0S", "0H"] {
        let response = server.clone().oneshot(request(Some(zero))).await.unwrap();
        let (status, kind, text) = read(response).await;
        assert_eq!(
            (status, kind.as_str(), text.as_str()),
            (
                504,
                "text/plain; charset=utf-8",
                "context deadline exceeded"
            ),
            "{zero}"
        );
    }
    // A root whose deadline passed before the request arrived.
    let expired = Context::background().with_deadline(Instant::now() - Duration::from_secs(1));
    let server = ContextLayer::new(&expired).layer(counting(&calls));
    let (status, _, _) = read(server.oneshot(request(None)).await.unwrap()).await;
    assert_eq!(status, 504);
    // A root cancelled (shutdown) before the request arrived.
    let stopped = Context::background().with_cancel();
    let ctx = stopped.context().clone();
    stopped.cancel();
    let server = ContextLayer::new(&ctx).layer(counting(&calls));
    let (status, _, text) = read(server.oneshot(request(None)).await.unwrap()).await;
    assert_eq!((status, text.as_str()), (503, "server shutting down"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the service was never called"
    );

    // With budget, it is called.
    let server = ContextLayer::new(&root).layer(counting(&calls));
    let (status, _, _) = read(server.oneshot(request(Some("1S"))).await.unwrap()).await;
    assert_eq!((status, calls.load(Ordering::SeqCst)), (200, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_no_budget_over_loopback_never_reaches_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let root = Context::background().with_cancel();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        )
        .layer(ContextLayer::new(&root));
    let addr = serve(app).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<String>();
    let ask = http::Request::get(&addr)
        .header(GRPC_TIMEOUT, "0n")
        .body(String::new());
    let (status, _, text) = read(http.request(ask.unwrap()).await.unwrap()).await;
    assert_eq!((status, text.as_str()), (504, "context deadline exceeded"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A raw gRPC service that counts its calls and reports the budget it was given.
#[derive(Clone)]
struct Grpc {
    calls: Arc<AtomicUsize>,
    budgets: Arc<Mutex<Vec<Option<Duration>>>>,
    /// Waits for its context to end before answering.
    wait: bool,
}

impl Grpc {
    fn new(wait: bool) -> Grpc {
        Grpc {
            calls: Arc::default(),
            budgets: Arc::default(),
            wait,
        }
    }
}

type GrpcFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<()>> for Grpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = GrpcFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> GrpcFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let ctx = Context::current();
        let budget = ctx
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        self.budgets.lock().unwrap().push(budget);
        let wait = self.wait;
        Box::pin(async move {
            if wait {
                ctx.done().await;
            }
            Ok(tonic::Status::ok("").into_http())
        })
    }
}

fn grpc_request(timeout: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::builder().header("content-type", "application/grpc");
    if let Some(timeout) = timeout {
        request = request.header(GRPC_TIMEOUT, timeout);
    }
    request.body(()).unwrap()
}

/// The `grpc-status` and `grpc-message` of a trailers-only response.
fn grpc_status<B>(response: &http::Response<B>) -> (String, String) {
    let get = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    // gRPC percent-encodes its messages.
    let message = get("grpc-message").replace("%20", " ");
    (get("grpc-status"), message)
}

#[tokio::test]
async fn an_rpc_with_no_budget_is_answered_without_calling_the_service() {
    let grpc = Grpc::new(false);
    let root = Context::background().with_cancel();
    let server = ServerLayer::new(&root).layer(grpc.clone());
    let response = server.oneshot(grpc_request(Some("0n"))).await.unwrap();
    assert_eq!(grpc_status(&response).0, "4", "DEADLINE_EXCEEDED");
    assert!(
        http_body::Body::is_end_stream(response.body()),
        "trailers-only"
    );

    let ctx = root.context().clone();
    root.cancel_with("db at 10.1.2.3 rejected password hunter2");
    let server = ServerLayer::new(&ctx).layer(grpc.clone());
    let response = server.oneshot(grpc_request(Some("1S"))).await.unwrap();
    assert_eq!(
        grpc_status(&response),
        ("14".into(), "server shutting down".into()),
        "UNAVAILABLE, with a fixed text"
    );
    assert_eq!(
        grpc.calls.load(Ordering::SeqCst),
        0,
        "the service was never called"
    );
}

// ---- Issue 25 (4): a budget never above the server's limit ----------------------------

#[tokio::test]
async fn only_a_default_timeout_is_the_cap_too() {
    let calls = Arc::new(AtomicUsize::new(0));
    let root = Context::background().with_cancel();
    let budget = |layer: ContextLayer, asked: &'static str| {
        let server = layer.layer(counting(&calls));
        async move {
            let (_, _, text) = read(server.oneshot(request(Some(asked))).await.unwrap()).await;
            text.parse::<i64>().unwrap()
        }
    };
    let default_only = ContextLayer::new(&root).default_timeout(Duration::from_secs(5));
    let ms = budget(default_only.clone(), "99999999H").await;
    assert!((1..=5_000).contains(&ms), "{ms}");
    let ms = budget(default_only, "2S").await;
    assert!((1_000..=2_000).contains(&ms), "a shorter ask is kept: {ms}");
    let max_too = ContextLayer::new(&root)
        .default_timeout(Duration::from_secs(5))
        .max_timeout(Duration::from_secs(30));
    let ms = budget(max_too, "20S").await;
    assert!(
        (15_000..=20_000).contains(&ms),
        "max_timeout is the cap: {ms}"
    );

    let grpc = Grpc::new(false);
    let server = ServerLayer::new(&root)
        .default_timeout(Duration::from_secs(5))
        .layer(grpc.clone());
    server
        .oneshot(grpc_request(Some("99999999H")))
        .await
        .unwrap();
    let given = grpc.budgets.lock().unwrap()[0].unwrap();
    assert!(given <= Duration::from_secs(5), "{given:?}");
}

// ---- Issue 25 (5): the deadline enforced ----------------------------------------------

// On tokio's paused clock with `test-util` (the deadline passes at once), on the real one without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn at_its_deadline_the_handler_is_dropped_and_504_answered() {
    let dropped = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let d = dropped.clone();
    let handler = service_fn(move |_: http::Request<String>| {
        let flag = Flag(d.clone());
        async move {
            // Ignores its context, as most handlers do.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(flag);
            Ok::<_, Infallible>(http::Response::new(String::from("late")))
        }
    });
    let root = Context::background().with_cancel();
    let server = ContextLayer::new(&root).layer(handler);
    let started = tokio::time::Instant::now();
    let response = tokio::time::timeout(PROMPTLY, server.oneshot(request(Some("100m"))))
        .await
        .expect("answered at the deadline, not when the handler would have")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "before the deadline: {took:?}"
    );
    assert!(took < PROMPTLY);
    let (status, kind, text) = read(response).await;
    assert_eq!(
        (status, kind.as_str(), text.as_str()),
        (
            504,
            "text/plain; charset=utf-8",
            "context deadline exceeded"
        )
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's future was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_loopback_a_handler_that_ignores_a_20ms_cap_is_cut() {
    let root = Context::background().with_cancel();
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .layer(ContextLayer::new(&root).max_timeout(Duration::from_millis(20)));
    let addr = serve(app).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<String>();
    let ask = http::Request::get(&addr)
        .header(GRPC_TIMEOUT, "10S")
        .body(String::new());
    let response = tokio::time::timeout(PROMPTLY, http.request(ask.unwrap()))
        .await
        .expect("answered at the deadline")
        .unwrap();
    assert_eq!(response.status(), 504);
}

// On tokio's paused clock with `test-util` (the handler's wait passes at once), on the real one
// without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn finish_handlers_lets_a_handler_run_to_its_end() {
    let handler = service_fn(|_: http::Request<String>| async {
        tokio::time::sleep(Duration::from_secs(1)).await; // well past its 20 ms
        let seen = format!("{:?}", Context::current().err());
        Ok::<_, Infallible>(http::Response::new(seen))
    });
    let root = Context::background().with_cancel();
    let server = ContextLayer::new(&root)
        .finish_handlers(true)
        .layer(handler);
    let (status, _, text) = read(server.oneshot(request(Some("20m"))).await.unwrap()).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "Some(DeadlineExceeded)"),
        "finished, with its context expired"
    );
}

// ---- Issue 25 (7): fixed texts for clients, causes in the server's log ----------------

/// Everything logged through `tracing` while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let log = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || log.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const SECRET: &str = "db at 10.1.2.3 rejected password hunter2";

#[tokio::test]
async fn at_shutdown_clients_see_a_fixed_text_and_the_cause_is_logged() {
    let log = Log::default();
    let _guard = log.install();

    // gRPC: an RPC in flight when the root is cancelled.
    let grpc = Grpc::new(true);
    let root = Context::background().with_cancel();
    let ctx = root.context().clone();
    let server = ServerLayer::new(&ctx).layer(grpc.clone());
    let call = tokio::spawn(server.oneshot(grpc_request(Some("10S"))));
    while grpc.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    root.cancel_with(SECRET);
    let response = tokio::time::timeout(PROMPTLY, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (code, message) = grpc_status(&response);
    assert_eq!(code, "14", "UNAVAILABLE");
    assert_eq!(message, "server shutting down");

    // HTTP: a request arriving during shutdown.
    let calls = Arc::new(AtomicUsize::new(0));
    let server = ContextLayer::new(&ctx).layer(counting(&calls));
    let (status, _, text) = read(server.oneshot(request(None)).await.unwrap()).await;
    assert_eq!((status, text.as_str()), (503, "server shutting down"));
    assert!(!text.contains("10.1.2.3"));

    let logged = log.text();
    assert!(logged.contains(SECRET), "the cause is logged: {logged}");
}

// ---- Issue 25 (13): a malformed header -------------------------------------------------

#[tokio::test]
async fn a_malformed_header_is_a_plain_text_400_that_names_the_problem() {
    let calls = Arc::new(AtomicUsize::new(0));
    let root = Context::background().with_cancel();
    let server = ContextLayer::new(&root).layer(counting(&calls));
    for (value, reason) in [
        ("1S ", "whitespace after the unit 'S'"),
        ("1.5S", "'.' is not a digit"),
        ("10", "no unit after the digits"),
        ("10s", "unknown unit 's'"),
    ] {
        let asked = http::Request::builder()
            .header(GRPC_TIMEOUT, http::HeaderValue::from_static(value))
            .body(String::new())
            .unwrap();
        let (status, kind, text) = read(server.clone().oneshot(asked).await.unwrap()).await;
        assert_eq!(
            (status, kind.as_str()),
            (400, "text/plain; charset=utf-8"),
            "{value:?}"
        );
        assert!(
            text.starts_with("invalid grpc-timeout header: ") && text.contains(reason),
            "{value:?}: {text}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let _ = parse_grpc_timeout(&bytes);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,12}") {
        if let Ok(d) = parse_grpc_timeout(text.as_bytes()) {
            // Whatever parses is within the grammar's range.
            prop_assert!(d <= Duration::from_secs(99_999_999 * 3600));
        }
    }

    #[test]
    fn format_then_parse_round_trips(nanos in any::<u64>()) {
        let d = Duration::from_nanos(nanos);
        let text = format_grpc_timeout(d);
        prop_assert!(text.len() <= 9, "{}", text);
        let back = parse_grpc_timeout(text.as_bytes()).unwrap();
        // Rounded down, to the format's precision (at least 5 significant digits).
        prop_assert!(back <= d, "{:?} -> {} -> {:?}", d, text, back);
        prop_assert!((d - back).as_nanos() <= d.as_nanos() / 100_000, "{:?} -> {} -> {:?}", d, text, back);
    }

    #[test]
    fn a_server_never_grants_more_than_its_cap(
        digits in "[0-9]{1,8}",
        unit in "[HMSmun]",
        cap_ms in 1u64..10_000,
        max in any::<bool>(),
    ) {
        let root = Context::background().with_cancel();
        let cap = Duration::from_millis(cap_ms);
        let layer = match max {
            true => ContextLayer::new(&root).max_timeout(cap),
            false => ContextLayer::new(&root).default_timeout(cap),
        };
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let server = layer.layer(service_fn(move |_: http::Request<String>| {
            *s.lock().unwrap() = Some(Context::current().deadline());
            async { Ok::<_, Infallible>(http::Response::new(String::new())) }
        }));
        let asked = request(Some(&format!("{digits}{unit}")));
        futures::executor::block_on(server.oneshot(asked)).unwrap();
        // `None`: a zero budget, never called; `Some(None)` is impossible with a cap.
        let seen = *seen.lock().unwrap();
        prop_assert!(seen != Some(None), "a deadline under a cap");
        if let Some(Some(deadline)) = seen {
            prop_assert!(deadline <= Instant::now() + cap);
        }
    }
}

// ---- Issue 26 (2): values per request, the extractor, the body -------------------------

#[derive(ContextKey, Clone, Debug, PartialEq)]
struct RequestId(String);

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port to serve on");
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_values_reaches_the_extension_and_the_ambient_context() {
    let root = Context::background().with_cancel();
    let layer = ContextLayer::new(&root).with_values(|request, ctx| {
        let id = request
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        ctx.with_value(RequestId(id.unwrap_or("-").to_owned()))
    });
    let app = Router::new()
        .route(
            "/",
            get(|ctx: Context| async move {
                let extension = ctx.value::<RequestId>().cloned();
                let ambient = Context::current().value::<RequestId>().cloned();
                format!("{extension:?} {ambient:?}")
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<String>();
    let ask = http::Request::get(&addr)
        .header("x-request-id", "r-7")
        .body(String::new());
    let (status, _, text) = read(http.request(ask.unwrap()).await.unwrap()).await;
    assert_eq!(
        (status, text.as_str()),
        (200, r#"Some(RequestId("r-7")) Some(RequestId("r-7"))"#)
    );

    // The gRPC layer too.
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let server = ServerLayer::new(&root)
        .with_values(|_, ctx| ctx.with_value(RequestId("rpc".into())))
        .layer(service_fn(move |request: http::Request<()>| {
            let extension = request.extensions().get::<Context>().unwrap();
            *s.lock().unwrap() = Some((
                extension.value::<RequestId>().cloned(),
                Context::current().value::<RequestId>().cloned(),
            ));
            async { Ok::<_, Infallible>(tonic::Status::ok("").into_http::<tonic::body::Body>()) }
        }));
    server.oneshot(grpc_request(None)).await.unwrap();
    let rpc = Some(RequestId("rpc".into()));
    assert_eq!(seen.lock().unwrap().take(), Some((rpc.clone(), rpc)));
}

#[tokio::test]
async fn the_extractor_without_a_layer_is_a_500_that_names_it() {
    let app = Router::new()
        .route("/", get(|_: Context| async { "served" }))
        .route(
            "/optional",
            get(|ctx: Option<Context>| async move { format!("{}", ctx.is_some()) }),
        );
    let ask = |path: &str| {
        http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let (status, kind, text) = read(app.clone().oneshot(ask("/")).await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (500, "text/plain; charset=utf-8"));
    assert!(text.contains("ContextLayer"), "{text}");
    let (status, _, text) = read(app.oneshot(ask("/optional")).await.unwrap()).await;
    assert_eq!((status, text.as_str()), (200, "false"));
}

/// A body of `chunks` chunks, `every` apart, each saying whether the request's context
/// (the handler's, and the ambient one while the body is polled) has ended.
fn reporting_body(ctx: Context, chunks: usize, every: Duration) -> axum::body::Body {
    let stream = futures::stream::unfold(0, move |i| {
        let ctx = ctx.clone();
        async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            let chunk = format!("{:?}/{:?};", ctx.err(), Context::current().err());
            Some((Ok::<_, Infallible>(chunk), i + 1))
        }
    });
    axum::body::Body::from_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_context_lives_until_the_body_ends() {
    let root = Context::background().with_cancel();
    let app = Router::new()
        .route(
            "/",
            get(|ctx: Context| async move { reporting_body(ctx, 3, Duration::from_millis(20)) }),
        )
        .layer(ContextLayer::new(&root));
    let addr = serve(app).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<String>();
    let ask = http::Request::get(&addr)
        .header(GRPC_TIMEOUT, "20S")
        .body(String::new());
    let (status, _, text) = read(http.request(ask.unwrap()).await.unwrap()).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "None/None;None/None;None/None;")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_by_the_deadline_ends_with_an_error() {
    let root = Context::background().with_cancel();
    let app = Router::new()
        .route(
            "/",
            get(|ctx: Context| async move { reporting_body(ctx, 100, Duration::from_millis(50)) }),
        )
        .layer(ContextLayer::new(&root));
    let addr = serve(app).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<String>();
    let ask = http::Request::get(&addr)
        .header(GRPC_TIMEOUT, "1S")
        .body(String::new());
    let response = http.request(ask.unwrap()).await.unwrap();
    assert_eq!(response.status(), 200, "the headers went out in time");
    let body = tokio::time::timeout(PROMPTLY, response.into_body().collect())
        .await
        .expect("cut at the deadline");
    assert!(
        body.is_err(),
        "a cut body is an error, never a clean end: {body:?}"
    );
}

// ---- Issue 26 (3): errors that map ------------------------------------------------------

#[test]
fn context_errors_are_responses_and_statuses() {
    assert_eq!(Error::DeadlineExceeded.into_response().status(), 504);
    assert_eq!(Error::Cancelled.into_response().status(), 503);
    let hop = |err, origin| HopError::new(err, origin, "/svc/M", "10.0.0.7:50051");
    let response = hop(Error::DeadlineExceeded, Origin::Downstream).into_response();
    assert_eq!(response.status(), 504);
    assert_eq!(
        hop(Error::DeadlineExceeded, Origin::Local)
            .into_response()
            .status(),
        504
    );
    assert_eq!(
        hop(Error::Cancelled, Origin::Local)
            .into_response()
            .status(),
        503
    );
    let text = futures::executor::block_on(read(response)).2;
    assert!(
        !text.contains("10.0.0.7"),
        "no internal host in the answer: {text}"
    );

    let code = |err| tonic::Status::from(err).code();
    assert_eq!(code(Error::DeadlineExceeded), tonic::Code::DeadlineExceeded);
    assert_eq!(code(Error::Cancelled), tonic::Code::Cancelled);
}

#[test]
fn hop_error_is_found_however_deeply_wrapped() {
    let hop = HopError::new(Error::DeadlineExceeded, Origin::Local, "GET /u", "users:80");

    let anyhow = anyhow::Error::new(hop.clone())
        .context("loading the user")
        .context("GET /me");
    assert_eq!(HopError::find(&*anyhow), Some(&hop));

    let middleware = reqwest_middleware::Error::middleware(hop.clone());
    assert_eq!(HopError::find(&middleware), Some(&hop));

    let nested = anyhow::Error::new(reqwest_middleware::Error::middleware(hop.clone()))
        .context("calling users");
    assert_eq!(HopError::find(&*nested), Some(&hop));

    let status = tonic::Status::from_error(Box::new(hop.clone()));
    assert_eq!(HopError::find(&status), Some(&hop));

    let io = std::io::Error::other("disk on fire");
    assert_eq!(HopError::find(&io), None);
}

/// The context a handler handed out.
type Seen = Arc<Mutex<Option<Context>>>;

/// A layered service whose handler hands out its context and answers with `body`.
fn handing_out<F>(
    root: &Context,
    body: F,
) -> (
    impl tower::Service<
        http::Request<String>,
        Response = http::Response<ctx_core::http::ContextBody<axum::body::Body>>,
        Error = Infallible,
    > + use<F>,
    Seen,
)
where
    F: Fn() -> axum::body::Body + Clone + Send + 'static,
{
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let server = ContextLayer::new(root).layer(service_fn(move |_: http::Request<String>| {
        *s.lock().unwrap() = Some(Context::current());
        let body = body.clone();
        async move { Ok::<_, Infallible>(http::Response::new(body())) }
    }));
    (server, seen)
}

// On tokio's paused clock with `test-util` (the deadline passes at once), on the real one without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn the_body_ends_the_request_context_as_completed_or_as_a_disconnect() {
    let root = Context::background().with_cancel();
    let chunks = || reporting_body(Context::background(), 3, Duration::from_millis(1));

    // Read to its end: the context lives until then, and ends without a disconnect.
    let (server, seen) = handing_out(&root, chunks);
    let response = server.oneshot(request(Some("20S"))).await.unwrap();
    let ctx = seen.lock().unwrap().take().unwrap();
    assert_eq!(ctx.err(), None, "alive while the body is unread");
    response.into_body().collect().await.unwrap();
    assert_eq!(ctx.err(), Some(Error::Cancelled), "ended with the body");
    assert!(
        !ctx.cause()
            .unwrap()
            .is::<ctx_core::http::ClientDisconnected>()
    );

    // Dropped mid-body: the client went away.
    let (server, seen) = handing_out(&root, chunks);
    let response = server.oneshot(request(Some("20S"))).await.unwrap();
    let ctx = seen.lock().unwrap().take().unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert!(
        ctx.cause()
            .unwrap()
            .is::<ctx_core::http::ClientDisconnected>()
    );

    // Cut by the deadline: the error is the context's.
    let slow = || reporting_body(Context::background(), 1_000, Duration::from_millis(20));
    let (server, _) = handing_out(&root, slow);
    let response = server.oneshot(request(Some("100m"))).await.unwrap();
    let err = response.into_body().collect().await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded),
        "{err}"
    );
}
