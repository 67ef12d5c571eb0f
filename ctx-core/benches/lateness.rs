//! Deadline lateness: how long after its `deadline()` a context actually ends.
//!
//! - A: 10,000 `with_timeout` contexts with random timeouts within 200 ms, each with an
//!   `after_func` that records when it ran; lateness = that instant − the deadline.
//!   Goal: p99 ≤ 20 ms.
//! - B: 100,000 `with_timeout` contexts pending (timeouts spread over 10–60 s, so they stay
//!   pending) while 2 watcher threads (one per core) each derive a 1–20 ms timeout, `wait()`
//!   on it and record wake − deadline, for about 2 s. Goal: p99 ≤ 2 ms.
//! - B churn (no goal, for the record): the same, but the pending timeouts are spread over
//!   0–1 s and re-armed as they fire, so the driver also fires ~100,000 deadlines a second,
//!   and 4 watchers compete for the 2 cores.
//!
//! Run with `cargo bench -p ctx-core --bench lateness`. Without `--bench` (as
//! `cargo test --benches` runs it) it does a quick, smaller pass.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{CancelScope, Context};

const SEED: u64 = 0x5EED_1A7E;

struct Summary {
    samples: Vec<Duration>,
}

impl Summary {
    fn new(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        Summary { samples }
    }

    fn at(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples[((self.samples.len() - 1) as f64 * p).round() as usize]
    }

    fn line(&self) -> String {
        format!(
            "n = {}, p50 = {:?}, p99 = {:?}, max = {:?}",
            self.samples.len(),
            self.at(0.50),
            self.at(0.99),
            self.samples.last().copied().unwrap_or_default()
        )
    }

    fn verdict(&self, goal: Duration) -> &'static str {
        if !self.samples.is_empty() && self.at(0.99) <= goal {
            "PASS"
        } else {
            "MISS"
        }
    }
}

/// Scenario A; returns the lateness of each after-func that ran, how many never ran within
/// 30 s after the last deadline, and how many ran before their deadline.
fn after_funcs(n: usize, rng: &mut fastrand::Rng) -> (Vec<Duration>, usize, usize) {
    const NOT_YET: u64 = u64::MAX;
    let base = Instant::now();
    let ran: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(NOT_YET)).collect());
    let mut armed = Vec::with_capacity(n);
    for i in 0..n {
        let scope = Context::background().with_timeout(Duration::from_micros(rng.u64(0..200_000)));
        let deadline = scope.deadline().expect("with_timeout has a deadline");
        let ran = Arc::clone(&ran);
        let after = scope.after_func(move || {
            ran[i].store(base.elapsed().as_nanos() as u64, SeqCst);
        });
        armed.push((scope, after, deadline));
    }
    let latest = armed.iter().map(|(_, _, d)| *d).max().unwrap_or(base);
    let give_up = latest + Duration::from_secs(30);
    while ran.iter().any(|t| t.load(SeqCst) == NOT_YET) && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(5));
    }
    let (mut lateness, mut missing, mut early) = (Vec::with_capacity(n), 0, 0);
    for (i, (_, _, deadline)) in armed.iter().enumerate() {
        match ran[i].load(SeqCst) {
            NOT_YET => missing += 1,
            nanos => {
                let at = base + Duration::from_nanos(nanos);
                if at < *deadline {
                    early += 1;
                }
                lateness.push(at.saturating_duration_since(*deadline));
            }
        }
    }
    (lateness, missing, early)
}

