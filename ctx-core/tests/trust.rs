//! Regression tests for the defects an outside review found in the core, one or more per
//! defect, and for the panic-safety promises of `tree/mod.rs` ("User code inside the tree").
//!
//! A panicking waker, after-func or value prints its panic message through the panic hook:
//! that output in this test binary is expected.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::task::{Context as TaskContext, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Context, ContextKey, Error};

/// Generous bound for "this should happen promptly" on a loaded 2-core machine.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A waker that counts its wakes, and panics on them if asked to.
struct Counting {
    wakes: AtomicUsize,
    panics: bool,
}

impl Counting {
    fn new(panics: bool) -> Arc<Counting> {
        Arc::new(Counting {
            wakes: AtomicUsize::new(0),
            panics,
        })
    }
    fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if self.panics {
            panic!("a waker panics on purpose");
        }
    }
}

/// Polls `done` once with `waker`, which registers it (or replaces the registered one).
fn poll(done: &mut ctx_core::Done, waker: &Waker) -> std::task::Poll<Error> {
    std::future::Future::poll(
        std::pin::Pin::new(done),
        &mut TaskContext::from_waker(waker),
    )
}

/// Registers `waker` on `ctx`'s end by polling a `Done` once; keep the `Done`.
fn register(ctx: &Context, waker: &Arc<Counting>) -> ctx_core::Done {
    let mut done = ctx.done();
    assert!(poll(&mut done, &Waker::from(waker.clone())).is_pending());
    done
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + PROMPTLY;
    while !cond() {
        assert!(Instant::now() < until, "never happened: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

// -----------------------------------------------------------------------------------------
// Defect 1: a cancel (or a scope's drop) that found its context already ended by an
// ancestor's walk returned before that walk reached the context's descendants.

#[test]
fn a_cancel_returns_only_once_its_subtree_is_done_even_if_an_ancestor_won() {
    for round in 0..2_000 {
        let root = Context::background().with_cancel();
        let mid = root.with_cancel();
        // A wide subtree below `mid`, so the root's walk takes a while to reach all of it.
        let leaves: Vec<_> = (0..64).map(|_| mid.with_value(Tag).with_cancel()).collect();
        let watched: Vec<Context> = leaves.iter().map(|leaf| leaf.context().clone()).collect();
        let start = Arc::new(Barrier::new(2));
        let root_canceller = {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                root.cancel();
            })
        };
        start.wait();
        if round % 2 == 0 {
            mid.cancel();
        } else {
            drop(mid);
        }
        let live = watched.iter().filter(|leaf| leaf.err().is_none()).count();
        assert_eq!(
            live, 0,
            "round {round}: {live} descendants live after cancel returned"
        );
        root_canceller.join().unwrap();
        drop(leaves);
    }
}

struct Tag;
impl ContextKey for Tag {
    const NAME: &'static str = "Tag";
}

/// A waker that, when woken, drops the `CancelScope` of the context it waits on, as an
/// executor that polls inline would when the woken task finishes.
struct DropsScope(std::sync::Mutex<Option<ctx_core::CancelScope>>);

impl Wake for DropsScope {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        drop(self.0.lock().unwrap().take());
    }
}

#[test]
fn a_waker_that_cancels_inside_the_walk_does_not_wait_for_itself() {
    let root = Context::background().with_cancel();
    let mid = root.with_cancel();
    let mid_ctx = mid.context().clone();
    let leaf = mid.with_cancel();
    let waker = Arc::new(DropsScope(std::sync::Mutex::new(Some(mid))));
    let mut done = mid_ctx.done();
    assert!(poll(&mut done, &Waker::from(waker.clone())).is_pending());
    // The root's walk wakes the waker under its lock; the waker's cancel of `mid` (already
    // done, its subtree being walked by this very thread) must not wait for that walk.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        root.cancel();
        tx.send(()).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(PROMPTLY),
        Ok(()),
        "the walk deadlocked on its own waker"
    );
    assert!(leaf.is_cancelled());
}

