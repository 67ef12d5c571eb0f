//! What the server layers cost at saturation over loopback: bare axum against axum +
//! `ContextLayer`, bare tonic against tonic + `grpc::ServerLayer` (goal: within 2% in
//! throughput and in p99 latency); and what `AdmissionLayer` adds to each layered stack
//! (goal: within 2% in throughput), with `max_in_flight` above the client's concurrency so
//! that every request takes the admission path (a place, its release, the service-time
//! window) without waiting.
//!
//! One server thread and one client thread (the machine has two cores); the client keeps
//! `CONCURRENCY` requests in flight, each sending `grpc-timeout: 1S` (so both the bare
//! servers and the layers parse it, and each request under a layer gets a deadline). The
//! configurations alternate in rounds so drift in the machine's speed hits them alike; the
//! figures are the medians over the rounds.
//!
//! ```text
//! cargo bench -p ctx-core --features axum,tonic --bench layers
//! CTX_BENCH_SECS=3 CTX_BENCH_ROUNDS=5 cargo bench ...   # longer rounds, more of them
//! ```
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it runs one short round as a
//! smoke test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use ctx_core::Context;
use ctx_core::http::grpc::ServerLayer;
use ctx_core::http::{AdmissionLayer, ContextLayer};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::{Request, Response, Status};

#[allow(clippy::all, missing_docs, dead_code)]
mod pb {
    include!("../tests/grpc/relay.v1.rs");
}

use pb::relay_client::RelayClient;
use pb::relay_server::{Relay, RelayServer};
use pb::{HopReply, HopRequest};

const CONCURRENCY: usize = 32;
/// The admission layer's places: more than the client ever has in flight.
const MAX_IN_FLIGHT: usize = 2 * CONCURRENCY;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Axum,
    AxumLayer,
    Tonic,
    TonicLayer,
    AxumAdmission,
    TonicAdmission,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Axum => "axum",
            Config::AxumLayer => "axum + ContextLayer",
            Config::Tonic => "tonic",
            Config::TonicLayer => "tonic + grpc::ServerLayer",
            Config::AxumAdmission => "axum+ContextLayer+Admission",
            Config::TonicAdmission => "tonic+ServerLayer+Admission",
        }
    }

    /// Whether requests get a context (and so see their deadline).
    fn layered(self) -> bool {
        !matches!(self, Config::Axum | Config::Tonic)
    }

    fn axum(self) -> bool {
        matches!(
            self,
            Config::Axum | Config::AxumLayer | Config::AxumAdmission
        )
    }
}

struct Echo;

#[tonic::async_trait]
impl Relay for Echo {
    async fn forward(&self, request: Request<HopRequest>) -> Result<Response<HopReply>, Status> {
        let budget = Context::current().deadline().map_or(-1, |_| 1);
        Ok(Response::new(HopReply {
            hop: "bench".into(),
            budget_ms: budget,
            upstream: None,
            seq: request.get_ref().count,
        }))
    }

    type WatchStream =
        Pin<Box<dyn futures::Stream<Item = Result<HopReply, Status>> + Send + 'static>>;

    async fn watch(&self, _: Request<HopRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time the whole process has used (server, client, and any helper thread such as
/// ctx's deadline driver).
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Serves `config` on one thread; returns its address, a stop flag, and (once stopped) the
/// server thread's CPU time.
fn serve(
    config: Config,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<Duration>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let root = Context::background().with_cancel();
            let stop = async {
                let _ = stop_rx.await;
            };
            match config {
                _ if config.axum() => {
                    let mut app = Router::new().route(
                        "/",
                        get(|| async {
                            Ok::<_, Infallible>(Context::current().deadline().is_some().to_string())
                        }),
                    );
                    if config == Config::AxumAdmission {
                        app = app.layer(AdmissionLayer::new(MAX_IN_FLIGHT));
                    }
                    if config.layered() {
                        app = app
                            .layer(ContextLayer::new(&root).max_timeout(Duration::from_secs(30)));
                    }
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                        .unwrap();
                }
                _ => {
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    let builder = tonic::transport::Server::builder();
                    if config == Config::TonicAdmission {
                        builder
                            .layer(ServerLayer::new(&root).max_timeout(Duration::from_secs(30)))
                            .layer(AdmissionLayer::new(MAX_IN_FLIGHT))
                            .add_service(RelayServer::new(Echo))
                            .serve_with_incoming_shutdown(incoming, stop)
                            .await
                            .unwrap();
                    } else if config == Config::TonicLayer {
                        builder
                            .layer(ServerLayer::new(&root).max_timeout(Duration::from_secs(30)))
                            .add_service(RelayServer::new(Echo))
                            .serve_with_incoming_shutdown(incoming, stop)
                            .await
                            .unwrap();
                    } else {
                        let mut builder = builder;
                        builder
                            .add_service(RelayServer::new(Echo))
                            .serve_with_incoming_shutdown(incoming, stop)
                            .await
                            .unwrap();
                    }
                }
            }
        });
        thread_cpu()
    });
    (addr_rx.recv().unwrap(), stop_tx, server)
}