/// Scenario B; returns the watchers' lateness samples, how many watched deadlines never fired
/// within 10 s, and how many background contexts were re-armed.
fn pending_load(
    pending: usize,
    watchers: usize,
    run_for: Duration,
    churn: bool,
    rng: &mut fastrand::Rng,
) -> (Vec<Duration>, usize, u64) {
    let bg = Context::background();
    let spread = move |rng: &mut fastrand::Rng| match churn {
        true => Duration::from_micros(rng.u64(0..1_000_000)),
        false => Duration::from_micros(rng.u64(10_000_000..60_000_000)),
    };
    let mut armed: Vec<CancelScope> = (0..pending).map(|_| bg.with_timeout(spread(rng))).collect();
    let stop = AtomicBool::new(false);
    let mut refill_rng = fastrand::Rng::with_seed(rng.u64(..));
    let watcher_seeds: Vec<u64> = (0..watchers).map(|_| rng.u64(..)).collect();
    thread::scope(|s| {
        let stop = &stop;
        let refill = s.spawn(move || {
            let mut rearmed = 0;
            while churn && !stop.load(SeqCst) {
                for slot in armed.iter_mut() {
                    if slot.is_cancelled() {
                        *slot = bg.with_timeout(spread(&mut refill_rng));
                        rearmed += 1;
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            rearmed
        });
        let watching: Vec<_> = watcher_seeds
            .into_iter()
            .map(|seed| {
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    let (mut lateness, mut missing) = (Vec::new(), 0);
                    while !stop.load(SeqCst) {
                        let timeout = Duration::from_micros(rng.u64(1_000..=20_000));
                        let scope = Context::background().with_timeout(timeout);
                        let deadline = scope.deadline().expect("with_timeout has a deadline");
                        match scope.wait_timeout(timeout + Duration::from_secs(10)) {
                            Some(_) => {
                                lateness.push(Instant::now().saturating_duration_since(deadline))
                            }
                            None => missing += 1,
                        }
                    }
                    (lateness, missing)
                })
            })
            .collect();
        thread::sleep(run_for);
        stop.store(true, SeqCst);
        let (mut lateness, mut missing) = (Vec::new(), 0);
        for watcher in watching {
            let (l, m) = watcher.join().expect("a watcher panicked");
            lateness.extend(l);
            missing += m;
        }
        (
            lateness,
            missing,
            refill.join().expect("the refill thread panicked"),
        )
    })
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let (a_n, b_pending, b_for) = if quick {
        (500, 5_000, Duration::from_millis(200))
    } else {
        (10_000, 100_000, Duration::from_secs(2))
    };
    let mut rng = fastrand::Rng::with_seed(SEED);

    let started = Instant::now();
    let (lateness, missing, early) = after_funcs(a_n, &mut rng);
    let a = Summary::new(lateness);
    let a_goal = Duration::from_millis(20);
    println!(
        "lateness A: {a_n} with_timeout (0-200 ms) + after_func: {}; never ran: {missing}, ran early: {early}; took {:.2?}",
        a.line(),
        started.elapsed()
    );
    println!(
        "  goal A p99 <= {a_goal:?}: {}",
        if missing == 0 && early == 0 {
            a.verdict(a_goal)
        } else {
            "MISS"
        }
    );

    for (name, churn, watchers) in [("B", false, 2), ("B churn", true, 4)] {
        let started = Instant::now();
        let (lateness, missing, rearmed) =
            pending_load(b_pending, watchers, b_for, churn, &mut rng);
        let b = Summary::new(lateness);
        let b_goal = Duration::from_millis(2);
        let spread = if churn {
            "0-1 s, re-armed as they fired"
        } else {
            "10-60 s"
        };
        println!(
            "lateness {name}: {b_pending} pending with_timeout ({spread}; {rearmed} re-armed), {watchers} watchers waiting on 1-20 ms timeouts for {b_for:?}: {}; never fired: {missing}; took {:.2?}",
            b.line(),
            started.elapsed()
        );
        if !churn {
            println!(
                "  goal B p99 <= {b_goal:?}: {}",
                if missing == 0 {
                    b.verdict(b_goal)
                } else {
                    "MISS"
                }
            );
        } else if missing > 0 {
            println!("  MISS: {missing} watched deadlines never fired");
        }
    }
}
