//! Seeded, time-boxed, multi-threaded stress tests of the context tree, through the public
//! API only.
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

// ---------------------------------------------------------------------------------------------
// a) tree stress
// ---------------------------------------------------------------------------------------------

const AFTER_FUNC_COUNT: &str = "after_func not run exactly once";

/// How deep a held context may be and still be picked as a parent.
const MAX_DEPTH: u32 = 48;
/// How many contexts the pool of parents to pick from holds at most.
const POOL_CAP: usize = 256;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Root,
    WithCancel,
    LongTimeout,
    ShortTimeout,
    WithValue,
    ValueThenCancel,
}

#[derive(Clone, Copy)]
struct Label {
    id: u64,
    kind: Kind,
    depth: u32,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} ({:?}, depth {})", self.id, self.kind, self.depth)
    }
}

/// A context the test holds, with what is needed to check it.
struct Held {
    label: Label,
    ctx: Context,
    /// The held context this one was derived from (weak: subtrees hold their members).
    parent: Option<Weak<Held>>,
    /// For a scope (the root included): every held context derived from it, transitively.
    subtree: Option<Mutex<Vec<Arc<Held>>>>,
    /// Waker registrations on this context.
    wakers: Mutex<Vec<Arc<WakerRec>>>,
}

struct WakerRec {
    on: Label,
    state: Mutex<WakerState>,
}

struct WakerState {
    /// `None` once the test dropped it (then nothing is expected).
    done: Option<Done>,
    /// The waker of the last poll that returned `Pending`: it must be woken.
    waker: Arc<CountWaker>,
}

struct AfterRec {
    on: String,
    count: Arc<AtomicUsize>,
    handle: Mutex<Option<AfterFunc>>,
    /// `stop()` returned true: `f` must never run.
    stopped: AtomicBool,
    handle_dropped: AtomicBool,
}

impl AfterRec {
    fn expected(&self) -> usize {
        if self.stopped.load(SeqCst) { 0 } else { 1 }
    }
}

#[derive(Default)]
struct Registry {
    pool: Vec<Arc<Held>>,
    scopes: Vec<(CancelScope, Arc<Held>)>,
    wakers: Vec<Arc<WakerRec>>,
    afters: Vec<Arc<AfterRec>>,
}

struct TreeRound<'a> {
    fails: &'a Fails,
    root: Arc<Held>,
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    created: AtomicU64,
    stop: AtomicBool,
}

#[derive(Default)]
struct TreeTotals {
    rounds: u64,
    contexts: u64,
    wakers: usize,
    afters: usize,
    cancels_checked: u64,
    /// Time with workers running (the rest is waiting for after-funcs).
    active: Duration,
}