// -----------------------------------------------------------------------------------------
// Defect 2: an arm that landed while the driver rescanned after a fire was neither seen by
// the rescan nor woke the driver.

#[test]
fn a_timeout_rearmed_the_instant_the_previous_fired_always_fires() {
    let mut timeouts = [30u64, 200, 75, 120, 45, 160].iter().cycle();
    let until = Instant::now() + Duration::from_secs(2);
    let mut fired = 0;
    while Instant::now() < until {
        let timeout = Duration::from_micros(*timeouts.next().unwrap());
        let scope = Context::background().with_timeout(timeout);
        assert_eq!(
            scope.wait_timeout(PROMPTLY),
            Some(Error::DeadlineExceeded),
            "a {timeout:?} deadline never fired (after {fired} that did)"
        );
        fired += 1;
    }
    assert!(fired > 100, "only {fired} deadlines in 2 s");
}

// -----------------------------------------------------------------------------------------
// Defect 3: a waker that panicked when the driver woke it unwound the driver thread.

#[test]
fn a_waker_panicking_on_the_driver_stops_no_deadline() {
    for _ in 0..3 {
        let scope = Context::background().with_timeout(Duration::from_millis(5));
        let waker = Counting::new(true);
        let _done = register(&scope, &waker);
        assert_eq!(scope.wait_timeout(PROMPTLY), Some(Error::DeadlineExceeded));
        assert_eq!(waker.wakes(), 1);
    }
    // The driver survived all three panics.
    let later = Context::background().with_timeout(Duration::from_millis(5));
    assert_eq!(later.wait_timeout(PROMPTLY), Some(Error::DeadlineExceeded));
}

// -----------------------------------------------------------------------------------------
// Defect 4: a panic while `cancel` ran left live children, un-run after-funcs and un-woken
// waiters under a context that reported done.

#[test]
fn a_panicking_waker_leaves_no_half_cancelled_tree() {
    let root = Context::background().with_cancel();
    let mid = root.with_cancel();
    let leaves: Vec<_> = (0..10).map(|_| mid.with_cancel()).collect();
    let bad = Counting::new(true);
    let good: Vec<_> = (0..6).map(|_| Counting::new(false)).collect();
    // Panicking wakers at the root, in the middle and on a leaf; good ones everywhere.
    let mut held = vec![
        register(&root, &bad),
        register(&mid, &bad),
        register(&leaves[3], &bad),
    ];
    for (i, waker) in good.iter().enumerate() {
        let ctx: &Context = match i % 3 {
            0 => &root,
            1 => &mid,
            _ => &leaves[i],
        };
        held.push(register(ctx, waker));
    }
    let (ran_tx, ran_rx) = mpsc::channel();
    let afters: Vec<_> = leaves
        .iter()
        .map(|leaf| {
            let ran = ran_tx.clone();
            leaf.after_func(move || ran.send(()).unwrap())
        })
        .collect();
    let watched: Vec<Context> = leaves.iter().map(|leaf| leaf.context().clone()).collect();

    let outcome = catch_unwind(AssertUnwindSafe(|| root.cancel()));
    let payload = outcome.expect_err("the waker's panic resumes once the cancel is complete");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"a waker panics on purpose")
    );

    assert!(mid.is_cancelled());
    assert!(
        watched.iter().all(Context::is_cancelled),
        "a child left live"
    );
    for waker in &good {
        assert_eq!(waker.wakes(), 1, "a waiter was not woken");
    }
    assert_eq!(bad.wakes(), 3);
    for _ in &afters {
        ran_rx
            .recv_timeout(PROMPTLY)
            .expect("an after-func never ran");
    }
    drop(held);
}

