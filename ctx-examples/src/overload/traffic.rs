//! Offered load: open-loop clients (a request every 1/rate, whatever the answers do, as
//! independent users behave), each request sent with `load::send` inside a context with a
//! deadline (which travels as `grpc-timeout`; the client gives up when it passes), and a
//! closed loop to measure the service time and the capacity.

use std::time::{Duration, Instant};

use ctx_core::{Context, Error};
use tokio::task::JoinSet;

use crate::load;

/// A stream of requests to one path.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub path: &'static str,
    /// Requests per second.
    pub rate: f64,
    pub deadline: Duration,
}

/// How a request ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// 200 within the deadline.
    Ok,
    /// 503: shed (or an upstream that stayed unavailable).
    Unavailable,
    /// 504, or the client's own deadline passed first.
    Late,
    /// Anything else.
    Failed,
}

/// One request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The index of its flow.
    pub flow: usize,
    /// When it was sent, from the start of the run.
    pub sent: Duration,
    pub latency: Duration,
    pub end: End,
}

/// Sends each flow at its rate to `base` for `length`, and waits for every answer.
pub async fn offer(base: &str, flows: &[Flow], length: Duration) -> Vec<Sample> {
    let client = load::client();
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for (index, flow) in flows.iter().copied().enumerate() {
        let (client, url) = (client.clone(), format!("{base}{}", flow.path));
        senders.spawn(async move {
            let period = Duration::from_secs_f64(1.0 / flow.rate.max(0.1));
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::from_std(started), period);
            let mut requests = JoinSet::new();
            loop {
                ticks.tick().await;
                let sent = started.elapsed();
                if sent >= length {
                    break;
                }
                let (client, url) = (client.clone(), url.clone());
                requests.spawn(async move {
                    let ctx = Context::background().with_timeout(flow.deadline);
                    let began = Instant::now();
                    let end = match load::send(client, &url, &ctx).await {
                        Ok(200) => End::Ok,
                        Ok(503) => End::Unavailable,
                        Ok(504) => End::Late,
                        Ok(_) => End::Failed,
                        Err(err) => match err.downcast_ref::<Error>() {
                            Some(Error::DeadlineExceeded) => End::Late,
                            _ => End::Failed,
                        },
                    };
                    Sample {
                        flow: index,
                        sent,
                        latency: began.elapsed(),
                        end,
                    }
                });
            }
            requests.join_all().await
        });
    }
    senders.join_all().await.into_iter().flatten().collect()
}

/// Answers per second, and the latency of each, with `concurrency` clients each sending its
/// next request to `url` as soon as its last is answered, for `length`, counting the answers
/// after `warm_up` (connections opened, the pool busy). Long deadlines: every request is
/// answered.
pub async fn closed_loop(
    url: &str,
    concurrency: usize,
    warm_up: Duration,
    length: Duration,
) -> (f64, Vec<Duration>) {
    let client = load::client();
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_string());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < length {
                let ctx = Context::background().with_timeout(Duration::from_secs(5));
                let sent = Instant::now();
                let status = load::send(client.clone(), &url, &ctx).await;
                if matches!(status, Ok(200)) && started.elapsed() >= warm_up {
                    latencies.push(sent.elapsed());
                }
            }
            latencies
        });
    }
    let mut latencies: Vec<Duration> = clients.join_all().await.into_iter().flatten().collect();
    latencies.sort();
    let counted = started.elapsed().saturating_sub(warm_up);
    let rate = latencies.len() as f64 / counted.as_secs_f64().max(1e-3);
    (rate, latencies)
}
