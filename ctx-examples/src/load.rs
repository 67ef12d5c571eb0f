//! The built-in request mix: assorted endpoints and deadlines, and some clients that give
//! up early, sent with the deadline-propagating client layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ctx_core::http::{BoxError, PropagateDeadline, PropagateDeadlineLayer};
use ctx_core::{Context, Error};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use tower::{Service, ServiceBuilder, ServiceExt};

/// How the requests ended, as the clients saw it.
#[derive(Default)]
pub struct ClientTally {
    pub ok: u64,
    pub deadline: u64,
    pub gave_up: u64,
    pub other: u64,
}

const ENDPOINTS: [(&str, u64); 5] = [
    ("/fast", 25),
    ("/slow", 20),
    ("/fanout", 20),
    ("/command", 10),
    ("/chain", 25),
];
const DEADLINES_MS: [u64; 5] = [60, 150, 350, 800, 3_000];

/// A deterministic mix: the same run every time.
fn pick(i: u64) -> (&'static str, Duration, Option<Duration>) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = |n: u64| {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        x % n
    };
    let mut roll = next(100);
    let path = ENDPOINTS
        .iter()
        .find(|(_, weight)| {
            let hit = roll < *weight;
            roll = roll.saturating_sub(*weight);
            hit
        })
        .map_or("/fast", |(path, _)| path);
    let deadline = Duration::from_millis(DEADLINES_MS[next(DEADLINES_MS.len() as u64) as usize]);
    let gives_up = (next(100) < 15).then(|| Duration::from_millis(20 + next(200)));
    (path, deadline, gives_up)
}

/// The HTTP client the load generators use: hyper's, under `PropagateDeadlineLayer`, so a
/// request sent inside a context carries its remaining budget as `grpc-timeout`.
pub type HttpClient = PropagateDeadline<Client<HttpConnector, Empty<Bytes>>>;

/// A new [`HttpClient`] (its own connection pool).
pub fn client() -> HttpClient {
    ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>())
}

pub async fn drive(base: &str, requests: usize, concurrency: usize) -> ClientTally {
    let client = client();
    let bar = ProgressBar::new(requests as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos:>4}/{len} requests {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let slots = Arc::new(Semaphore::new(concurrency));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests as u64 {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (path, deadline, gives_up) = pick(i);
        let (client, url, counts, bar) = (
            client.clone(),
            format!("{base}{path}"),
            counts.clone(),
            bar.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            // The client's own context: its deadline travels as `grpc-timeout`; a client
            // that gives up cancels it, which drops the call and closes the connection.
            let (ctx, cancel) = Context::background().with_timeout(deadline).into_parts();
            if let Some(after) = gives_up {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    cancel.cancel_with("the user closed the tab");
                });
            } else {
                tokio::spawn(async move {
                    let _keep = cancel; // cancelled when the deadline fires or this task ends
                    tokio::time::sleep(deadline).await;
                });
            }
            let slot = match send(client, &url, &ctx).await {
                Ok(200) => 0,
                Ok(504) => 1,
                Ok(_) => 3,
                Err(err) => match err.downcast_ref::<Error>() {
                    Some(Error::DeadlineExceeded) => 1,
                    Some(_) => 2,
                    None => 3,
                },
            };
            counts[slot].fetch_add(1, Ordering::Relaxed);
            bar.inc(1);
        });
    }
    while tasks.join_next().await.is_some() {}
    bar.finish_with_message("done");
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    ClientTally {
        ok: c(0),
        deadline: c(1),
        gave_up: c(2),
        other: c(3),
    }
}

/// Sends a GET to `url` inside `ctx` (its deadline travels with it, and its end drops the
/// call) and reads the whole answer; returns the status.
pub async fn send<S>(mut client: S, url: &str, ctx: &Context) -> Result<u16, BoxError>
where
    S: Service<
            http::Request<Empty<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        >,
{
    let request = http::Request::get(url)
        .body(Empty::new())
        .expect("a valid request");
    let client = client.ready().await?;
    let response = ctx.enter(|| client.call(request)).await?;
    let status = response.status().as_u16();
    ctx.run(response.into_body().collect()).await??;
    Ok(status)
}
