//! Seeded, time-boxed, multi-threaded stress tests of the context tree, through the public
//! API only.
//!
//! One module per subject: `tree.rs`, `timer.rs`, `panic.rs`; this file holds what they
//! share (the environment, the failure log, wakers, keys).
//!
//! - `tree_stress`: worker threads grow, cancel and drop a random tree while the main thread
//!   cancels its root; after every cancel returns, the canceller checks that each context it
//!   holds below the cancelled scope is done and each waker registered there was woken.
//!   After-funcs run exactly once (never when `stop` returned true).
//! - `timer_stress`: first a 30–200 µs timeout re-armed (spinning, alone) the instant the
//!   last one fired; then deadlines of 0–2 ms (some in the past, some under an earlier
//!   parent deadline) armed, waited for, cancelled and dropped around their firing time by
//!   several threads while one more re-arms a timeout as soon as `wait` returns: never early,
//!   never more than `CTX_STRESS_LATE_MS` late.
//! - `panic_stress`: wakers, after-funcs and values whose `Drop` panic, mixed with normal
//!   ones; the tree still ends whole, the deadline driver survives, and once every context is
//!   dropped every (non-panicking) value is too. Runs in a child
//!   process (the test binary itself), so a driver killed by a panic cannot fail the other
//!   tests and its expected panics can be silenced without touching their panic hook.
//!
//! Environment:
//! - `CTX_STRESS_SECS`: time budget per test in seconds, fractions allowed (default 2).
//! - `CTX_STRESS_SEED`: the seed (default: from the clock). It is printed at the start
//!   (`seed = N`) and named in every failure. Thread interleavings are not reproducible; the
//!   seed reproduces each thread's choices.
//! - `CTX_STRESS_THREADS`: worker threads per test (default 4).
//! - `CTX_STRESS_LATE_MS`: how late a deadline may fire before it counts as never firing
//!   (default 1000; raise it under valgrind).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ctx_core::{AfterFunc, CancelScope, Context, ContextKey, Done, Error};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn env<T: FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn budget() -> Duration {
    Duration::from_secs_f64(env::<f64>("CTX_STRESS_SECS").unwrap_or(2.0).max(0.0))
}

fn threads() -> usize {
    env("CTX_STRESS_THREADS").unwrap_or(4).clamp(1, 64)
}

fn late_bound() -> Duration {
    Duration::from_millis(env("CTX_STRESS_LATE_MS").unwrap_or(1000))
}

fn seed(test: &str) -> u64 {
    let seed = env("CTX_STRESS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    eprintln!("{test}: seed = {seed} (rerun with CTX_STRESS_SEED={seed})");
    seed
}

/// An independent random stream of `seed`.
fn rng(seed: u64, stream: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<a non-string panic payload>".to_owned())
}

/// Collects violations from every thread, by kind; the test fails at its end with a count of
/// each kind and its first few messages, the seed and how to rerun.
struct Fails {
    test: &'static str,
    seed: u64,
    total: AtomicUsize,
    /// (kind, count, first messages), in order of first occurrence.
    kinds: Mutex<Vec<(&'static str, usize, Vec<String>)>>,
}

impl Fails {
    fn new(test: &'static str, seed: u64) -> Fails {
        Fails {
            test,
            seed,
            total: AtomicUsize::new(0),
            kinds: Mutex::new(Vec::new()),
        }
    }

    fn fail(&self, kind: &'static str, msg: impl Into<String>) {
        self.total.fetch_add(1, SeqCst);
        let mut kinds = lock(&self.kinds);
        let i = match kinds.iter().position(|(k, ..)| *k == kind) {
            Some(i) => i,
            None => {
                kinds.push((kind, 0, Vec::new()));
                kinds.len() - 1
            }
        };
        let (_, count, first) = &mut kinds[i];
        *count += 1;
        if first.len() < 4 {
            first.push(msg.into());
        }
    }

    fn any(&self) -> bool {
        self.total.load(SeqCst) != 0
    }

    fn has(&self, kind: &str) -> bool {
        lock(&self.kinds).iter().any(|(k, ..)| *k == kind)
    }

    fn assert_none(&self) {
        let total = self.total.load(SeqCst);
        let mut report = String::new();
        for (kind, count, first) in lock(&self.kinds).iter() {
            report += &format!("\n{kind}: {count} violation(s), e.g.:");
            for msg in first {
                report += &format!("\n  - {msg}");
            }
        }
        assert!(
            total == 0,
            "{}: seed = {}: {total} violation(s):{report}\n(rerun with CTX_STRESS_SEED={})",
            self.test,
            self.seed,
            self.seed,
        );
    }
}

/// Runs `f`, turning a panic into a violation (so the message carries the seed).
fn guarded(fails: &Fails, who: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        fails.fail(
            "panic",
            format!("{who} panicked: {}", panic_message(&*payload)),
        );
    }
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountWaker(AtomicUsize);

impl CountWaker {
    fn count(&self) -> usize {
        self.0.load(SeqCst)
    }
}

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn poll_with<W: Wake + Send + Sync + 'static>(done: &mut Done, waker: &Arc<W>) -> Poll<Error> {
    let waker = Waker::from(Arc::clone(waker));
    Pin::new(done).poll(&mut TaskContext::from_waker(&waker))
}

/// Waits (bounded) until every counter reached its expected value; true if they all did.
fn settle(counters: &[(&AtomicUsize, usize)], within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if counters.iter().all(|(n, want)| n.load(SeqCst) >= *want) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `ctx` is done or `until` passes; true if it is done.
fn done_by(ctx: &Context, until: Instant) -> bool {
    loop {
        if ctx.is_cancelled() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return ctx.is_cancelled();
        }
        let _ = ctx.wait_timeout((until - now).min(Duration::from_millis(1)));
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    format!(
        "n = {}, p50 = {:?}, p99 = {:?}, max = {:?}",
        samples.len(),
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    )
}

struct Tag(u64);
impl ContextKey for Tag {
    const NAME: &'static str = "Tag";
}

struct Inner(u64);
impl ContextKey for Inner {
    const NAME: &'static str = "Inner";
}

mod panic;
mod timer;
mod tree;
