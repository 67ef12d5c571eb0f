//! Panic safety: the promises of `tree/mod.rs` ("User code inside the tree"). A waker, an
//! after-func or a value's `Drop` that panics never leaves the tree half-updated, never stops
//! the deadline driver or the after-func pool, and reaches only whoever caused it.
//!
//! A panicking waker, after-func or value prints its panic message through the panic hook:
//! that output in this test binary is expected.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Wake, Waker};
use std::time::Duration;

use ctx_core::{Context, ContextKey, Error};

mod support;

use support::{Counting, PROMPTLY, eventually, poll, register};

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
// A panicking after-func spares the others on the pool.

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
