//! The gateway under test: an axum service with two routes, served by hyper on loopback.
//!
//! - `/work` runs the SQLite query (`db::query_with`, ~20 ms) on one of a small pool of
//!   connections: the resource that bounds the gateway's capacity;
//! - `/relay` calls the upstream over gRPC (`relay::Upstream`, through `grpc::ClientLayer`).
//!
//! Every request runs on one of [`WORKERS`] workers (a semaphore: the server's thread pool or
//! connection limit), held until its work ends. How the handlers treat deadlines, whether
//! each route admits its requests, and how `/relay` retries are the [`Config`] under test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ctx_core::http::grpc::{ClientLayer, ClientService};
use ctx_core::http::{
    AdmissionLayer, AdmissionStats, BufferBody, BufferBodyLayer, ContextLayer, GRPC_TIMEOUT,
    RetryPolicy, parse_grpc_timeout,
};
use ctx_core::{CancelHandle, Context};
use ctx_examples::relay::pb::HopRequest;
use ctx_examples::relay::pb::relay_client::RelayClient;
use ctx_examples::relay::{self as relay_pb};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;
use tower::ServiceBuilder;
use tower::retry::budget::TpsBudget;
use tower::retry::{Retry, RetryLayer};
use tower::util::BoxCloneService;

use crate::api::{ApiError, App};
use crate::db;

/// The gateway's workers: every request holds one until its work ends.
pub const WORKERS: usize = 64;
/// Attempts per upstream call with naive retries (the first and three retries).
const NAIVE_ATTEMPTS: u32 = 4;
/// `/relay`'s places under admission: half the workers, so `/work` always finds one.
const RELAY_MAX_IN_FLIGHT: usize = WORKERS / 2;

/// How the gateway treats deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// No ctx: each handler runs its work in a task of its own (so a client that hangs up
    /// does not stop it, as in most servers) and ignores the caller's deadline; upstream
    /// calls carry none; failed upstream calls are retried at once, up to three times.
    NoCtx,
    /// `ContextLayer`: the request's context carries the caller's deadline, interrupts the
    /// SQLite query and ends the wait for a worker or a connection when it ends; upstream
    /// calls carry what is left of it; naive retries, which end with the context.
    Ctx,
    /// `ContextLayer`, and on each route an `AdmissionLayer` sized to what bounds it
    /// (`/work`: the SQLite pool; `/relay`: half the workers); `/relay` retries with
    /// `RetryPolicy` (a 10% retry budget).
    Admission,
}

impl Config {
    pub const ALL: [Config; 3] = [Config::NoCtx, Config::Ctx, Config::Admission];

    pub fn name(self) -> &'static str {
        match self {
            Config::NoCtx => "no ctx",
            Config::Ctx => "ctx propagation",
            Config::Admission => "ctx + admission",
        }
    }

    /// How its `/relay` retries a failed upstream call.
    pub fn retries(self) -> &'static str {
        match self {
            Config::NoCtx => "naive: 3, at once",
            Config::Ctx => "naive: 3, at once, within the deadline",
            Config::Admission => "RetryPolicy",
        }
    }
}

/// What the gateway measures itself.
#[derive(Default)]
pub struct Meter {
    /// Requests inside the gateway, and work still running for them.
    in_flight: AtomicU64,
    /// Query time (planned time of the work done) whose answer was ready within the
    /// caller's deadline, and after it (the caller had given up: wasted).
    useful_us: AtomicU64,
    wasted_us: AtomicU64,
}

