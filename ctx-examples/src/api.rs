//! The demo API: four endpoints whose handlers are `#[cancellable]`, so each derives its
//! context from the request's (deadline from `grpc-timeout`, cancelled when the client goes
//! away or the server shuts down) with no plumbing, and stops at the next `.await` or loop
//! iteration once that context ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ctx_core::{Context, Error, Group, cancellable, process};

use crate::db::{self, Db};
use crate::stats::Stats;

/// Shared by every handler.
pub struct App {
    pub stats: Stats,
    /// The SQLite connections `/slow` queries.
    pub db: Db,
    /// Handlers running right now (the shutdown report checks it drops to zero).
    pub running: AtomicU64,
    seed: AtomicU64,
}

impl App {
    pub fn new(db: Db) -> Arc<App> {
        Arc::new(App {
            stats: Stats::default(),
            db,
            running: AtomicU64::new(0),
            seed: AtomicU64::new(0x2545_F491_4F6C_DD1D),
        })
    }

    /// A cheap, thread-safe pseudo-random number in `0..n` (the demo needs no crypto).
    pub fn random(&self, n: u64) -> u64 {
        let mut x = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        x % n.max(1)
    }
}

/// The error every handler returns: the context's end, or a backend failure.
#[derive(Debug)]
pub enum ApiError {
    Context(Error),
    Backend(String),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        ApiError::Context(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Context(Error::DeadlineExceeded) => {
                (StatusCode::GATEWAY_TIMEOUT, "deadline exceeded\n").into_response()
            }
            ApiError::Context(err) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response()
            }
            ApiError::Backend(why) => (StatusCode::BAD_GATEWAY, format!("{why}\n")).into_response(),
        }
    }
}

/// A simulated backend call: `planned` of work in 10 ms slices, each `.await` raced
/// against the context by `#[cancellable]`.
#[cancellable]
async fn backend(planned: Duration) -> Result<(), ApiError> {
    let slice = Duration::from_millis(10);
    let mut done = Duration::ZERO;
    while done < planned {
        tokio::time::sleep(slice.min(planned - done)).await;
        done += slice;
    }
    Ok(())
}

/// Records how much of `planned` backend work was done and how much was abandoned because
/// the context ended, however the work ends (return, `?`, or its future dropped).
struct Tally<'a> {
    app: &'a App,
    endpoint: &'static str,
    planned: Duration,
    started: Instant,
}

impl<'a> Tally<'a> {
    fn start(app: &'a App, endpoint: &'static str, planned: Duration) -> Tally<'a> {
        Tally {
            app,
            endpoint,
            planned,
            started: Instant::now(),
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        let worked = self.started.elapsed().min(self.planned);
        self.app
            .stats
            .backend(self.endpoint, worked, self.planned - worked);
    }
}

/// Answers at once.
#[cancellable]
async fn fast(State(app): State<Arc<App>>) -> Result<String, ApiError> {
    let _tally = Tally::start(&app, "fast", Duration::from_millis(2));
    backend(Duration::from_millis(2)).await?;
    Ok("fast\n".into())
}

/// A real SQLite query (a recursive CTE, ~150 ms of work) under the request's context: a
/// short deadline or a client that gives up interrupts it in SQLite, and the connection
/// serves the next request.
#[cancellable]
async fn slow(State(app): State<Arc<App>>) -> Result<String, ApiError> {
    let sum = db::slow_query(&app, &Context::current(), "slow").await?;
    Ok(format!("slow: {sum}\n"))
}

/// Queries three backends at once under a `Group`: the first failure cancels the others.
#[cancellable]
async fn fanout(State(app): State<Arc<App>>) -> Result<String, ApiError> {
    let group = Group::<BackendFailed>::new(Context::current());
    for name in ["users", "orders", "prices"] {
        let app = app.clone();
        let planned = Duration::from_millis(50 + app.random(250));
        let fails = app.random(100) < 5;
        group.spawn(async move {
            let _tally = Tally::start(&app, "fanout", planned);
            if fails {
                backend(planned / 3)
                    .await
                    .map_err(|_| BackendFailed(name))?;
                return Err(BackendFailed(name));
            }
            backend(planned).await.map_err(|_| BackendFailed(name))
        });
    }
    match group.wait().await {
        Ok(()) => Ok("fanout: users, orders, prices\n".into()),
        Err(failed) => match Context::current().err() {
            // A backend gave up because the request ended, not because it failed.
            Some(err) => Err(err.into()),
            None => Err(ApiError::Backend(failed.to_string())),
        },
    }
}

#[derive(Debug)]
struct BackendFailed(&'static str);

impl std::fmt::Display for BackendFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend {} failed", self.0)
    }
}

impl std::error::Error for BackendFailed {}

/// Runs a system command (`sleep 0.25`) under the request deadline: SIGTERM when it ends.
#[cancellable]
async fn command(State(app): State<Arc<App>>) -> Result<String, ApiError> {
    let _tally = Tally::start(&app, "command", Duration::from_millis(250));
    let mut sleep = tokio::process::Command::new("sleep");
    sleep.arg("0.25");
    let result = process::output(&Context::current(), &mut sleep, Duration::from_millis(200)).await;
    match result {
        Ok(out) if out.status.success() => Ok("command: slept 250ms\n".into()),
        Ok(out) => Err(ApiError::Backend(format!(
            "command exited with {}",
            out.status
        ))),
        Err(err) => match err.context_error() {
            Some(ctx_err) => Err(ctx_err.into()),
            None => Err(ApiError::Backend(err.to_string())),
        },
    }
}

/// The routes, with the middleware that records each request's outcome.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/fast", get(fast))
        .route("/slow", get(slow))
        .route("/fanout", get(fanout))
        .route("/command", get(command))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::server::record_outcome,
        ))
        // Not a demo endpoint: outside the outcome table.
        .route("/debug/contexts", get(debug_contexts))
        .with_state(app)
}

/// Every live context of the process as a tree (ctx-core's `debug-tree` feature): the
/// requests in flight, each under the server's root, with their deadlines and where they
/// were made. This request's own context is in it too.
async fn debug_contexts() -> String {
    ctx_core::debug::snapshot().to_string()
}
