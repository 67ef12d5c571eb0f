//! What the scenarios measured, the tables printed (Markdown, so a run can be pasted into the
//! README as it is), and the goals read from them.

use std::fmt::Write as _;
use std::time::Duration;

use ctx_core::http::AdmissionStats;

use crate::stats::percentile;

use super::traffic::{End, Sample};

/// One offered-load level under one configuration.
pub struct LoadRow {
    pub config: &'static str,
    /// Offered load, in multiples of `capacity`.
    pub multiple: f64,
    /// Requests per second the gateway served: the mean of the capacity measured just before
    /// this run and just after it.
    pub capacity: f64,
    /// Requests per second offered and answered OK within their deadline.
    pub offered: f64,
    pub goodput: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Share of the query time spent for callers that had given up by the time it ended.
    pub wasted: f64,
    /// What `/work`'s admission layer did, if it had one.
    pub admission: Option<AdmissionStats>,
}

/// The slow-dependency run of one configuration.
pub struct SlowRow {
    pub config: &'static str,
    /// p99 of `/work`'s successful answers before the upstream slowed down, and while it was.
    pub baseline_p99: Option<Duration>,
    pub slow_p99: Option<Duration>,
    /// Share of `/work` requests answered OK within their deadline while it was slow.
    pub slow_ok: f64,
    /// The most requests (and their work) inside the gateway while it was slow.
    pub peak_in_flight: u64,
    /// The process's resident memory before the slowdown and at its peak during it.
    pub rss_before: Option<u64>,
    pub rss_peak: Option<u64>,
}

/// The retry-storm run of one configuration.
pub struct RetryRow {
    pub config: &'static str,
    pub retries: &'static str,
    pub offered: u64,
    /// Calls the upstream saw.
    pub upstream_calls: u64,
    /// Requests answered OK within their deadline, and per second.
    pub ok: u64,
    pub goodput: f64,
}

impl RetryRow {
    pub fn amplification(&self) -> f64 {
        self.upstream_calls as f64 / self.offered.max(1) as f64
    }
}

/// Everything one run measured.
pub struct Report {
    pub capacity: f64,
    pub pool: usize,
    /// A query's latency with no wait, measured at the start.
    pub service_time: Duration,
    pub deadline: Duration,
    pub load: Vec<LoadRow>,
    pub slow: Vec<SlowRow>,
    pub retry: Vec<RetryRow>,
}

/// Goodput, p50/p99 of the successful answers of `flow`, among `samples` sent in `window`.
pub struct Summary {
    pub sent: u64,
    pub ok: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

pub fn summarize(samples: &[Sample], flow: usize, window: (Duration, Duration)) -> Summary {
    let within = |at: Duration| at >= window.0 && at < window.1;
    let chosen: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.flow == flow && within(s.sent))
        .collect();
    let mut latencies: Vec<Duration> = chosen
        .iter()
        .filter(|s| s.end == End::Ok)
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    Summary {
        sent: chosen.len() as u64,
        ok: latencies.len() as u64,
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
    }
}

/// Like [`summarize`], but `ok` and the latencies are those of the successful answers that
/// *arrived* in `window` (a throughput: what a queue drains after the senders stop is not
/// counted); `sent` is still the requests sent in it.
pub fn summarize_arrivals(
    samples: &[Sample],
    flow: usize,
    window: (Duration, Duration),
) -> Summary {
    let within = |at: Duration| at >= window.0 && at < window.1;
    let sent = samples
        .iter()
        .filter(|s| s.flow == flow && within(s.sent))
        .count();
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.flow == flow && s.end == End::Ok && within(s.sent + s.latency))
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    Summary {
        sent: sent as u64,
        ok: latencies.len() as u64,
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

/// A Markdown table whose columns line up in a terminal too.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::from("|");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            // The first column (a name) reads left-aligned, figures right-aligned.
            if i == 0 {
                let _ = write!(out, " {cell:<w$} |");
            } else {
                let _ = write!(out, " {cell:>w$} |");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push_str(&line(
        widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w - 1))
                }
            })
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