struct Round {
    /// Requests after the warm-up, and in all.
    requests: u64,
    total: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Round {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

/// Drives `config` at saturation for `secs` from one client thread.
fn drive(config: Config, addr: SocketAddr, secs: f64) -> Round {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send_timeout = std::env::var_os("CTX_BENCH_NO_TIMEOUT").is_none();
    runtime.block_on(async move {
        let running = Arc::new(AtomicBool::new(true));
        let warmup = Duration::from_millis(200);
        let mut tasks = tokio::task::JoinSet::new();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(CONCURRENCY)
            .build::<_, Empty<Bytes>>(connector);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await;
        let grpc = channel.ok().map(RelayClient::new);
        let started = Instant::now();
        for _ in 0..CONCURRENCY {
            let running = running.clone();
            let http = http.clone();
            let grpc = grpc.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut requests = 0u64;
                let mut total = 0u64;
                while running.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match config {
                        _ if config.axum() => {
                            let mut request = http::Request::get(format!("http://{addr}/"));
                            if send_timeout {
                                request = request.header("grpc-timeout", "1S");
                            }
                            let request = request.body(Empty::new()).unwrap();
                            let response = http.request(request).await.unwrap();
                            let body = response.into_body().collect().await.unwrap().to_bytes();
                            assert_eq!(
                                &body[..],
                                if config.layered() && send_timeout {
                                    b"true" as &[u8]
                                } else {
                                    b"false"
                                }
                            );
                        }
                        _ => {
                            let mut request = Request::new(HopRequest {
                                work_ms: 0,
                                rest: None,
                                count: 1,
                            });
                            if send_timeout {
                                request
                                    .metadata_mut()
                                    .insert("grpc-timeout", "1S".parse().unwrap());
                            }
                            let reply = grpc.clone().unwrap().forward(request).await.unwrap();
                            assert_eq!(
                                reply.get_ref().budget_ms,
                                if config.layered() && send_timeout {
                                    1
                                } else {
                                    -1
                                }
                            );
                        }
                    }
                    total += 1;
                    if sent.duration_since(started) >= warmup {
                        latencies.push(sent.elapsed());
                        requests += 1;
                    }
                }
                (requests, total, latencies)
            });
        }
        tokio::time::sleep(warmup + Duration::from_secs_f64(secs)).await;
        running.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed() - warmup;
        let mut round = Round {
            total: 0,
            requests: 0,
            elapsed,
            latencies: Vec::new(),
        };
        while let Some(done) = tasks.join_next().await {
            let (requests, total, latencies) = done.unwrap();
            round.requests += requests;
            round.total += total;
            round.latencies.extend(latencies);
        }
        round
    })
}

