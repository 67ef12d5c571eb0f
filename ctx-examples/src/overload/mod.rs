//! `--scenario overload`: the cascade, measured. A gateway (axum) whose capacity is a pool
//! of SQLite connections, a gRPC upstream (tonic), and open-loop HTTP clients with deadlines,
//! all on loopback in this process, run three scenarios under each [`Config`]:
//!
//! - offered load at 0.5x to 4x the gateway's measured capacity: goodput (answers OK within
//!   their deadline) and latency of the successful answers once a queue had time to form,
//!   and work wasted (query time spent for callers that had given up by the time it ended);
//! - a slow dependency: the upstream goes from 20 ms to 2 s while the gateway also serves
//!   `/work`, which does not use it: `/work`'s p99, the gateway's requests in flight, the
//!   process's memory;
//! - a retry storm: the upstream fails 30% of calls with UNAVAILABLE: the calls it sees per
//!   request offered, and goodput.
//!
//! Then prints the tables (Markdown), writes the goodput chart (SVG), and says which goals
//! the run met.

mod chart;
mod gateway;
mod report;
mod traffic;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::App;
use crate::db::Db;

use gateway::{Config, Gateway, Meter};
use report::{LoadRow, Report, RetryRow, SlowRow, summarize, summarize_arrivals};
use traffic::Flow;
use upstream::Upstream;

/// What `--scenario overload` takes.
pub struct Options {
    /// Phases of a fraction of a second: checks that everything runs, measures nothing.
    pub quick: bool,
    /// Where to write the chart (default: `ctx-overload.svg` in the temporary directory).
    pub chart: Option<PathBuf>,
}

/// SQLite connections in the pool, and the length of a query on an idle core.
const POOL: usize = 2;
const QUERY: Duration = Duration::from_millis(20);
/// Every client's deadline is this many times the service time measured at the start (a
/// query with no wait), within [`DEADLINE_RANGE`]: on an idle machine 200 ms for a 20 ms
/// query; on a busy one the same proportion, so the scenario keeps its shape.
const DEADLINE_FACTOR: u32 = 10;
const DEADLINE_RANGE: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(1));
/// Offered load, in multiples of the measured capacity.
const MULTIPLES: [f64; 5] = [0.5, 1.0, 2.0, 3.0, 4.0];
/// The upstream's latency, normally and while it is slow.
const UPSTREAM_LATENCY: Duration = Duration::from_millis(20);
const SLOW_LATENCY: Duration = Duration::from_secs(2);
/// `/relay` requests per second in the slow-dependency and retry-storm scenarios.
const SLOW_RELAY_RATE: f64 = 50.0;
const RETRY_RATE: f64 = 100.0;
const FAIL_PERCENT: u64 = 30;

/// How long each phase runs, and the deadline every client sends.
struct Phases {
    deadline: Duration,
    service_time: Duration,
    capacity: Duration,
    /// The capacity measured again before each load level.
    probe: Duration,
    level: Duration,
    baseline: Duration,
    slow: Duration,
    retry: Duration,
}

impl Phases {
    fn new(quick: bool) -> Phases {
        let s = Duration::from_secs_f64;
        if quick {
            Phases {
                deadline: DEADLINE_RANGE.0,
                service_time: s(0.2),
                capacity: s(0.4),
                probe: s(0.2),
                level: s(0.3),
                baseline: s(0.3),
                slow: s(0.5),
                retry: s(0.3),
            }
        } else {
            Phases {
                deadline: DEADLINE_RANGE.0,
                service_time: s(0.6),
                capacity: s(2.0),
                probe: s(0.8),
                level: s(1.8),
                baseline: s(1.5),
                slow: s(10.0),
                retry: s(2.5),
            }
        }
    }
}

