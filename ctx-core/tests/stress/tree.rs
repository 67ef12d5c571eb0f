//! `tree_stress`: a random tree grown, cancelled and dropped by worker threads while the
//! main thread cancels its root (see `main.rs`).

#[allow(
    unused_imports,
    reason = "the test crate's shared imports, used in part"
)]
use super::*;

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
