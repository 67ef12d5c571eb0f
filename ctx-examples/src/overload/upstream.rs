//! The gateway's dependency: the `Relay` gRPC service (`proto/relay.proto`, served by
//! `relay::serve` under `grpc::ServerLayer`) whose latency and failure rate the scenarios
//! turn up and down while it runs, and which counts every call it sees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ctx_core::{CancelHandle, Context};
use ctx_examples::relay::{self, Hop};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::api::App;

/// The longest deadline the upstream accepts (and the deadline of a call that sends none).
const MAX_DEADLINE: Duration = Duration::from_secs(5);

/// What the scenarios change while the upstream runs, and what it counts.
#[derive(Default)]
pub struct Knobs {
    latency_ms: AtomicU64,
    fail_percent: AtomicU64,
    calls: AtomicU64,
}

impl Knobs {
    /// Each call takes `latency` (sleeping under its RPC's context).
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// This share of calls (0-100) fails at once with UNAVAILABLE.
    pub fn set_fail_percent(&self, percent: u64) {
        self.fail_percent.store(percent.min(100), Ordering::Relaxed);
    }

    /// Calls seen since the last reset.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn reset_calls(&self) {
        self.calls.store(0, Ordering::Relaxed);
    }
}

/// The running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    shutdown: CancelHandle,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Upstream {
    /// Serves on loopback with `latency` per call and no failures; `app` draws the failures.
    pub async fn start(app: Arc<App>, latency: Duration) -> Result<Upstream, String> {
        let knobs = Arc::new(Knobs::default());
        knobs.set_latency(latency);
        let any = "127.0.0.1:0".parse().expect("an address");
        let (listener, addr) = relay::bind(any).await.map_err(|e| e.to_string())?;
        let work_knobs = knobs.clone();
        let hop = Hop::new("upstream").work(Arc::new(move |ctx, _planned| {
            let (knobs, app) = (work_knobs.clone(), app.clone());
            Box::pin(async move {
                knobs.calls.fetch_add(1, Ordering::Relaxed);
                if app.random(100) < knobs.fail_percent.load(Ordering::Relaxed) {
                    return Err(Status::unavailable("upstream overloaded"));
                }
                let latency = Duration::from_millis(knobs.latency_ms.load(Ordering::Relaxed));
                ctx.run(tokio::time::sleep(latency)).await?;
                Ok(())
            })
        }));
        let (root, shutdown) = Context::background().with_cancel().into_parts();
        let server = tokio::spawn(relay::serve(listener, hop, root, Some(MAX_DEADLINE)));
        Ok(Upstream {
            addr,
            knobs,
            shutdown,
            server,
        })
    }

    /// Cancels every call in flight and waits for the server to drain.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        self.server
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the upstream failed: {e}"))
    }
}
