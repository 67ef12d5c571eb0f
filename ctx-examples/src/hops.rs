//! The demo's multi-hop path, three processes' worth of hops in one: the gateway's `/chain`
//! (axum, HTTP) calls `backend` (tonic, gRPC), which runs the SQLite query (`db.rs`) under
//! its RPC's context and then calls `store` (tonic, gRPC). Each gRPC hop serves under
//! `http::grpc::ServerLayer` and each call goes through `http::grpc::ClientLayer`, so the
//! budget the client sent at the edge shrinks hop by hop, and a client that gives up stops
//! the work at every hop behind it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ctx_core::Context;
use ctx_examples::relay::pb::HopRequest;
use ctx_examples::relay::{self, Hop, Outcome, Upstream};
use tokio::task::JoinHandle;
use tonic::Code;

use crate::api::{ApiError, App};

/// The work `store` does per call.
const STORE_WORK: Duration = Duration::from_millis(60);
/// The longest deadline a gRPC hop accepts (and the deadline of a call without one).
const MAX_DEADLINE: Duration = Duration::from_secs(5);

/// The gRPC hops, their servers, and what each hop saw.
pub struct Hops {
    pub stats: HopStats,
    app: Arc<App>,
    backend: Upstream,
    /// The SQLite query's planned length: `backend`'s work.
    backend_work: Duration,
    servers: Mutex<Vec<JoinHandle<Result<(), tonic::transport::Error>>>>,
}

impl Hops {
    /// Starts `store` and `backend` on loopback under `root` (cancel it to shut them down);
    /// `backend_work` is the SQLite query's planned length.
    pub async fn start(
        app: Arc<App>,
        root: &Context,
        backend_work: Duration,
    ) -> Result<Arc<Hops>, String> {
        let stats = HopStats::default();
        let any = "127.0.0.1:0".parse().expect("an address");
        let (store_listener, store_addr) = relay::bind(any).await.map_err(|e| e.to_string())?;
        let (backend_listener, backend_addr) = relay::bind(any).await.map_err(|e| e.to_string())?;

        let store = Hop::new("store").observe(stats.recorder("store"));
        // `backend`'s work is the SQLite query, under the RPC's context: when the budget the
        // gateway sent runs out (or the gateway's client gives up), it is interrupted in
        // SQLite, and the call to `store` is never made.
        let work_app = app.clone();
        // (Its work saved is what the SQLite query counted: VM steps not run.)
        let backend = Hop::new("backend")
            .upstream(relay::upstream(&format!("http://{store_addr}"))?)
            .work(Arc::new(move |ctx, _planned| {
                let app = work_app.clone();
                Box::pin(async move {
                    match crate::db::slow_query(&app, &ctx, "chain").await {
                        Ok(_) => Ok(()),
                        Err(ApiError::Context(err)) => Err(err.into()),
                        Err(ApiError::Backend(why)) => Err(tonic::Status::internal(why)),
                    }
                })
            }))
            .observe(stats.recorder("backend"));
        let servers = vec![
            tokio::spawn(relay::serve(
                store_listener,
                store,
                root.clone(),
                Some(MAX_DEADLINE),
            )),
            tokio::spawn(relay::serve(
                backend_listener,
                backend,
                root.clone(),
                Some(MAX_DEADLINE),
            )),
        ];
        Ok(Arc::new(Hops {
            stats,
            app: app.clone(),
            backend: relay::upstream(&format!("http://{backend_addr}"))?,
            backend_work,
            servers: Mutex::new(servers),
        }))
    }

    /// One row per hop, in the order a request crosses them.
    pub fn table(&self) -> String {
        // `backend`'s work is the SQLite query, which measures what it did not run.
        let (worked, abandoned) = self.app.stats.work("chain");
        self.stats.table(Some((worked, abandoned)))
    }

    /// Waits for the gRPC servers to drain (after the root was cancelled).
    pub async fn wait(&self) -> Result<(), String> {
        let servers = std::mem::take(&mut *self.servers.lock().unwrap());
        for server in servers {
            server
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("a gRPC hop failed: {e}"))?;
        }
        Ok(())
    }
}

