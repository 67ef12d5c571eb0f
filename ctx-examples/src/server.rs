//! Serving: hyper's HTTP/1 server (which drops a handler's future when its client hangs
//! up), every request under `ContextLayer`, and a graceful shutdown driven by
//! `ctx_core::signal::Shutdown`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ctx_core::Context;
use ctx_core::http::ContextLayer;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::api::App;
use crate::stats::Outcome;

/// Serves `router` on `listener`, every request under `root`, until `stop` resolves
/// (`Shutdown::requested`), then waits for every connection (and so every handler) to
/// finish: those still running when `root` is cancelled (the grace period's end) end then.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    root: Context,
    stop: impl Future<Output = ()>,
) {
    let layer = ContextLayer::new(&root)
        .default_timeout(Duration::from_secs(10))
        .max_timeout(Duration::from_secs(30));
    let service = TowerToHyperService::new(router.layer(layer));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break, // shutdown requested: stop accepting
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(connection);
    }
    graceful.shutdown().await;
}

/// Middleware: counts running handlers and records how each request ended.
pub async fn record_outcome(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let endpoint = match request.uri().path() {
        "/fast" => "fast",
        "/slow" => "slow",
        "/fanout" => "fanout",
        "/command" => "command",
        "/chain" => "chain",
        _ => "other",
    };
    let mut guard = Recorder {
        app: app.clone(),
        endpoint,
        started: Instant::now(),
        outcome: None,
    };
    app.running.fetch_add(1, Ordering::SeqCst);
    let response = next.run(request).await;
    guard.outcome = Some(match response.status().as_u16() {
        200 => Outcome::Ok,
        504 => Outcome::DeadlineExceeded,
        _ => Outcome::Failed,
    });
    response
}

/// Records the outcome when the request ends; a request whose future was dropped before it
/// finished was cancelled by its client.
struct Recorder {
    app: Arc<App>,
    endpoint: &'static str,
    started: Instant,
    outcome: Option<Outcome>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::CancelledByClient);
        self.app
            .stats
            .record(self.endpoint, outcome, self.started.elapsed());
        self.app.running.fetch_sub(1, Ordering::SeqCst);
    }
}