impl TreeRound<'_> {
    /// A random held context to derive from or register on (the root if none is left).
    fn pick(&self, rng: &mut fastrand::Rng) -> Arc<Held> {
        let mut registry = lock(&self.registry);
        if registry.pool.is_empty() {
            return Arc::clone(&self.root);
        }
        let i = rng.usize(..registry.pool.len());
        let held = Arc::clone(&registry.pool[i]);
        if held.ctx.is_cancelled() && rng.bool() {
            registry.pool.swap_remove(i); // keep the pool mostly live; it stays checked
        }
        held
    }

    /// Records a new context derived from `parent`: in every enclosing scope's subtree, in
    /// the pool, and (with its scope) among the scopes to cancel.
    fn hold(
        &self,
        parent: &Arc<Held>,
        ctx: Context,
        kind: Kind,
        scope: Option<CancelScope>,
    ) -> Arc<Held> {
        let held = Arc::new(Held {
            label: Label {
                id: self.next_id.fetch_add(1, SeqCst),
                kind,
                depth: parent.label.depth + 1,
            },
            ctx,
            parent: Some(Arc::downgrade(parent)),
            subtree: scope.as_ref().map(|_| Mutex::new(Vec::new())),
            wakers: Mutex::new(Vec::new()),
        });
        self.created.fetch_add(1, SeqCst);
        let mut ancestor = Some(Arc::clone(parent));
        while let Some(a) = ancestor {
            if let Some(subtree) = &a.subtree {
                lock(subtree).push(Arc::clone(&held));
            }
            ancestor = a.parent.as_ref().and_then(Weak::upgrade);
        }
        let mut registry = lock(&self.registry);
        if registry.pool.len() < POOL_CAP && held.label.depth < MAX_DEPTH {
            registry.pool.push(Arc::clone(&held));
        }
        if let Some(scope) = scope {
            registry.scopes.push((scope, Arc::clone(&held)));
        }
        held
    }

    /// What every child must satisfy right after it is derived.
    fn check_born(&self, parent: &Held, parent_err: Option<Error>, child: &Context, what: &str) {
        if let Some(err) = parent_err
            && child.err() != Some(err)
        {
            self.fails.fail(
                "child of a done parent not born done",
                format!(
                    "{what} of {}, done with {err:?} before the call, was born with err() = {:?}",
                    parent.label,
                    child.err()
                ),
            );
        }
        if let Some(parent_deadline) = parent.ctx.deadline()
            && child.deadline().is_none_or(|d| d > parent_deadline)
        {
            self.fails.fail(
                "deadline",
                format!(
                    "{what} of {} has deadline {:?}, later than its parent's {parent_deadline:?}",
                    parent.label,
                    child.deadline()
                ),
            );
        }
    }

    fn derive(&self, rng: &mut fastrand::Rng, kind: Kind) {
        let parent = self.pick(rng);
        let parent_err = parent.ctx.err();
        match kind {
            Kind::WithCancel | Kind::LongTimeout | Kind::ShortTimeout => {
                let (scope, what) = match kind {
                    Kind::WithCancel => (parent.ctx.with_cancel(), "with_cancel"),
                    Kind::LongTimeout => (
                        parent.ctx.with_timeout(Duration::from_secs(3600)),
                        "with_timeout(1h)",
                    ),
                    _ => (
                        parent
                            .ctx
                            .with_timeout(Duration::from_micros(rng.u64(50..=500))),
                        "with_timeout(50-500us)",
                    ),
                };
                self.check_born(&parent, parent_err, &scope, what);
                if matches!(kind, Kind::WithCancel) && scope.deadline() != parent.ctx.deadline() {
                    self.fails.fail(
                        "deadline",
                        format!("with_cancel of {} changed the deadline", parent.label),
                    );
                }
                let ctx = scope.context().clone();
                self.hold(&parent, ctx, kind, Some(scope));
            }
            Kind::WithValue => {
                let id = self.next_id.load(SeqCst);
                let ctx = parent.ctx.with_value(Tag(id));
                self.check_born(&parent, parent_err, &ctx, "with_value");
                if ctx.value::<Tag>().map(|t| t.0) != Some(id) {
                    self.fails.fail(
                        "value lookup",
                        format!("with_value(Tag({id})) of {} lost its value", parent.label),
                    );
                }
                self.hold(&parent, ctx, kind, None);
            }
            Kind::ValueThenCancel => {
                let id = self.next_id.load(SeqCst);
                let value = parent.ctx.with_value(Inner(id));
                self.check_born(&parent, parent_err, &value, "with_value");
                let value = self.hold(&parent, value, Kind::WithValue, None);
                let scope = value.ctx.with_cancel();
                self.check_born(&value, parent_err, &scope, "with_cancel");
                if scope.value::<Inner>().map(|t| t.0) != Some(id) {
                    self.fails.fail(
                        "value lookup",
                        format!(
                            "with_value(Inner({id})).with_cancel() of {} lost the value",
                            parent.label
                        ),
                    );
                }
                let ctx = scope.context().clone();
                self.hold(&value, ctx, kind, Some(scope));
            }
            Kind::Root => unreachable!(),
        }
    }

    /// Cancels (or drops) a random scope, then checks its subtree at once.
    fn end_scope(&self, rng: &mut fastrand::Rng, drop_it: bool) {
        let (scope, held) = {
            let mut registry = lock(&self.registry);
            if registry.scopes.is_empty() {
                return;
            }
            let i = rng.usize(..registry.scopes.len());
            registry.scopes.swap_remove(i)
        };
        let what = if drop_it {
            drop(scope);
            "drop"
        } else {
            match rng.u8(..3) {
                0 => {
                    scope.cancel();
                    "cancel()"
                }
                1 => {
                    scope.cancel_with("stress");
                    "cancel_with()"
                }
                _ => {
                    let (_ctx, handle) = scope.into_parts();
                    handle.cancel();
                    "CancelHandle::cancel()"
                }
            }
        };
        self.check_subtree(what, &held);
    }

    /// Called right after `what` of `scope` returned: `scope` and everything the test holds
    /// below it must be done, and every waker registered on them must have been woken.
    fn check_subtree(&self, what: &str, scope: &Held) -> usize {
        let members: Vec<Arc<Held>> = scope
            .subtree
            .as_ref()
            .map_or_else(Vec::new, |s| lock(s).clone());
        for held in std::iter::once(scope).chain(members.iter().map(|m| &**m)) {
            if held.ctx.err().is_none() {
                let whom = if held.label.id == scope.label.id {
                    "the scope itself".to_owned()
                } else {
                    format!("its descendant {}", held.label)
                };
                self.fails.fail(
                    "descendant not done after cancel returned",
                    format!(
                        "{what} of {} returned, but {whom} is not done (err() is None)",
                        scope.label
                    ),
                );
            }
            for rec in lock(&held.wakers).iter() {
                let state = lock(&rec.state);
                if state.done.is_some() && state.waker.count() == 0 {
                    self.fails.fail("waker not woken by the time cancel returned", format!(
                        "{what} of {} returned, but a waker registered on {} (its poll returned Pending) was not woken",
                        scope.label, rec.on
                    ));
                }
            }
        }
        members.len()
    }

    fn register_waker(&self, rng: &mut fastrand::Rng) {
        let held = self.pick(rng);
        let waker = Arc::new(CountWaker::default());
        let mut done = held.ctx.done();
        match poll_with(&mut done, &waker) {
            Poll::Ready(err) => {
                if held.ctx.err() != Some(err) {
                    self.fails.fail(
                        "done() disagrees with err()",
                        format!(
                            "done() of {} resolved to {err:?}, but err() is {:?}",
                            held.label,
                            held.ctx.err()
                        ),
                    );
                }
            }
            Poll::Pending => {
                let rec = Arc::new(WakerRec {
                    on: held.label,
                    state: Mutex::new(WakerState {
                        done: Some(done),
                        waker,
                    }),
                });
                lock(&held.wakers).push(Arc::clone(&rec));
                lock(&self.registry).wakers.push(rec);
            }
        }
    }

    fn random_waker(&self, rng: &mut fastrand::Rng) -> Option<Arc<WakerRec>> {
        let registry = lock(&self.registry);
        (!registry.wakers.is_empty())
            .then(|| Arc::clone(&registry.wakers[rng.usize(..registry.wakers.len())]))
    }

    /// Polls a held `Done` again, with a new waker (replacing the registration) or the same.
    fn repoll_waker(&self, rng: &mut fastrand::Rng) {
        let Some(rec) = self.random_waker(rng) else {
            return;
        };
        let mut state = lock(&rec.state);
        let WakerState { done, waker } = &mut *state;
        let Some(done) = done else { return };
        let next = if rng.u8(..3) == 0 {
            Arc::clone(waker)
        } else {
            Arc::new(CountWaker::default())
        };
        if poll_with(done, &next).is_pending() {
            *waker = next;
        }
    }

    fn drop_waker(&self, rng: &mut fastrand::Rng) {
        if let Some(rec) = self.random_waker(rng) {
            let done = lock(&rec.state).done.take();
            drop(done);
        }
    }

    fn push_after(&self, rec: AfterRec) -> Arc<AfterRec> {
        let rec = Arc::new(rec);
        lock(&self.registry).afters.push(Arc::clone(&rec));
        rec
    }

    fn counting_after(ctx: &Context) -> (AfterFunc, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let after = ctx.after_func(move || {
            counter.fetch_add(1, SeqCst);
        });
        (after, count)
    }

    fn add_after(&self, rng: &mut fastrand::Rng) {
        let held = self.pick(rng);
        let (after, count) = Self::counting_after(&held.ctx);
        let keep = rng.u8(..6) != 0;
        let rec = self.push_after(AfterRec {
            on: held.label.to_string(),
            count,
            handle: Mutex::new(None),
            stopped: AtomicBool::new(false),
            handle_dropped: AtomicBool::new(!keep),
        });
        if keep {
            *lock(&rec.handle) = Some(after);
        } else {
            drop(after);
        }
    }

    fn random_after(&self, rng: &mut fastrand::Rng) -> Option<Arc<AfterRec>> {
        let registry = lock(&self.registry);
        (!registry.afters.is_empty())
            .then(|| Arc::clone(&registry.afters[rng.usize(..registry.afters.len())]))
    }

    fn stop_after(&self, rng: &mut fastrand::Rng) {
        let Some(rec) = self.random_after(rng) else {
            return;
        };
        let handle = lock(&rec.handle);
        if let Some(after) = handle.as_ref() {
            let ran_before = rec.count.load(SeqCst);
            if after.stop() {
                rec.stopped.store(true, SeqCst);
                if ran_before != 0 {
                    self.fails.fail(
                        "stop() true after f ran",
                        format!(
                            "AfterFunc::stop() on {} returned true after f had already run",
                            rec.on
                        ),
                    );
                }
            }
        }
    }

    fn drop_after_handle(&self, rng: &mut fastrand::Rng) {
        if let Some(rec) = self.random_after(rng) {
            let after = lock(&rec.handle).take();
            if after.is_some() {
                rec.handle_dropped.store(true, SeqCst);
            }
            drop(after);
        }
    }

    /// A scope nobody else references, with an after-func whose handle is dropped first;
    /// then the scope is cancelled or dropped: `f` must still run once.
    fn ephemeral_after(&self, rng: &mut fastrand::Rng) {
        let parent = self.pick(rng);
        let short = rng.bool();
        let scope = if short {
            parent
                .ctx
                .with_timeout(Duration::from_micros(rng.u64(50..=500)))
        } else {
            parent.ctx.with_cancel()
        };
        self.created.fetch_add(1, SeqCst);
        let (after, count) = Self::counting_after(&scope);
        let cancel = rng.bool();
        self.push_after(AfterRec {
            on: format!(
                "an unshared {} under {} whose AfterFunc was dropped, then the scope {}",
                if short {
                    "with_timeout(50-500us)"
                } else {
                    "with_cancel"
                },
                parent.label,
                if cancel { "cancelled" } else { "dropped" }
            ),
            count,
            handle: Mutex::new(None),
            stopped: AtomicBool::new(false),
            handle_dropped: AtomicBool::new(true),
        });
        drop(after);
        if cancel {
            scope.cancel();
        } else {
            drop(scope);
        }
    }

    fn worker(&self, rng: &mut fastrand::Rng) {
        while !self.stop.load(SeqCst) {
            match rng.u32(..100) {
                0..18 => self.derive(rng, Kind::WithCancel),
                18..24 => self.derive(rng, Kind::LongTimeout),
                24..28 => self.derive(rng, Kind::ShortTimeout),
                28..38 => self.derive(rng, Kind::WithValue),
                38..46 => self.derive(rng, Kind::ValueThenCancel),
                46..55 => self.end_scope(rng, true),
                55..64 => self.end_scope(rng, false),
                64..73 => self.register_waker(rng),
                73..77 => self.repoll_waker(rng),
                77..80 => self.drop_waker(rng),
                80..87 => self.add_after(rng),
                87..91 => self.stop_after(rng),
                91..94 => self.drop_after_handle(rng),
                _ => self.ephemeral_after(rng),
            }
        }
    }
}

