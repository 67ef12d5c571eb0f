//! What the demo measures, per endpoint, and the table it prints.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How one request ended, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    DeadlineExceeded,
    CancelledByClient,
    Failed,
}

#[derive(Default)]
struct Row {
    requests: u64,
    ok: u64,
    deadline: u64,
    client_gone: u64,
    failed: u64,
    latencies: Vec<Duration>,
    /// Backend work that was planned but not done because its context ended first.
    abandoned: Duration,
    /// Backend work done.
    worked: Duration,
}

/// Per-endpoint counters, shared by the handlers and the middleware that records outcomes.
#[derive(Default)]
pub struct Stats {
    rows: Mutex<BTreeMap<&'static str, Row>>,
}

impl Stats {
    pub fn record(&self, endpoint: &'static str, outcome: Outcome, latency: Duration) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(endpoint).or_default();
        row.requests += 1;
        match outcome {
            Outcome::Ok => row.ok += 1,
            Outcome::DeadlineExceeded => row.deadline += 1,
            Outcome::CancelledByClient => row.client_gone += 1,
            Outcome::Failed => row.failed += 1,
        }
        row.latencies.push(latency);
    }

    /// Backend time spent and backend time saved by stopping early.
    pub fn backend(&self, endpoint: &'static str, worked: Duration, abandoned: Duration) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(endpoint).or_default();
        row.worked += worked;
        row.abandoned += abandoned;
    }

    /// Backend work done and abandoned for `endpoint`.
    pub fn work(&self, endpoint: &str) -> (Duration, Duration) {
        let rows = self.rows.lock().unwrap();
        rows.get(endpoint)
            .map_or((Duration::ZERO, Duration::ZERO), |r| {
                (r.worked, r.abandoned)
            })
    }

    pub fn total_requests(&self) -> u64 {
        self.rows.lock().unwrap().values().map(|r| r.requests).sum()
    }

    pub fn table(&self) -> String {
        let rows = self.rows.lock().unwrap();
        let mut out = format!(
            "{:<10} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9} {:>9} {:>12}\n",
            "endpoint",
            "requests",
            "ok",
            "deadline",
            "client",
            "failed",
            "p50",
            "p99",
            "work saved"
        );
        out.push_str(&format!(
            "{:<10} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9} {:>9} {:>12}\n",
            "", "", "", "exceeded", "cancelled", "", "latency", "latency", "(abandoned)"
        ));
        for (endpoint, row) in rows.iter() {
            let mut sorted = row.latencies.clone();
            sorted.sort();
            let pct = |p: usize| percentile(&sorted, p);
            let ms = |d: Option<Duration>| {
                d.map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
            };
            let planned = row.worked + row.abandoned;
            let saved = if planned.is_zero() {
                "-".to_string()
            } else {
                format!(
                    "{:.1}s ({:.0}%)",
                    row.abandoned.as_secs_f64(),
                    100.0 * row.abandoned.as_secs_f64() / planned.as_secs_f64()
                )
            };
            out.push_str(&format!(
                "{:<10} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9} {:>9} {:>12}\n",
                endpoint,
                row.requests,
                row.ok,
                row.deadline,
                row.client_gone,
                row.failed,
                ms(pct(50)),
                ms(pct(99)),
                saved
            ));
        }
        out
    }
}

/// The `p`th percentile (0-100) of `sorted` (ascending); `None` when it is empty.
pub fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
}