/// Per round: throughput, p50 and p99 (µs), server CPU per request (µs),
/// and the whole process's CPU per request (µs).
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// The servers' own cost, without the network: `n` requests through the service stack a
/// server would call (the axum router, tonic's routes), bare or layered, on one thread;
/// nanoseconds per request (the best of three runs).
fn in_process(config: Config, n: u32) -> f64 {
    use tower::ServiceExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let root = Context::background().with_cancel();

        let router = Router::new().route(
            "/",
            get(|| async { Context::current().deadline().is_some().to_string() }),
        );
        let routes = tonic::service::Routes::new(RelayServer::new(Echo));
        // Built once, cloned per request as a server does per connection.
        let router_layered = tower::Layer::layer(
            &ContextLayer::new(&root).max_timeout(Duration::from_secs(30)),
            router.clone(),
        );
        let routes_layered = tower::Layer::layer(
            &ServerLayer::new(&root).max_timeout(Duration::from_secs(30)),
            routes.clone(),
        );
        let router_admitted = tower::Layer::layer(
            &ContextLayer::new(&root).max_timeout(Duration::from_secs(30)),
            router
                .clone()
                .layer(AdmissionLayer::new(MAX_IN_FLIGHT))
                .into_service::<axum::body::Body>(),
        );
        let routes_admitted = tower::Layer::layer(
            &ServerLayer::new(&root).max_timeout(Duration::from_secs(30)),
            tower::Layer::layer(&AdmissionLayer::new(MAX_IN_FLIGHT), routes.clone()),
        );
        // A gRPC request's body: the 5-byte frame header, then the message.
        let message = prost::Message::encode_to_vec(&HopRequest {
            work_ms: 0,
            rest: None,
            count: 1,
        });
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        let frame = Bytes::from(frame);
        let grpc_request = || {
            http::Request::post("http://bench/ctx.relay.v1.Relay/Forward")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", "1S")
                .body(tonic::body::Body::new(http_body_util::Full::new(
                    frame.clone(),
                )))
                .unwrap()
        };
        let http_request = || {
            http::Request::get("/")
                .header("grpc-timeout", "1S")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            for _ in 0..n {
                match config {
                    Config::Axum => {
                        let response = router.clone().oneshot(http_request()).await.unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                    Config::AxumLayer => {
                        let response = router_layered
                            .clone()
                            .oneshot(http_request())
                            .await
                            .unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                    Config::Tonic => {
                        let response = routes.clone().oneshot(grpc_request()).await.unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                    Config::TonicLayer => {
                        let response = routes_layered
                            .clone()
                            .oneshot(grpc_request())
                            .await
                            .unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                    Config::AxumAdmission => {
                        let response = router_admitted
                            .clone()
                            .oneshot(http_request())
                            .await
                            .unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                    Config::TonicAdmission => {
                        let response = routes_admitted
                            .clone()
                            .oneshot(grpc_request())
                            .await
                            .unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                }
            }
            best = best.min(started.elapsed().as_secs_f64() * 1e9 / f64::from(n));
        }
        best
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (secs, rounds) = if bench {
        (
            env("CTX_BENCH_SECS", 2.0),
            env("CTX_BENCH_ROUNDS", 5.0) as usize,
        )
    } else {
        (0.2, 1)
    };
    let pairs = [
        (Config::Axum, Config::AxumLayer),
        (Config::AxumLayer, Config::AxumAdmission),
        (Config::Tonic, Config::TonicLayer),
        (Config::TonicLayer, Config::TonicAdmission),
    ];
    let n = if bench { 200_000 } else { 1_000 };
    println!(
        "in process, no network: the service stack a server calls, {n} requests, one thread\n"
    );
    println!("{:<28} {:>12} {:>12}", "configuration", "ns/request", "Δ");
    for (bare, layered) in pairs {
        let base = in_process(bare, n);
        let with = in_process(layered, n);
        println!("{:<28} {:>12.0}", bare.name(), base);
        println!(
            "{:<28} {:>12.0} {:>+8.0} ns ({:+.1}%)",
            layered.name(),
            with,
            with - base,
            100.0 * (with / base - 1.0)
        );
    }
    println!();
    println!(
        "server layers at saturation: 1 server thread, 1 client thread, {CONCURRENCY} in flight, \
         {rounds} rounds of {secs}s per configuration (medians)\n"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "configuration",
        "req/s",
        "p50",
        "p99",
        "server CPU",
        "all CPU",
        "Δ req/s",
        "Δ p99",
        "Δ srv CPU",
        "Δ all CPU"
    );
    for (bare, layered) in pairs {
        let mut results: [Samples; 2] = Default::default();
        for round in 0..rounds {
            // Alternate which goes first, so warm-up and drift favour neither.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let config = [bare, layered][which];
                let process_before = process_cpu();
                let (addr, stop, server) = serve(config);
                let mut measured = drive(config, addr, secs);
                let _ = stop.send(());
                let cpu = server.join().unwrap();
                let process = process_cpu() - process_before;
                results[which]
                    .4
                    .push(process.as_secs_f64() * 1e6 / measured.total as f64);
                // Server CPU per request (warm-up requests included in both counts).
                results[which]
                    .3
                    .push(cpu.as_secs_f64() * 1e6 / measured.total as f64);
                results[which].0.push(measured.throughput());
                results[which]
                    .1
                    .push(measured.percentile(0.50).as_secs_f64() * 1e6);
                results[which]
                    .2
                    .push(measured.percentile(0.99).as_secs_f64() * 1e6);
            }
        }
        let figures: Vec<(f64, f64, f64, f64, f64)> = results
            .into_iter()
            .map(|(t, p50, p99, cpu, all)| {
                (
                    median(t),
                    median(p50),
                    median(p99),
                    median(cpu),
                    median(all),
                )
            })
            .collect();
        for (i, config) in [bare, layered].into_iter().enumerate() {
            let (t, p50, p99, cpu, all) = figures[i];
            let delta = |now: f64, base: f64| {
                if i == 0 {
                    String::new()
                } else {
                    format!("{:+.1}%", 100.0 * (now / base - 1.0))
                }
            };
            println!(
                "{:<28} {:>10.0} {:>8.0}µs {:>8.0}µs {:>8.2}µs {:>8.2}µs {:>9} {:>9} {:>9} {:>9}",
                config.name(),
                t,
                p50,
                p99,
                cpu,
                all,
                delta(t, figures[0].0),
                delta(p99, figures[0].2),
                delta(cpu, figures[0].3),
                delta(all, figures[0].4),
            );
        }
    }
}