pub async fn run(options: Options) -> Result<(), String> {
    let mut phases = Phases::new(options.quick);
    let started = Instant::now();
    let app = App::new(Db::open(POOL, QUERY)?);
    let upstream = Upstream::start(app.clone(), UPSTREAM_LATENCY).await?;
    println!(
        "ctx overload scenario: a gateway (axum) with a pool of {POOL} SQLite connections, a gRPC \
         upstream (tonic), open-loop HTTP clients with deadlines; configurations: {}",
        Config::ALL.map(Config::name).join(", ")
    );

    // The service time (one client: no wait) and the capacity (a closed loop of enough
    // clients to keep every connection busy), on the configuration that interrupts nothing
    // it need not.
    let (service_time, capacity) =
        measure(&app, &upstream, phases.service_time, phases.capacity).await?;
    if capacity < 1.0 {
        return Err(format!(
            "the gateway answered {capacity:.1} requests/s: nothing to measure"
        ));
    }
    phases.deadline = (service_time * DEADLINE_FACTOR).clamp(DEADLINE_RANGE.0, DEADLINE_RANGE.1);
    eprintln!(
        "service time {:.1} ms, capacity {capacity:.0} requests/s: deadlines of {} ms",
        service_time.as_secs_f64() * 1e3,
        phases.deadline.as_millis()
    );

    let mut report = Report {
        capacity,
        pool: POOL,
        service_time,
        deadline: phases.deadline,
        load: Vec::new(),
        slow: Vec::new(),
        retry: Vec::new(),
    };
    // Each run offers a multiple of the capacity measured just before it (the machine's
    // other load comes and goes), and a level runs every configuration in turn.
    // (`capacity` holds that probe until every run is done.)
    let mut levels = Vec::new();
    for multiple in MULTIPLES {
        for config in Config::ALL {
            let now = measure(&app, &upstream, Duration::ZERO, phases.probe)
                .await?
                .1;
            let row = offered_load(config, &app, &upstream, now * multiple, &phases).await?;
            eprintln!(
                "load {multiple:.1}x of {now:.0}/s, {}: goodput {:.0}/s",
                config.name(),
                row.goodput
            );
            levels.push(LoadRow {
                multiple,
                capacity: now,
                ..row
            });
        }
    }
    // A run's capacity is the mean of the probes just before and just after it: the
    // machine as it was while the run ran.
    let last = measure(&app, &upstream, Duration::ZERO, phases.probe)
        .await?
        .1;
    let after: Vec<f64> = levels
        .iter()
        .skip(1)
        .map(|r| r.capacity)
        .chain([last])
        .collect();
    for (row, after) in levels.iter_mut().zip(after) {
        row.capacity = (row.capacity + after) / 2.0;
    }
    // In the table, a configuration's rows together.
    for config in Config::ALL {
        report
            .load
            .extend(levels.extract_if(.., |r| r.config == config.name()));
    }
    // Memory is the process's, and its allocator keeps what it once took: the
    // configuration expected to take least goes first, so each one's growth shows.
    for config in Config::ALL.into_iter().rev() {
        let row = slow_dependency(config, &app, &upstream, capacity, &phases).await?;
        eprintln!(
            "slow dependency, {}: /work p99 {:?}",
            config.name(),
            row.slow_p99
        );
        report.slow.insert(0, row);
    }
    upstream.knobs.set_fail_percent(FAIL_PERCENT);
    for config in Config::ALL {
        let row = retry_storm(config, &app, &upstream, &phases).await?;
        eprintln!(
            "retry storm, {}: upstream load {:.2}x",
            config.name(),
            row.amplification()
        );
        report.retry.push(row);
    }
    upstream.stop().await?;

    println!("\n{}", report.tables());
    let chart = options
        .chart
        .unwrap_or_else(|| std::env::temp_dir().join("ctx-overload.svg"));
    chart::write(&chart, &report.load, &Config::ALL.map(Config::name))?;
    println!("chart: {}", chart.display());
    println!(
        "\n{}",
        report.goals("ctx + admission", "RetryPolicy").trim_end()
    );
    println!("\nran in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The service time (one client: no wait, for `single`) and the capacity (a closed loop of
/// enough clients to keep every connection busy, for `length`), on the configuration that
/// interrupts nothing it need not.
async fn measure(
    app: &Arc<App>,
    upstream: &Upstream,
    single: Duration,
    length: Duration,
) -> Result<(Duration, f64), String> {
    let gateway = Gateway::start(Config::Ctx, app.clone(), POOL, upstream.addr).await?;
    let url = format!("http://{}/work", gateway.addr);
    let (_, one) = traffic::closed_loop(&url, 1, Duration::ZERO, single).await;
    let (capacity, _) = traffic::closed_loop(&url, 4 * POOL, length / 5, length).await;
    gateway.stop().await?;
    Ok((
        crate::stats::percentile(&one, 50).unwrap_or(QUERY),
        capacity,
    ))
}

/// Offers `/work` at `rate` for one level on a fresh gateway.
async fn offered_load(
    config: Config,
    app: &Arc<App>,
    upstream: &Upstream,
    rate: f64,
    phases: &Phases,
) -> Result<LoadRow, String> {
    let gateway = Gateway::start(config, app.clone(), POOL, upstream.addr).await?;
    let flow = Flow {
        path: "/work",
        rate,
        deadline: phases.deadline,
    };
    let samples = traffic::offer(&format!("http://{}", gateway.addr), &[flow], phases.level).await;
    let meter = gateway.meter.clone();
    let admission = gateway.admission_stats().map(|(work, _)| work);
    gateway.stop().await?; // work left running counts too
    let (useful, wasted) = meter.work();
    // Goodput and latency once a queue had time to form: answers that arrived after the
    // first deadline (at most half the level) and before the senders stopped.
    let warm_up = phases.deadline.min(phases.level / 2);
    let all = summarize_arrivals(&samples, 0, (warm_up, phases.level));
    let length = (phases.level - warm_up).as_secs_f64();
    Ok(LoadRow {
        config: config.name(),
        multiple: 0.0,
        capacity: 0.0,
        offered: all.sent as f64 / length,
        goodput: all.ok as f64 / length,
        p50: all.p50,
        p99: all.p99,
        wasted: wasted.as_secs_f64() / (useful + wasted).as_secs_f64().max(1e-9),
        admission,
    })
}

/// `/work` at half the capacity and `/relay` at [`SLOW_RELAY_RATE`]; after the baseline the
/// upstream slows down to [`SLOW_LATENCY`] for the slow phase.
async fn slow_dependency(
    config: Config,
    app: &Arc<App>,
    upstream: &Upstream,
    capacity: f64,
    phases: &Phases,
) -> Result<SlowRow, String> {
    upstream.knobs.set_latency(UPSTREAM_LATENCY);
    let gateway = Gateway::start(config, app.clone(), POOL, upstream.addr).await?;
    let flows = [
        Flow {
            path: "/work",
            rate: capacity / 2.0,
            deadline: phases.deadline,
        },
        Flow {
            path: "/relay",
            rate: SLOW_RELAY_RATE,
            deadline: phases.deadline,
        },
    ];
    let length = phases.baseline + phases.slow;
    let knobs = upstream.knobs.clone();
    let baseline = phases.baseline;
    let slowdown = async move {
        tokio::time::sleep(baseline).await;
        knobs.set_latency(SLOW_LATENCY);
    };
    let base = format!("http://{}", gateway.addr);
    let (samples, (), series) = tokio::join!(
        traffic::offer(&base, &flows, length),
        slowdown,
        watch(gateway.meter.clone(), length),
    );
    upstream.knobs.set_latency(UPSTREAM_LATENCY);
    gateway.stop().await?;
    let before = summarize(&samples, 0, (Duration::ZERO, phases.baseline));
    let during = summarize(&samples, 0, (phases.baseline, length));
    let (base, slow): (Vec<_>, Vec<_>) = series.iter().partition(|p| p.at < phases.baseline);
    Ok(SlowRow {
        config: config.name(),
        baseline_p99: before.p99,
        slow_p99: during.p99,
        slow_ok: during.ok as f64 / during.sent.max(1) as f64,
        peak_in_flight: slow.iter().map(|p| p.in_flight).max().unwrap_or(0),
        rss_before: base.iter().filter_map(|p| p.rss).max(),
        rss_peak: slow.iter().filter_map(|p| p.rss).max(),
    })
}

/// `/relay` at [`RETRY_RATE`] while the upstream fails [`FAIL_PERCENT`] of its calls.
async fn retry_storm(
    config: Config,
    app: &Arc<App>,
    upstream: &Upstream,
    phases: &Phases,
) -> Result<RetryRow, String> {
    let gateway = Gateway::start(config, app.clone(), POOL, upstream.addr).await?;
    upstream.knobs.reset_calls();
    let flow = Flow {
        path: "/relay",
        rate: RETRY_RATE,
        deadline: phases.deadline,
    };
    let samples = traffic::offer(&format!("http://{}", gateway.addr), &[flow], phases.retry).await;
    gateway.stop().await?;
    let all = summarize(&samples, 0, (Duration::ZERO, Duration::MAX));
    Ok(RetryRow {
        config: config.name(),
        retries: config.retries(),
        offered: all.sent,
        upstream_calls: upstream.knobs.calls(),
        ok: all.ok,
        goodput: all.ok as f64 / phases.retry.as_secs_f64(),
    })
}

/// One look at the gateway.
struct Point {
    at: Duration,
    in_flight: u64,
    rss: Option<u64>,
}

/// Looks at the gateway every 50 ms for `length`.
async fn watch(meter: Arc<Meter>, length: Duration) -> Vec<Point> {
    let started = Instant::now();
    let mut points = Vec::new();
    while started.elapsed() < length {
        points.push(Point {
            at: started.elapsed(),
            in_flight: meter.in_flight(),
            rss: rss(),
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    points
}

/// The process's resident memory: `/proc/self/statm`'s second field, in pages (Linux's
/// 4 KiB); `None` where there is no such file.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