fn tree_round(seed: u64, round: u64, workers: usize, fails: &Fails, totals: &mut TreeTotals) {
    let mut main_rng = rng(seed, round << 8);
    let root_scope = Context::background().with_cancel();
    let root = Arc::new(Held {
        label: Label {
            id: 0,
            kind: Kind::Root,
            depth: 0,
        },
        ctx: root_scope.context().clone(),
        parent: None,
        subtree: Some(Mutex::new(Vec::new())),
        wakers: Mutex::new(Vec::new()),
    });
    let state = TreeRound {
        fails,
        root: Arc::clone(&root),
        registry: Mutex::new(Registry {
            pool: vec![Arc::clone(&root)],
            ..Registry::default()
        }),
        next_id: AtomicU64::new(1),
        created: AtomicU64::new(1),
        stop: AtomicBool::new(false),
    };
    let cancel_at = Duration::from_micros(main_rng.u64(0..=15_000));
    let linger = Duration::from_micros(main_rng.u64(0..=2_000));
    let started = Instant::now();
    thread::scope(|s| {
        for w in 0..workers {
            let mut worker_rng = rng(seed, (round << 8) | (w as u64 + 1));
            let state = &state;
            s.spawn(move || {
                guarded(state.fails, &format!("round {round}: worker {w}"), || {
                    state.worker(&mut worker_rng)
                })
            });
        }
        thread::sleep(cancel_at);
        root_scope.cancel();
        state.check_subtree("cancel of the root", &root);
        thread::sleep(linger);
        state.stop.store(true, SeqCst);
    });
    totals.active += started.elapsed();
    // Children derived after the root's cancel returned are born done.
    let held = state.check_subtree("cancel of the root (after the workers stopped)", &root);

    let registry = state
        .registry
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    for rec in &registry.wakers {
        let state = lock(&rec.state);
        if state.done.is_some() && state.waker.count() == 0 {
            fails.fail("waker never woken", format!(
                "round {round}: at its end a waker registered on {} (Done still held) was never woken",
                rec.on
            ));
        }
    }
    let counters: Vec<_> = registry
        .afters
        .iter()
        .map(|a| (&*a.count, a.expected()))
        .collect();
    // Once an after-func was lost, later rounds wait less for theirs (the test fails anyway),
    // so the rest of the budget can look for other kinds of violation.
    let settle_for = if fails.has(AFTER_FUNC_COUNT) {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    settle(&counters, settle_for);
    for rec in &registry.afters {
        let (ran, expected) = (rec.count.load(SeqCst), rec.expected());
        if ran != expected {
            fails.fail(AFTER_FUNC_COUNT, format!(
                "round {round}: the after_func on {} ran {ran} time(s), expected {expected} (stop() returned true: {}, AfterFunc dropped: {}; waited up to {settle_for:?})",
                rec.on,
                rec.stopped.load(SeqCst),
                rec.handle_dropped.load(SeqCst),
            ));
        }
    }
    totals.rounds += 1;
    totals.contexts += state.created.load(SeqCst);
    totals.wakers += registry.wakers.len();
    totals.afters += registry.afters.len();
    totals.cancels_checked += held as u64;
}

#[test]
fn tree_stress() {
    let seed = seed("tree_stress");
    let fails = Fails::new("tree_stress", seed);
    let workers = threads();
    let started = Instant::now();
    let end = started + budget();
    let mut totals = TreeTotals::default();
    // Rounds go on after a violation, to report every kind the budget can find.
    loop {
        tree_round(seed, totals.rounds, workers, &fails, &mut totals);
        if Instant::now() >= end {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "tree_stress: seed = {seed}: {} rounds in {secs:.2} s, {workers} workers, {} contexts created ({:.0}/s while the workers ran), {} wakers registered, {} after-funcs; {} contexts held under the roots checked",
        totals.rounds,
        totals.contexts,
        totals.contexts as f64 / totals.active.as_secs_f64().max(1e-9),
        totals.wakers,
        totals.afters,
        totals.cancels_checked,
    );
    fails.assert_none();
}

// ---------------------------------------------------------------------------------------------
// b) timer stress
// ---------------------------------------------------------------------------------------------

/// `err()` read before the clock: if the deadline's error shows, the clock must be past it.
fn check_not_early(fails: &Fails, what: &str, ctx: &Context, deadline: Instant) {
    let err = ctx.err();
    let now = Instant::now();
    if err == Some(Error::DeadlineExceeded) && now < deadline {
        fails.fail(
            "early",
            format!(
                "{what}: DeadlineExceeded {:?} before the deadline",
                deadline - now
            ),
        );
    }
}

/// Waits for a deadline nobody cancels; returns its lateness, or records why not.
fn wait_fire(
    fails: &Fails,
    what: &str,
    ctx: &Context,
    deadline: Instant,
    bound: Duration,
) -> Option<Duration> {
    let wait = deadline.saturating_duration_since(Instant::now()) + bound;
    let got = ctx.wait_timeout(wait);
    let now = Instant::now();
    match got {
        None => {
            let err = ctx.err();
            let note = if err.is_none() {
                "deadline never fired"
            } else {
                "deadline fired too late"
            };
            fails.fail(note, format!(
                "{what}: waited {wait:?} (until {bound:?} past the deadline); err() is now {err:?}"
            ));
            None
        }
        Some(Error::DeadlineExceeded) if now < deadline => {
            fails.fail(
                "early",
                format!("{what}: fired {:?} before its deadline", deadline - now),
            );
            None
        }
        Some(Error::DeadlineExceeded) => Some(now - deadline),
        Some(other) => {
            fails.fail("wrong error", format!(
                "{what}: ended with {other:?}, but nobody cancelled it (expected DeadlineExceeded)"
            ));
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Wait,
    Cancel,
    Drop,
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

fn armer(fails: &Fails, rng: &mut fastrand::Rng, end: Instant, bound: Duration) -> Vec<Duration> {
    let bg = Context::background();
    let mut lateness = Vec::new();
    while Instant::now() < end && !fails.any() {
        let mut parents = Vec::new();
        let mut batch: Vec<(Instant, CancelScope, Fate, &str)> = Vec::new();
        for _ in 0..rng.usize(1..=8) {
            let now = Instant::now();
            let micros = |rng: &mut fastrand::Rng| Duration::from_micros(rng.u64(0..=2_000));
            let fate = match rng.u8(..4) {
                0 | 1 => Fate::Wait,
                2 => Fate::Cancel,
                _ => Fate::Drop,
            };
            match rng.u8(..10) {
                0 => {
                    let at = now.checked_sub(micros(rng)).unwrap_or(now);
                    let scope = bg.with_deadline(at);
                    if scope.err() != Some(Error::DeadlineExceeded) {
                        fails.fail("past deadline not born expired", format!(
                            "with_deadline({:?} in the past) was not born expired: err() = {:?}",
                            now - at,
                            scope.err()
                        ));
                    }
                }
                1 | 2 => {
                    let (parent_at, own_at) = (now + micros(rng), now + micros(rng));
                    let parent = bg.with_deadline(parent_at);
                    let child = parent.with_deadline(own_at);
                    let expected = parent_at.min(own_at);
                    if child.deadline() != Some(expected) {
                        fails.fail("deadline", format!(
                            "with_deadline under a deadline parent: deadline {:?}, expected the earlier {expected:?}",
                            child.deadline()
                        ));
                    }
                    parents.push(parent); // kept (not cancelled) until the batch is over
                    batch.push((
                        expected,
                        child,
                        fate,
                        "with_deadline under a deadline parent",
                    ));
                }
                _ => {
                    let d = micros(rng);
                    let (scope, what) = if rng.bool() {
                        (bg.with_timeout(d), "with_timeout(0-2ms)")
                    } else {
                        (bg.with_deadline(now + d), "with_deadline(now + 0-2ms)")
                    };
                    match scope.deadline() {
                        Some(at) if at >= now + d => batch.push((at, scope, fate, what)),
                        other => fails.fail(
                            "deadline",
                            format!(
                                "{what}: deadline() = {other:?}, expected at least now + {d:?}"
                            ),
                        ),
                    }
                }
            }
        }
        batch.sort_by_key(|(at, ..)| *at);
        for (at, scope, fate, what) in batch {
            match fate {
                Fate::Wait => lateness.extend(wait_fire(fails, what, &scope, at, bound)),
                Fate::Cancel | Fate::Drop => {
                    let jitter = Duration::from_micros(rng.u64(0..=300));
                    sleep_until(if rng.bool() {
                        at.checked_sub(jitter).unwrap_or(at)
                    } else {
                        at + jitter
                    });
                    check_not_early(fails, what, &scope, at);
                    let ctx = scope.context().clone();
                    if fate == Fate::Cancel {
                        scope.cancel();
                    } else {
                        drop(scope);
                    }
                    if ctx.err().is_none() {
                        fails.fail(
                            "cancel returned, context live",
                            format!(
                                "{what}: cancel/drop of its scope returned, but it is not done"
                            ),
                        );
                    }
                    check_not_early(fails, what, &ctx, at);
                }
            }
        }
        drop(parents);
    }
    lateness
}

/// Re-arms a 30–200 µs timeout the instant the previous one fired.
fn rearmer(fails: &Fails, rng: &mut fastrand::Rng, end: Instant, bound: Duration) -> Vec<Duration> {
    let bg = Context::background();
    let mut lateness = Vec::new();
    while Instant::now() < end && !fails.any() {
        let scope = bg.with_timeout(Duration::from_micros(rng.u64(30..=200)));
        let Some(at) = scope.deadline() else {
            fails.fail("deadline", "with_timeout(30-200us) has no deadline");
            break;
        };
        match wait_fire(
            fails,
            "a 30-200us timeout re-armed as the last one fired",
            &scope,
            at,
            bound,
        ) {
            Some(late) => lateness.push(late),
            None => break,
        }
    }
    lateness
}

/// Re-arms a 30–200 µs timeout the very instant the last one fired: it spins on
/// `is_cancelled` (no park, no wake-up latency), then 0–2 µs more, so its arms land anywhere
/// in the driver's way back to sleep, where a lost wake-up hides. Run alone, so no other
/// deadline wakes the driver and covers a lost wake-up up.
fn spin_rearmer(
    fails: &Fails,
    rng: &mut fastrand::Rng,
    end: Instant,
    bound: Duration,
) -> Vec<Duration> {
    let bg = Context::background();
    let what = "a 30-200us timeout re-armed (spinning) the instant the last one fired";
    let mut lateness = Vec::new();
    let mut scope = bg.with_timeout(Duration::from_micros(rng.u64(30..=200)));
    while !fails.any() {
        let Some(at) = scope.deadline() else {
            fails.fail("deadline", "with_timeout(30-200us) has no deadline");
            break;
        };
        let give_up = at + bound;
        while !scope.is_cancelled() {
            if Instant::now() >= give_up {
                fails.fail(
                    "deadline never fired",
                    format!(
                        "{what}: not done {bound:?} after its deadline (spinning on is_cancelled)"
                    ),
                );
                return lateness;
            }
            std::hint::spin_loop();
        }
        let fired = Instant::now(); // read after the state: never early means fired >= at
        match scope.err() {
            Some(Error::DeadlineExceeded) if fired < at => fails.fail(
                "early",
                format!("{what}: fired {:?} before its deadline", at - fired),
            ),
            Some(Error::DeadlineExceeded) => lateness.push(fired - at),
            other => fails.fail(
                "wrong error",
                format!("{what}: ended with {other:?}, expected DeadlineExceeded"),
            ),
        }
        if fired >= end {
            break;
        }
        let spin = Duration::from_nanos(rng.u64(0..=2_000));
        while fired.elapsed() < spin {
            std::hint::spin_loop();
        }
        let next = bg.with_timeout(Duration::from_micros(rng.u64(30..=200)));
        drop(std::mem::replace(&mut scope, next)); // the old one goes after the arm
    }
    lateness
}

#[test]
fn timer_stress() {
    let seed = seed("timer_stress");
    let fails = Fails::new("timer_stress", seed);
    let bound = late_bound();
    let start = Instant::now();
    let half = start + budget() / 2;

    // Phase 1 (half the budget): a spinning re-armer alone. First, because then (in the usual
    // order of this binary's tests) no other test has deadlines armed in this process that
    // would wake the driver and cover a lost wake-up up. Each slice runs on a fresh thread:
    // the driver's bookkeeping may depend on which thread arms (per-thread timer shards, say),
    // and a lost wake-up on where the arm lands relative to the driver's scan.
    let mut spun = Vec::new();
    let slices = 16;
    for slice in 0..slices {
        let slice_end = start + (half - start) * (slice + 1) / slices;
        let mut rng = rng(seed, 0x5B1 + u64::from(slice));
        let fails = &fails;
        spun.extend(thread::scope(|s| {
            s.spawn(move || {
                let mut got = Vec::new();
                guarded(fails, "spinning re-armer", || {
                    got = spin_rearmer(fails, &mut rng, slice_end, bound)
                });
                got
            })
            .join()
            .unwrap_or_default()
        }));
        if fails.any() {
            break;
        }
    }

    // Phase 2: armers and a blocking re-armer.
    let end = start + budget();
    let armers = threads().max(2) - 1;
    let (waited, rearmed) = thread::scope(|s| {
        let fails = &fails;
        let handles: Vec<_> = (0..armers)
            .map(|t| {
                let mut rng = rng(seed, t as u64 + 1);
                s.spawn(move || {
                    let mut got = Vec::new();
                    guarded(fails, &format!("armer {t}"), || {
                        got = armer(fails, &mut rng, end, bound)
                    });
                    got
                })
            })
            .collect();
        let mut rng = rng(seed, 0xA11);
        let mut rearmed = Vec::new();
        guarded(fails, "re-armer", || {
            rearmed = rearmer(fails, &mut rng, end, bound)
        });
        let waited: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        (waited, rearmed)
    });
    eprintln!(
        "timer_stress: seed = {seed}: {armers} armers; lateness seen by waiters: {}; re-armed timeouts: {}; re-armed (spinning, alone): {}",
        percentiles(waited),
        percentiles(rearmed),
        percentiles(spun)
    );
    fails.assert_none();
}

// ---------------------------------------------------------------------------------------------
// c) panic stress
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "CTX_STRESS_PANIC_CHILD";
const MARK: &str = "ctx stress: intentional panic";

static INTENTIONAL_PANICS: AtomicUsize = AtomicUsize::new(0);

/// A value that counts its drops.
struct Tracked(Arc<AtomicUsize>);
impl ContextKey for Tracked {
    const NAME: &'static str = "Tracked";
}
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A value whose `Drop` panics (unless already unwinding, which would abort).
struct Bomb;
impl ContextKey for Bomb {
    const NAME: &'static str = "Bomb";
}
impl Drop for Bomb {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("{MARK}: a ContextKey value's Drop");
        }
    }
}

struct PanicWaker;
impl Wake for PanicWaker {
    fn wake(self: Arc<Self>) {
        panic!("{MARK}: Waker::wake");
    }
    fn wake_by_ref(self: &Arc<Self>) {
        panic!("{MARK}: Waker::wake_by_ref");
    }
}

/// Runs the body in a child process: its panics may kill the deadline driver (a defect this
/// test looks for), which would fail the other tests of this binary too, and only there may
/// the expected panics be silenced without touching another test's panic hook.
#[test]
fn panic_stress() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return panic_stress_child();
    }
    let seed = seed("panic_stress");
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["panic_stress", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("CTX_STRESS_SEED", seed.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("could not start the test binary as a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprint!("{stderr}"); // its seed and figures
    } else {
        eprintln!("panic_stress: the child's output:\n{stdout}{stderr}");
    }
    let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    assert!(
        out.status.success(),
        "panic_stress: seed = {seed}: the child process failed ({}); the end of its stderr:\n{}\n(rerun with CTX_STRESS_SEED={seed})",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    );
}

fn panic_stress_child() {
    let seed = seed("panic_stress (child)");
    let fails = Fails::new("panic_stress", seed);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if panic_message(info.payload()).contains(MARK) {
            INTENTIONAL_PANICS.fetch_add(1, SeqCst);
        } else {
            default_hook(info);
        }
    }));
    let end = Instant::now() + budget();
    let mut rounds = 0;
    let mut contexts = 0;
    loop {
        contexts += panic_round(seed, rounds, &fails);
        rounds += 1;
        if fails.any() || Instant::now() >= end {
            break;
        }
    }
    eprintln!(
        "panic_stress: seed = {seed}: {rounds} rounds, {contexts} contexts, {} intentional panics (silenced)",
        INTENTIONAL_PANICS.load(SeqCst)
    );
    fails.assert_none();
}