#[test]
fn a_panicking_waker_during_a_drop_cancel_does_not_abort() {
    // A scope dropped while its thread is already unwinding: the waker's panic cannot
    // resume (that would abort); the cancel still completes.
    let scope = Context::background().with_cancel();
    let child = scope.with_cancel();
    let child_ctx = child.context().clone();
    let bad = Counting::new(true);
    let _done = register(&scope, &bad);
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        let _scope = scope; // dropped during the unwind below
        panic!("the caller's own panic");
    }));
    let payload = outcome.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the caller's own panic")
    );
    assert!(child_ctx.is_cancelled());
    assert_eq!(bad.wakes(), 1);
    drop(child);
}

// -----------------------------------------------------------------------------------------
// Defect 5: a value whose `Drop` panicked left this thread's iterative-drop flag set, so
// later chains dropped on the thread were never freed.

struct PanicOnDrop(Arc<AtomicBool>);
impl ContextKey for PanicOnDrop {
    const NAME: &'static str = "PanicOnDrop";
}
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        panic!("a value's drop panics on purpose");
    }
}

struct CountDrop(Arc<AtomicUsize>);
impl ContextKey for CountDrop {
    const NAME: &'static str = "CountDrop";
}
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_panicking_value_drop_frees_its_chain_and_spares_later_ones() {
    let freed = Arc::new(AtomicUsize::new(0));
    let panicked = Arc::new(AtomicBool::new(false));
    // Counted values above and below the panicking one: all are freed.
    let chain = Context::background()
        .with_value(CountDrop(freed.clone()))
        .with_value(PanicOnDrop(panicked.clone()))
        .with_value(CountDrop(freed.clone()))
        .with_without_cancel_and_values(&freed);
    let outcome = catch_unwind(AssertUnwindSafe(move || drop(chain)));
    assert!(
        outcome.is_err(),
        "the value's panic reaches whoever dropped it"
    );
    assert!(panicked.load(Ordering::SeqCst));
    assert_eq!(freed.load(Ordering::SeqCst), 4, "part of the chain leaked");

    // Later chains on this thread are freed as before.
    let later = Arc::new(AtomicUsize::new(0));
    let chain = (0..100).fold(Context::background(), |ctx, _| {
        ctx.with_value(CountDrop(later.clone()))
    });
    drop(chain);
    assert_eq!(later.load(Ordering::SeqCst), 100, "a later chain leaked");
}

trait ChainExt {
    fn with_without_cancel_and_values(self, freed: &Arc<AtomicUsize>) -> Context;
}

impl ChainExt for Context {
    /// Two more counted values, across a `without_cancel` node.
    fn with_without_cancel_and_values(self, freed: &Arc<AtomicUsize>) -> Context {
        self.with_value(CountDrop(freed.clone()))
            .without_cancel()
            .with_value(CountDrop(freed.clone()))
    }
}

// -----------------------------------------------------------------------------------------
// Defect 6: an after-func whose handle was dropped did not run when its scope, the sole
// remaining reference, was cancelled or dropped.

#[test]
fn an_after_func_with_a_dropped_handle_runs_when_its_sole_scope_ends() {
    type End = fn(ctx_core::CancelScope);
    let ends: [(&str, End); 3] = [
        ("cancel", |scope| scope.cancel()),
        ("drop", drop),
        ("handle drop", |scope| drop(scope.into_parts().1)),
    ];
    for (how, end) in ends {
        for through_value in [false, true] {
            let scope = Context::background().with_cancel();
            let (tx, rx) = mpsc::channel();
            let after = if through_value {
                scope
                    .with_value(Tag)
                    .after_func(move || tx.send(()).unwrap())
            } else {
                scope.after_func(move || tx.send(()).unwrap())
            };
            drop(after); // dropping does not stop it
            end(scope);
            assert_eq!(
                rx.recv_timeout(PROMPTLY),
                Ok(()),
                "after {how} (through a value child: {through_value}) the after-func never ran"
            );
        }
    }
}