impl Meter {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Query time in time, and wasted.
    pub fn work(&self) -> (Duration, Duration) {
        let us = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Relaxed));
        (us(&self.useful_us), us(&self.wasted_us))
    }

    fn record(&self, worked: Duration, in_time: bool) {
        let counter = if in_time {
            &self.useful_us
        } else {
            &self.wasted_us
        };
        counter.fetch_add(worked.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A request being tracked from its arrival: counted in flight until the request and any
/// work it left running are over. Handlers keep a clone while they work.
#[derive(Clone)]
struct Tracked(Arc<Track>);

struct Track {
    meter: Arc<Meter>,
    /// When the caller gives up (its `grpc-timeout` from arrival), if it said.
    deadline: Option<Instant>,
}

impl Drop for Track {
    fn drop(&mut self) {
        self.meter.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn track(meter: &Arc<Meter>, mut request: http::Request<Incoming>) -> http::Request<Incoming> {
    let arrived = Instant::now();
    let deadline = request
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(|v| parse_grpc_timeout(v.as_bytes()).ok())
        .map(|timeout| arrived + timeout);
    meter.in_flight.fetch_add(1, Ordering::Relaxed);
    request.extensions_mut().insert(Tracked(Arc::new(Track {
        meter: meter.clone(),
        deadline,
    })));
    request
}

/// An upstream client whose calls `RetryPolicy` retries: each attempt's body kept
/// (`BufferBodyLayer`), the policy, then `ClientLayer` (each attempt carries the budget left
/// at that attempt).
type RetryingUpstream = RelayClient<BufferBody<Retry<RetryPolicy, ClientService<Channel>>>>;

/// How `/relay` reaches the upstream.
#[derive(Clone)]
enum UpstreamClient {
    Naive(relay_pb::Upstream),
    Policy(RetryingUpstream),
}

struct Shared {
    config: Config,
    app: Arc<App>,
    /// The server's root: every request's context and every detached task ends with it.
    root: Context,
    workers: Arc<Semaphore>,
    upstream: UpstreamClient,
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub meter: Arc<Meter>,
    /// The admission layers of `/work` and `/relay` (configuration `Admission`).
    admission: Option<(AdmissionLayer, AdmissionLayer)>,
    shutdown: CancelHandle,
    server: JoinHandle<()>,
}

impl Gateway {
    /// What `/work`'s and `/relay`'s admission layers did, under `Admission`.
    pub fn admission_stats(&self) -> Option<(AdmissionStats, AdmissionStats)> {
        self.admission.as_ref().map(|(w, r)| (w.stats(), r.stats()))
    }
}

fn retrying_upstream(upstream: SocketAddr) -> RetryingUpstream {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{upstream}"))
        .expect("a loopback URL")
        .connect_lazy();
    // Retries may add 10% to the load (plus a reserve of 10 for a cold start), the retry
    // budget Google's SRE book recommends per client.
    let budget = TpsBudget::new(Duration::from_secs(10), 1, 0.1);
    let policy = RetryPolicy::new().budget(Arc::new(budget));
    RelayClient::new(
        ServiceBuilder::new()
            .layer(BufferBodyLayer::new())
            .layer(RetryLayer::new(policy))
            .layer(ClientLayer::new().authority(upstream.to_string()))
            .service(channel),
    )
}

impl Gateway {
    /// Serves on loopback: `/work` on `app`'s SQLite pool (of `pool` connections), `/relay`
    /// to `upstream`.
    pub async fn start(
        config: Config,
        app: Arc<App>,
        pool: usize,
        upstream: SocketAddr,
    ) -> Result<Gateway, String> {
        let (root, shutdown) = Context::background().with_cancel().into_parts();
        let shared = Arc::new(Shared {
            config,
            app,
            root: root.clone(),
            workers: Arc::new(Semaphore::new(WORKERS)),
            upstream: match config {
                Config::Admission => UpstreamClient::Policy(retrying_upstream(upstream)),
                _ => UpstreamClient::Naive(relay_pb::upstream(&format!("http://{upstream}"))?),
            },
        });
        let (router, admission) = match config {
            Config::Admission => {
                // Each route admits what its resource can serve: the query as many as
                // there are connections, the upstream calls as many as it may hold workers.
                let work_admission = AdmissionLayer::new(pool);
                let relay_admission = AdmissionLayer::new(RELAY_MAX_IN_FLIGHT);
                let router = Router::new()
                    .route("/work", get(work).layer(work_admission.clone()))
                    .route("/relay", get(relay).layer(relay_admission.clone()));
                (router, Some((work_admission, relay_admission)))
            }
            _ => (
                Router::new()
                    .route("/work", get(work))
                    .route("/relay", get(relay)),
                None,
            ),
        };
        let router = router.with_state(shared);
        let meter = Arc::new(Meter::default());
        let stamp = meter.clone();
        let track = move |request| track(&stamp, request);
        let service: HttpService = if config == Config::NoCtx {
            BoxCloneService::new(ServiceBuilder::new().map_request(track).service(router))
        } else {
            // The request's context lives until its body ends (`ContextBody`); hyper takes
            // the body as axum's.
            BoxCloneService::new(
                ServiceBuilder::new()
                    .map_request(track)
                    .map_response(|response: Response<_>| response.map(Body::new))
                    .layer(ContextLayer::new(&root).max_timeout(Duration::from_secs(30)))
                    .service(router),
            )
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the gateway: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = tokio::spawn(serve(listener, service, root));
        Ok(Gateway {
            addr,
            meter,
            admission,
            shutdown,
            server,
        })
    }

    /// Shuts down: cancels the root (every request and detached task with it), and waits
    /// for the work in flight to end.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        self.server.await.map_err(|e| e.to_string())?;
        let waited = Instant::now();
        while self.meter.in_flight() > 0 {
            if waited.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{} requests still in the gateway 30s after shutdown",
                    self.meter.in_flight()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

type HttpService = BoxCloneService<http::Request<Incoming>, Response<Body>, Infallible>;

/// Accepts connections until `root` ends; each connection is served by hyper's HTTP/1
/// server, which drops a request's future when its client hangs up.
async fn serve(listener: TcpListener, service: HttpService, root: Context) {
    while let Ok(Ok((stream, _))) = root.run(listener.accept()).await {
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        tokio::spawn(connection);
    }
}

/// `/work`: the SQLite query on a pooled connection, on a worker.
async fn work(
    State(shared): State<Arc<Shared>>,
    Extension(tracked): Extension<Tracked>,
) -> Response {
    let deadline = tracked.0.deadline;
    let meter = tracked.0.meter.clone();
    let record = move |worked, _saved| {
        meter.record(worked, deadline.is_none_or(|d| Instant::now() <= d));
    };
    let result = match shared.config {
        Config::NoCtx => {
            let shared = shared.clone();
            let task = tokio::spawn(async move {
                let _tracked = tracked;
                let root = shared.root.clone();
                // Under the server's root, not the request's context: shutdown stops it.
                root.run(async {
                    let _worker = shared.workers.clone().acquire_owned().await;
                    db::query_with(&shared.app, &root, record).await
                })
                .await?
            });
            task.await
                .unwrap_or_else(|e| Err(ApiError::Backend(e.to_string())))
        }
        Config::Ctx | Config::Admission => {
            let ctx = Context::current();
            match ctx.run(shared.workers.clone().acquire_owned()).await {
                Ok(_worker) => db::query_with(&shared.app, &ctx, record).await,
                Err(err) => Err(err.into()),
            }
        }
    };
    match result {
        Ok(sum) => (StatusCode::OK, format!("{sum}\n")).into_response(),
        Err(err) => err.into_response(),
    }
}

/// `/relay`: a call to the upstream, on a worker.
async fn relay(
    State(shared): State<Arc<Shared>>,
    Extension(tracked): Extension<Tracked>,
) -> Response {
    match shared.config {
        Config::NoCtx => {
            let shared = shared.clone();
            let task = tokio::spawn(async move {
                let _tracked = tracked;
                let root = shared.root.clone();
                // No context is current here: the upstream call carries no deadline.
                root.run(async {
                    let _worker = shared.workers.clone().acquire_owned().await;
                    call_upstream(&shared).await
                })
                .await
                .unwrap_or_else(|err| ApiError::from(err).into_response())
            });
            task.await
                .unwrap_or_else(|e| ApiError::Backend(e.to_string()).into_response())
        }
        Config::Ctx | Config::Admission => {
            let ctx = Context::current();
            match ctx.run(shared.workers.clone().acquire_owned()).await {
                Ok(_worker) => call_upstream(&shared).await,
                Err(err) => ApiError::from(err).into_response(),
            }
        }
    }
}

/// Calls the upstream: naive retries (UNAVAILABLE again at once) or `RetryPolicy`'s; the
/// current context's remaining budget travels with each attempt (`ClientLayer`).
async fn call_upstream(shared: &Shared) -> Response {
    let request = || HopRequest {
        work_ms: 0,
        rest: None,
        count: 0,
    };
    let result = match &shared.upstream {
        UpstreamClient::Policy(client) => client.clone().forward(request()).await,
        UpstreamClient::Naive(client) => {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match client.clone().forward(request()).await {
                    Err(status)
                        if status.code() == Code::Unavailable && attempts < NAIVE_ATTEMPTS => {}
                    result => break result,
                }
            }
        }
    };
    match result {
        Ok(_) => (StatusCode::OK, "relayed\n").into_response(),
        Err(status) => grpc_to_http(&status),
    }
}

fn grpc_to_http(status: &tonic::Status) -> Response {
    let http = match status.code() {
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    (http, format!("{}\n", status.message())).into_response()
}