/// `/chain`: the gateway hop. Its context (from `ContextLayer`: the client's `grpc-timeout`)
/// is `Context::current()`, so the call to `backend` carries what is left of it.
async fn chain(State(hops): State<Arc<Hops>>) -> Response {
    let ctx = Context::current();
    let record = hops
        .stats
        .start("gateway", &ctx, hops.backend_work + STORE_WORK);
    let request = HopRequest {
        work_ms: hops.backend_work.as_millis() as u32,
        rest: Some(Box::new(HopRequest {
            work_ms: STORE_WORK.as_millis() as u32,
            rest: None,
            count: 0,
        })),
        count: 0,
    };
    let result = hops.backend.clone().forward(request).await;
    let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
    record.end(code);
    match result {
        Ok(reply) => {
            let reply = reply.into_inner();
            let store = reply.upstream.as_deref();
            (
                StatusCode::OK,
                format!(
                    "chain: backend got {}ms, store got {}ms\n",
                    reply.budget_ms,
                    store.map_or(-1, |s| s.budget_ms)
                ),
            )
                .into_response()
        }
        Err(status) => {
            let http = match status.code() {
                Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                Code::Cancelled | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            (http, format!("{}\n", status.message())).into_response()
        }
    }
}

/// The gateway's route, recorded like the others.
pub fn router(app: Arc<App>, hops: Arc<Hops>) -> Router {
    Router::new()
        .route("/chain", get(chain))
        .layer(axum::middleware::from_fn_with_state(
            app,
            crate::server::record_outcome,
        ))
        .with_state(hops)
}

#[derive(Default)]
struct Row {
    requests: u64,
    ok: u64,
    deadline: u64,
    cancelled: u64,
    failed: u64,
    latencies: Vec<Duration>,
    budgets: Vec<Duration>,
    planned: Duration,
    worked: Duration,
}

/// What each hop saw, and the table the demo prints.
#[derive(Clone, Default)]
pub struct HopStats {
    rows: Arc<Mutex<BTreeMap<&'static str, Row>>>,
}

/// A gateway request being recorded: recorded as cancelled if dropped unfinished (its
/// client went away).
pub struct Recording {
    stats: HopStats,
    hop: &'static str,
    arrived: Instant,
    budget: Option<Duration>,
    planned: Duration,
    code: Option<Code>,
}

impl Recording {
    fn end(mut self, code: Code) {
        self.code = Some(code);
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let latency = self.arrived.elapsed();
        // Dropped unfinished: the client went away, which at the deadline (the client's own
        // fires a moment before ours) is the budget running out.
        let out_of_budget = self
            .budget
            .is_some_and(|b| latency + Duration::from_millis(2) >= b);
        let code = self.code.unwrap_or(if out_of_budget {
            Code::DeadlineExceeded
        } else {
            Code::Cancelled
        });
        self.stats.record(
            self.hop,
            Outcome {
                budget: self.budget,
                code,
                latency,
                planned: self.planned,
                worked: if code == Code::Ok {
                    self.planned
                } else {
                    latency.min(self.planned)
                },
            },
        );
    }
}

impl HopStats {
    fn start(&self, hop: &'static str, ctx: &Context, planned: Duration) -> Recording {
        Recording {
            stats: self.clone(),
            hop,
            arrived: Instant::now(),
            budget: ctx
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now())),
            planned,
            code: None,
        }
    }

    fn recorder(&self, hop: &'static str) -> impl Fn(Outcome) + Send + Sync + 'static {
        let stats = self.clone();
        move |outcome| stats.record(hop, outcome)
    }

    fn record(&self, hop: &'static str, outcome: Outcome) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(hop).or_default();
        row.requests += 1;
        match outcome.code {
            Code::Ok => row.ok += 1,
            Code::DeadlineExceeded => row.deadline += 1,
            Code::Cancelled | Code::Unavailable => row.cancelled += 1,
            _ => row.failed += 1,
        }
        row.latencies.push(outcome.latency);
        if let Some(budget) = outcome.budget {
            row.budgets.push(budget);
        }
        row.planned += outcome.planned;
        row.worked += outcome.worked;
    }

    pub fn requests(&self, hop: &str) -> u64 {
        self.rows.lock().unwrap().get(hop).map_or(0, |r| r.requests)
    }

    /// The table; `backend_work` replaces `backend`'s estimate of work done and abandoned.
    fn table(&self, backend_work: Option<(Duration, Duration)>) -> String {
        let rows = self.rows.lock().unwrap();
        let line = |cells: [&str; 10]| {
            format!(
                "{:<9} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9} {:>9} {:>11} {:>12}\n",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                cells[7],
                cells[8],
                cells[9]
            )
        };
        let mut out = line([
            "hop",
            "requests",
            "ok",
            "deadline",
            "cancelled",
            "failed",
            "p50",
            "p99",
            "budget",
            "work saved",
        ]);
        out.push_str(&line([
            "",
            "",
            "",
            "exceeded",
            "",
            "",
            "latency",
            "latency",
            "received",
            "(abandoned)",
        ]));
        let ms = |d: Option<Duration>| {
            d.map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
        };
        for hop in ["gateway", "backend", "store"] {
            let Some(row) = rows.get(hop) else {
                continue;
            };
            let pct = |values: &[Duration], p: usize| {
                let mut sorted = values.to_vec();
                sorted.sort();
                crate::stats::percentile(&sorted, p)
            };
            let (planned, abandoned) = match (hop, backend_work) {
                ("backend", Some((worked, abandoned))) => (worked + abandoned, abandoned),
                _ => (row.planned, row.planned.saturating_sub(row.worked)),
            };
            let saved = if hop == "gateway" || planned.is_zero() {
                "-".to_string()
            } else {
                format!(
                    "{:.1}s ({:.0}%)",
                    abandoned.as_secs_f64(),
                    100.0 * abandoned.as_secs_f64() / planned.as_secs_f64()
                )
            };
            out.push_str(&line([
                hop,
                &row.requests.to_string(),
                &row.ok.to_string(),
                &row.deadline.to_string(),
                &row.cancelled.to_string(),
                &row.failed.to_string(),
                &ms(pct(&row.latencies, 50)),
                &ms(pct(&row.latencies, 99)),
                &ms(pct(&row.budgets, 50)),
                &saved,
            ]));
        }
        out
    }
}