#[test]
fn a_stopped_after_func_never_runs_when_its_sole_scope_ends() {
    let scope = Context::background().with_cancel();
    let after = scope.after_func(|| panic!("ran after a winning stop"));
    assert!(after.stop());
    drop(after);
    drop(scope);
    // A later one on a fresh scope runs: the pool is fine.
    let scope = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    drop(scope.after_func(move || tx.send(()).unwrap()));
    drop(scope);
    assert_eq!(rx.recv_timeout(PROMPTLY), Ok(()));
}

// -----------------------------------------------------------------------------------------
// After-funcs under load (defect 7): they run on a pool, so a burst starts no thread each,
// and a blocked one delays no other.

#[test]
fn a_blocked_after_func_delays_no_other() {
    let release = Arc::new(Barrier::new(5));
    let scopes: Vec<_> = (0..4)
        .map(|_| Context::background().with_cancel())
        .collect();
    let blocked: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let release = release.clone();
            scope.after_func(move || {
                release.wait();
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    let last = Context::background().with_cancel();
    let _after = last.after_func(move || tx.send(()).unwrap());
    drop(scopes); // four after-funcs block until all four run at once
    last.cancel();
    assert_eq!(
        rx.recv_timeout(PROMPTLY),
        Ok(()),
        "waited behind blocked after-funcs"
    );
    release.wait(); // all four were running at once, each on a worker of its own
    drop(blocked);
}

#[test]
fn a_panicking_after_func_spares_the_others() {
    let scope = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let afters: Vec<_> = (0..20)
        .map(|i| {
            let ran = ran.clone();
            scope.after_func(move || {
                if i % 4 == 0 {
                    panic!("an after-func panics on purpose");
                }
                ran.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    scope.cancel();
    eventually("every other after-func ran", || {
        ran.load(Ordering::SeqCst) == 15
    });
    drop(afters);
}

// -----------------------------------------------------------------------------------------
// User drops that panic: a replaced waker, a stopped after-func. They run outside every
// lock, reach whoever caused the drop, and leave the context working.

struct PanicsOnDrop;
impl Wake for PanicsOnDrop {
    fn wake(self: Arc<Self>) {}
}
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a waker's drop panics on purpose");
    }
}

#[test]
fn a_waker_whose_drop_panics_leaves_the_context_working() {
    let scope = Context::background().with_cancel();
    let mut done = scope.done();
    let first = Waker::from(Arc::new(PanicsOnDrop));
    assert!(poll(&mut done, &first).is_pending());
    drop(first); // only the registered clone is left
    // Replacing the registration drops the old waker: its panic reaches this poll...
    let good = Counting::new(false);
    let replaced = catch_unwind(AssertUnwindSafe(|| {
        poll(&mut done, &Waker::from(good.clone()))
    }));
    assert!(replaced.is_err());
    // ...and the context still works: the new waker is woken by the cancel.
    assert!(poll(&mut done, &Waker::from(good.clone())).is_pending());
    scope.cancel();
    assert!(good.wakes() >= 1);
    assert!(poll(&mut done, &Waker::from(good.clone())).is_ready());
}

struct PanicsWhenDropped;
impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("an after-func's capture panics on drop");
    }
}

#[test]
fn an_after_func_whose_drop_panics_leaves_the_context_working() {
    let scope = Context::background().with_cancel();
    let child = scope.with_cancel();
    let guard = PanicsWhenDropped;
    let after = scope.after_func(move || drop(guard));
    let stopped = catch_unwind(AssertUnwindSafe(|| after.stop()));
    assert!(
        stopped.is_err(),
        "the capture's drop panic reaches the caller of stop"
    );
    let (tx, rx) = mpsc::channel();
    let _other = scope.after_func(move || tx.send(()).unwrap());
    scope.cancel();
    assert!(child.is_cancelled());
    assert_eq!(rx.recv_timeout(PROMPTLY), Ok(()));
}