/// Cancels, drops or `cancel_with`s a scope inside `catch_unwind`: a user panic during the
/// cancel may come back out of it (after the cancel finished) or be swallowed; both are fine.
fn end_catching(scope: CancelScope, how: u8) {
    let _ = catch_unwind(AssertUnwindSafe(move || match how % 3 {
        0 => scope.cancel(),
        1 => scope.cancel_with("stress"),
        _ => drop(scope),
    }));
}

/// One round; returns how many contexts it made.
fn panic_round(seed: u64, round: u64, fails: &Fails) -> usize {
    let mut rng = rng(seed, round);
    let bound = late_bound().max(Duration::from_secs(5));
    let value_drops = Arc::new(AtomicUsize::new(0));
    let mut tracked = 0;
    let root = Context::background().with_cancel();
    // A short deadline right under the root: the driver fires it, waking whatever waits on
    // it and its subtree (panicking wakers included). Nothing else keeps it alive in the
    // driver, so a value's panicking `Drop` can never run on the driver thread.
    let short = root.with_timeout(Duration::from_micros(rng.u64(200..=2_000)));
    let short_at = short.deadline().expect("with_timeout has a deadline");
    let mut held: Vec<Context> = vec![root.context().clone(), short.context().clone()];
    let mut under_short: Vec<Context> = vec![short.context().clone()];
    let mut scopes: Vec<CancelScope> = Vec::new();
    let mut wakers: Vec<(Done, Arc<CountWaker>, String)> = Vec::new();
    let mut panic_dones: Vec<Done> = Vec::new();
    let mut afters: Vec<(Option<AfterFunc>, Arc<AtomicUsize>, String)> = Vec::new();
    let mut panic_afters: Vec<AfterFunc> = Vec::new();
    let panicky_short = rng.bool();

    for _ in 0..rng.usize(20..=60) {
        let below_short = rng.u8(..3) == 0;
        let parent = if below_short {
            under_short[rng.usize(..under_short.len())].clone()
        } else {
            held[rng.usize(..held.len())].clone()
        };
        let child = match rng.u8(..12) {
            0..=2 => {
                let scope = parent.with_cancel();
                let ctx = scope.context().clone();
                scopes.push(scope);
                Some(ctx)
            }
            3 => {
                let scope = parent.with_timeout(Duration::from_secs(3600));
                let ctx = scope.context().clone();
                scopes.push(scope);
                Some(ctx)
            }
            4 | 5 => {
                tracked += 1;
                Some(parent.with_value(Tracked(Arc::clone(&value_drops))))
            }
            6 => Some(parent.with_value(Bomb)),
            7 | 8 => {
                let waker = Arc::new(CountWaker::default());
                let mut done = parent.done();
                if poll_with(&mut done, &waker).is_pending() {
                    wakers.push((done, waker, parent.to_string()));
                }
                None
            }
            9 => {
                let mut done = parent.done();
                if poll_with(&mut done, &Arc::new(PanicWaker)).is_pending() {
                    panic_dones.push(done);
                }
                None
            }
            10 => {
                panic_afters.push(parent.after_func(|| panic!("{MARK}: an after_func")));
                None
            }
            _ => {
                let count = Arc::new(AtomicUsize::new(0));
                let counter = Arc::clone(&count);
                let after = parent.after_func(move || {
                    counter.fetch_add(1, SeqCst);
                });
                let keep = rng.u8(..4) != 0;
                afters.push((keep.then_some(after), count, parent.to_string()));
                None
            }
        };
        if let Some(child) = child {
            if below_short {
                under_short.push(child.clone());
            }
            held.push(child);
        }
    }
    if panicky_short {
        let on = &under_short[rng.usize(..under_short.len())];
        let mut done = on.done();
        if poll_with(&mut done, &Arc::new(PanicWaker)).is_pending() {
            panic_dones.push(done);
        }
    }

    // 1. The driver fires the short deadline.
    if !done_by(&short, short_at + bound) {
        fails.fail("short deadline did not fire", format!(
            "round {round}: the short deadline under the root did not fire within {bound:?} (panicking waker below it: {panicky_short})"
        ));
    }
    // 2. Some scopes are ended first, then the root (or it is dropped), then the rest.
    rng.shuffle(&mut scopes);
    let first = rng.usize(..=scopes.len());
    let rest = scopes.split_off(first);
    for scope in scopes {
        end_catching(scope, rng.u8(..));
    }
    let root_how = rng.u8(..);
    end_catching(root, root_how);
    for scope in rest {
        end_catching(scope, rng.u8(..));
    }
    end_catching(short, rng.u8(..));

    // 3. Everything is done, every plain waker woken, every plain after-func run once.
    for ctx in &held {
        if ctx.err().is_none() {
            fails.fail("context not done after the root ended", format!(
                "round {round}: after the root's cancel returned (or panicked), {ctx} is not done"
            ));
        }
    }
    for (_, waker, on) in &wakers {
        if waker.count() == 0 {
            fails.fail(
                "non-panicking waker not woken",
                format!("round {round}: a non-panicking waker on {on} was never woken"),
            );
        }
    }
    let counters: Vec<_> = afters.iter().map(|(_, n, _)| (&**n, 1)).collect();
    settle(&counters, Duration::from_secs(10));
    for (handle, count, on) in &afters {
        let ran = count.load(SeqCst);
        if ran != 1 {
            fails.fail("non-panicking after_func not run exactly once", format!(
                "round {round}: a non-panicking after_func on {on} ran {ran} time(s), expected 1 (AfterFunc kept: {}; waited up to 10 s)",
                handle.is_some()
            ));
        }
    }
    // 4. The deadline driver survived.
    let fresh = Context::background().with_timeout(Duration::from_millis(5));
    let fresh_at = fresh.deadline().expect("with_timeout has a deadline");
    if !done_by(&fresh, fresh_at + bound) {
        fails.fail("deadline driver died", format!(
            "round {round}: a fresh with_timeout(5ms) did not fire within {bound:?}: the deadline driver did not survive the panics"
        ));
    }
    // 5. Dropping every reference drops every value, whatever Drop panicked before.
    let contexts = held.len();
    drop((
        wakers,
        panic_dones,
        afters,
        panic_afters,
        under_short,
        fresh,
    ));
    for ctx in held {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(ctx)));
    }
    if !settle(&[(&value_drops, tracked)], Duration::from_secs(10)) {
        fails.fail("values not dropped", format!(
            "round {round}: all contexts were dropped, but only {} of {tracked} values were (waited 10 s)",
            value_drops.load(SeqCst)
        ));
    }
    contexts
}