impl Report {
    /// The three tables.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "offered load (a pool of {} SQLite connections; at the start, {:.0} ms a query and a \
             capacity of {:.0} requests/s: {} ms deadlines; each run offers a multiple of the \
             capacity measured just before it; its capacity is the mean of that and the one \
             measured just after it)\n",
            self.pool,
            self.service_time.as_secs_f64() * 1e3,
            self.capacity,
            self.deadline.as_millis()
        );
        let rows: Vec<Vec<String>> = self
            .load
            .iter()
            .map(|r| {
                vec![
                    r.config.to_string(),
                    format!("{:.1}x", r.multiple),
                    format!("{:.0}/s", r.capacity),
                    format!("{:.0}/s", r.offered),
                    format!("{:.0}/s", r.goodput),
                    format!("{:.0}%", 100.0 * r.goodput / r.capacity),
                    ms(r.p50),
                    ms(r.p99),
                    format!("{:.0}%", 100.0 * r.wasted),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "configuration",
                "load",
                "capacity",
                "offered",
                "goodput",
                "of capacity",
                "p50",
                "p99",
                "work wasted",
            ],
            &rows,
        ));
        for r in &self.load {
            if let Some(a) = &r.admission {
                let _ = write!(
                    out,
                    "{}{} at {:.1}x: /work's AdmissionLayer admitted {}, shed {}, expired on \
                     arrival {}, expired in its queue {}, predicted to miss {}",
                    if out.ends_with("|\n") { "\n" } else { "" },
                    r.config,
                    r.multiple,
                    a.admitted,
                    a.shed,
                    a.expired_on_arrival,
                    a.expired_while_queued,
                    a.predicted_miss
                );
                let _ = writeln!(
                    out,
                    "{}",
                    a.needed.map_or(String::new(), |d| format!(
                        " (needed: {:.0} ms)",
                        d.as_secs_f64() * 1e3
                    ))
                );
            }
        }
        let _ = writeln!(
            out,
            "\nslow dependency (the upstream: 20 ms -> 2 s; /work, which does not use it, at \
             0.5x capacity)\n"
        );
        let rows: Vec<Vec<String>> = self
            .slow
            .iter()
            .map(|r| {
                vec![
                    r.config.to_string(),
                    ms(r.baseline_p99),
                    ms(r.slow_p99),
                    format!("{:.0}%", 100.0 * r.slow_ok),
                    r.peak_in_flight.to_string(),
                    mib(r.rss_before),
                    mib(r.rss_peak),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "configuration",
                "/work p99 before",
                "/work p99 during",
                "/work ok during",
                "in flight (peak)",
                "RSS before",
                "RSS (peak)",
            ],
            &rows,
        ));
        let _ = writeln!(
            out,
            "\nretry storm (the upstream fails 30% of calls with UNAVAILABLE)\n"
        );
        let rows: Vec<Vec<String>> = self
            .retry
            .iter()
            .map(|r| {
                vec![
                    r.config.to_string(),
                    r.retries.to_string(),
                    r.offered.to_string(),
                    r.upstream_calls.to_string(),
                    format!("{:.2}x", r.amplification()),
                    format!("{:.0}%", 100.0 * r.ok as f64 / r.offered.max(1) as f64),
                    format!("{:.0}/s", r.goodput),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "configuration",
                "retries",
                "requests",
                "upstream calls",
                "upstream load",
                "ok",
                "goodput",
            ],
            &rows,
        ));
        out
    }

    /// Each goal, met or not, read from this run (`best` names the configuration the goals
    /// are about, `retry_policy` the row that uses `RetryPolicy`).
    pub fn goals(&self, best: &str, retry_policy: &str) -> String {
        let mut out = String::new();
        let mut goal = |met: Option<bool>, text: String| {
            let verdict = match met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "NOT met (not measured)",
            };
            let _ = writeln!(out, "goal: {text}: {verdict}");
        };
        let at3 = self
            .load
            .iter()
            .find(|r| r.config == best && (r.multiple - 3.0).abs() < 1e-9);
        goal(
            at3.map(|r| r.goodput >= 0.9 * r.capacity && r.wasted <= 0.05),
            format!(
                "at 3x capacity, {best} keeps >= 90% of capacity as goodput with <= 5% of work \
                 wasted ({})",
                at3.map_or("-".into(), |r| format!(
                    "{:.0}%, {:.0}% wasted",
                    100.0 * r.goodput / r.capacity,
                    100.0 * r.wasted
                ))
            ),
        );
        let slow = self.slow.iter().find(|r| r.config == best);
        let ratio = slow.and_then(|r| {
            Some(r.slow_p99?.as_secs_f64() / r.baseline_p99?.as_secs_f64().max(1e-6))
        });
        goal(
            ratio.map(|x| x <= 2.0),
            format!(
                "during the slow dependency, {best}'s /work p99 stays within 2x its baseline ({})",
                ratio.map_or("-".into(), |x| format!("{x:.2}x"))
            ),
        );
        let retry = self.retry.iter().find(|r| r.retries == retry_policy);
        goal(
            retry.map(|r| r.amplification() <= 1.2),
            format!(
                "{retry_policy} amplifies the upstream's load by <= 1.2x ({})",
                retry.map_or("-".into(), |r| format!("{:.2}x", r.amplification()))
            ),
        );
        out
    }
}
