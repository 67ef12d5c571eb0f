//! The README's "Adding ctx to an existing service", step by step: every Rust snippet of that
//! section (in `README.md` and `README.zh-CN.md`) is in this file, line for line, and
//! [`the_readme_snippets_are_the_code_tested_here`] fails when one is not; the tests below
//! run each step against a real axum server on loopback.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ctx_core::http::{ContextLayer, HopError, Origin};
use ctx_core::signal::{self, Shutdown};
use ctx_core::{Context, ContextKey, cancellable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// --- Step: layer order, values per request -------------------------------------------------

#[derive(ContextKey, Clone)]
struct Tenant(String);

fn app(shutdown: &Shutdown) -> Router {
    Router::new()
        .route("/orders/{id}", get(order))
        .route("/report", get(report))
        // Layers added later wrap those added earlier: ContextLayer goes last (outermost),
        // so the extractor and every middleware added before it see the request's context.
        .layer(axum::middleware::from_fn(budget_header))
        .layer(
            ContextLayer::new(shutdown.context())
                .default_timeout(Duration::from_secs(10))
                .max_timeout(Duration::from_secs(30))
                // Values per request, in one place: the extractor's context and
                // Context::current() both carry them.
                .with_values(|request, ctx| {
                    let tenant = request.headers.get("x-tenant");
                    let tenant = tenant.and_then(|v| v.to_str().ok()).unwrap_or("public");
                    ctx.with_value(Tenant(tenant.to_owned()))
                }),
        )
}

/// A middleware of your own, inside ContextLayer: the request's context is current here.
async fn budget_header(request: Request, next: Next) -> Response {
    let deadline = Context::current().deadline();
    let mut response = next.run(request).await;
    if let Some(deadline) = deadline {
        let budget = deadline.saturating_duration_since(Instant::now());
        let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        response
            .headers_mut()
            .insert("x-budget-ms", budget_ms.into());
    }
    response
}

// --- Step: the extractor --------------------------------------------------------------------

async fn order(ctx: Context, Path(id): Path<u32>) -> Result<String, ctx_core::Error> {
    let tenant = ctx.value::<Tenant>().map_or("", |t| &t.0);
    // Every wait is raced against the request's deadline: `?` answers 504 when it passes.
    let lookup = tokio::time::sleep(Duration::from_millis(10));
    ctx.run(lookup).await?;
    Ok(format!("order {id} for {tenant}"))
}

// --- Step: spawning -------------------------------------------------------------------------

#[cancellable]
async fn report() -> Result<String, ctx_core::Error> {
    // `tokio::spawn` here does not compile: its task would run with no deadline.
    let total = ctx_core::spawn(sum_orders());
    let carried = ctx_core::spawn_blocking(|| Context::current().deadline().is_some());
    let total = total.await.expect("sum_orders panicked")?;
    let carried = carried.await.expect("the closure panicked");
    Ok(format!("total {total}, deadline carried: {carried}"))
}

async fn sum_orders() -> Result<u64, ctx_core::Error> {
    let ctx = Context::current(); // the request's: ctx_core::spawn brought it here
    let query = tokio::time::sleep(Duration::from_millis(5));
    ctx.run(query).await?;
    Ok(42)
}

// --- Step: errors ---------------------------------------------------------------------------

// tonic: a context error is a status (DEADLINE_EXCEEDED or CANCELLED), so `?` works.
fn grpc_status(err: ctx_core::Error) -> tonic::Status {
    tonic::Status::from(err)
}

// Any error chain (reqwest's, anyhow's, tonic's, yours): which call ran out of time, where.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    match HopError::find(err) {
        Some(hop) => format!("{err}: {hop}"),
        None => err.to_string(),
    }
}

// --- Step: shutdown -------------------------------------------------------------------------

async fn serve(listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, app(&shutdown))
        .with_graceful_shutdown(shutdown.requested())
        .await
}

async fn run(addr: &str) -> std::io::Result<()> {
    // SIGINT or SIGTERM: stop accepting, give the requests in flight 10 s, then cancel the
    // rest; a second signal cancels at once.
    let shutdown = signal::graceful(Context::background(), Duration::from_secs(10))?;
    let listener = TcpListener::bind(addr).await?;
    serve(listener, shutdown).await
}

// --- The tests ------------------------------------------------------------------------------

const PATIENCE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 response, as read off the wire.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

async fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the test server");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("the server answers")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// `app` served by `serve` on a loopback port; the address and the server's task.
async fn start(
    shutdown: &Shutdown,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(serve(listener, shutdown.clone())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_order_values_and_the_extractor() {
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(5));
    let (addr, server) = start(&shutdown).await;

    // The value from the header reaches the extractor; the middleware saw the deadline.
    let answer = get_with(
        addr,
        "/orders/7",
        &[("x-tenant", "acme"), ("grpc-timeout", "5S")],
    )
    .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "order 7 for acme")
    );
    let budget: u64 = answer
        .head
        .lines()
        .find_map(|l| l.strip_prefix("x-budget-ms: "))
        .expect("the middleware inside ContextLayer saw a deadline")
        .parse()
        .unwrap();
    assert!((1_000..=5_000).contains(&budget), "{budget}");
    let answer = get_with(addr, "/orders/8", &[]).await;
    assert_eq!(answer.body, "order 8 for public");

    shutdown.request("test over");
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_without_the_layer_is_a_500_naming_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let forgot = Router::new().route("/orders/{id}", get(order));
    tokio::spawn(async move { axum::serve(listener, forgot).await });
    let answer = get_with(addr, "/orders/1", &[]).await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(answer.body.contains("ContextLayer"), "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_work_keeps_the_request_context() {
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(5));
    let (addr, _server) = start(&shutdown).await;
    let answer = get_with(addr, "/report", &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "total 42, deadline carried: true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_statuses() {
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(5));
    let (addr, _server) = start(&shutdown).await;
    // A budget of 1 ms cannot cover the handler's 10 ms wait: 504.
    let answer = get_with(addr, "/orders/1", &[("grpc-timeout", "1m")]).await;
    assert_eq!(answer.status, 504, "{}", answer.body);

    assert_eq!(
        ctx_core::Error::DeadlineExceeded.into_response().status(),
        504
    );
    assert_eq!(ctx_core::Error::Cancelled.into_response().status(), 503);
    assert_eq!(
        grpc_status(ctx_core::Error::DeadlineExceeded).code(),
        tonic::Code::DeadlineExceeded
    );
    assert_eq!(
        grpc_status(ctx_core::Error::Cancelled).code(),
        tonic::Code::Cancelled
    );

    /// An error of the application's that wraps the hop's, as anyhow or reqwest would.
    #[derive(Debug)]
    struct Lookup(HopError);
    impl std::fmt::Display for Lookup {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("user lookup failed")
        }
    }
    impl std::error::Error for Lookup {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let hop = HopError::new(
        ctx_core::Error::DeadlineExceeded,
        Origin::Downstream,
        "GET /users/7",
        "users:80",
    );
    assert_eq!(
        describe(&Lookup(hop)),
        "user lookup failed: deadline exceeded downstream of GET /users/7 on users:80"
    );
    assert_eq!(describe(&std::fmt::Error), std::fmt::Error.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_requests_finish() {
    let shutdown = Shutdown::new(Context::background(), Duration::from_secs(10));
    let (addr, server) = start(&shutdown).await;
    let in_flight = tokio::spawn(async move { get_with(addr, "/orders/3", &[]).await });
    // Let it reach the handler's 10 ms wait, or not: either way it gets its answer.
    tokio::time::sleep(Duration::from_millis(2)).await;
    shutdown.request("deploying");
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "order 3 for public")
    );
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("the server returns once drained")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    assert!(
        !shutdown.context().is_cancelled(),
        "drained within the grace period"
    );
    // `run` is compiled, not run: it waits for a real signal (`serve` is what it runs, above).
    let _ = run;
}

/// The Rust code blocks of the guide section of `readme`, each as its trimmed, non-empty lines.
fn guide_snippets(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut snippets = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim()) {
            (None, "```rust") => current = Some(Vec::new()),
            (Some(_), "```") => snippets.extend(current.take()),
            (Some(lines), text) if !text.is_empty() => lines.push(text.to_owned()),
            _ => {}
        }
    }
    snippets
}

#[test]
fn the_readme_snippets_are_the_code_tested_here() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let this: Vec<String> = include_str!("guide.rs")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    for (file, heading) in [
        ("README.md", "## Adding ctx to an existing service"),
        ("README.zh-CN.md", "## 在现有服务中接入 ctx"),
    ] {
        let readme = std::fs::read_to_string(root.join(file)).unwrap();
        let snippets = guide_snippets(&readme, heading);
        assert!(snippets.len() >= 5, "{file}: {} snippets", snippets.len());
        for snippet in snippets {
            let found = this
                .windows(snippet.len())
                .any(|window| window == snippet.as_slice());
            assert!(
                found,
                "{file}: this snippet is not in tests/guide.rs:\n{}",
                snippet.join("\n")
            );
        }
    }
}
