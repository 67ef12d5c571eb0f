//! Allocation counts of the hot operations, in the spirit of Go's `TestAllocs`: a counting
//! global allocator, counted per thread so tests running in parallel do not interfere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use ctx_core::{Context, ContextKey};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread (its result is dropped after counting).
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (ALLOCATIONS.with(Cell::get) - before, result)
}

struct Key(u64);
impl ContextKey for Key {
    const NAME: &'static str = "Key";
}

struct Absent;
impl ContextKey for Absent {
    const NAME: &'static str = "Absent";
}

#[test]
fn roots_allocate_nothing() {
    assert_eq!(allocations(Context::background).0, 0);
    assert_eq!(allocations(Context::todo).0, 0);
    assert_eq!(allocations(Context::current).0, 0);
}

#[test]
fn each_derivation_is_one_allocation() {
    // On a thread of its own, which has no kept node yet (a dropped scope's node is kept
    // for this thread's next derivation: see the next test). Every result here is kept
    // alive, so nothing is kept meanwhile.
    std::thread::spawn(|| {
        let bg = Context::background();
        let (count, first) = allocations(|| bg.with_cancel());
        assert_eq!(count, 1, "with_cancel of background");
        let (count, parent) = allocations(|| first.with_cancel());
        assert_eq!(count, 1, "with_cancel of a cancellable parent");
        let siblings: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
        let (count, sibling) = allocations(|| parent.with_cancel());
        assert_eq!(count, 1, "registration with siblings present");
        let (count, value) = allocations(|| parent.with_value(Key(1)));
        assert_eq!(count, 1, "with_value");
        let (count, without) = allocations(|| parent.without_cancel());
        assert_eq!(count, 1, "without_cancel");
        // The first deadline starts the driver and grows its heap; after that, one
        // allocation.
        let started = parent.with_timeout(Duration::from_secs(3600));
        let (count, timed) = allocations(|| parent.with_timeout(Duration::from_secs(3600)));
        assert_eq!(count, 1, "with_timeout");
        drop((siblings, sibling, value, without, started, timed, parent));
    })
    .join()
    .expect("the counting thread panicked");
}

#[test]
fn a_dropped_scope_s_node_is_reused_without_allocating() {
    std::thread::spawn(|| {
        let bg = Context::background();
        let parent = bg.with_cancel();
        drop(parent.with_cancel());
        let (count, reused) = allocations(|| parent.with_cancel());
        assert_eq!(count, 0, "with_cancel after a scope was dropped");
        drop(reused);
        let (count, reused) = allocations(|| parent.without_cancel());
        assert_eq!(count, 0, "without_cancel is built in a kept node too");
        drop(reused);
        // Deadlines: once the driver runs and its heap has room, none at all.
        for _ in 0..3 {
            drop(parent.with_timeout(Duration::from_secs(3600)));
        }
        let (count, timed) = allocations(|| parent.with_timeout(Duration::from_secs(3600)));
        assert_eq!(count, 0, "with_timeout after a deadline scope was dropped");
        // A value node is never built in a kept node (its value is not `()`).
        let (count, value) = allocations(|| timed.with_value(Key(2)));
        assert_eq!(count, 1, "with_value");
        drop((value, timed));
    })
    .join()
    .expect("the counting thread panicked");
}

#[test]
fn cancelling_allocates_nothing() {
    let root = Context::background().with_cancel();
    let mid = root.with_cancel();
    let leaves: Vec<_> = (0..8)
        .map(|_| mid.with_value(Key(0)).with_cancel())
        .collect();
    let timed = mid.with_timeout(Duration::from_secs(3600));
    let (count, ()) = allocations(|| root.cancel());
    assert_eq!(count, 0);
    assert!(leaves.iter().all(|l| l.is_cancelled()) && timed.is_cancelled());

    let chain_root = Context::background().with_cancel();
    let mut chain = Vec::new();
    for _ in 0..100 {
        let next = chain.last().map_or_else(
            || chain_root.with_cancel(),
            |c: &ctx_core::CancelScope| c.with_cancel(),
        );
        chain.push(next);
    }
    assert_eq!(allocations(|| chain_root.cancel()).0, 0, "depth-100 chain");
    assert_eq!(
        allocations(|| drop(chain)).0,
        0,
        "dropping allocates nothing either"
    );
}

#[test]
fn queries_allocate_nothing() {
    let scope = Context::background().with_value(Key(7)).with_cancel();
    let (count, ()) = allocations(|| {
        for _ in 0..100 {
            assert!(!scope.is_cancelled());
            assert!(scope.checkpoint().is_ok());
            assert!(scope.err().is_none());
            assert_eq!(scope.value::<Key>().map(|k| k.0), Some(7));
            assert!(scope.value::<Absent>().is_none());
            assert!(scope.deadline().is_none());
            drop(scope.done()); // creating a Done is free until it is polled pending
        }
    });
    assert_eq!(count, 0);
}

#[test]
fn run_on_a_ready_future_allocates_nothing() {
    let scope = Context::background().with_cancel();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let (count, ready) = allocations(|| {
        let mut run = std::pin::pin!(scope.run(std::future::ready(3)));
        std::future::Future::poll(run.as_mut(), &mut cx)
    });
    assert_eq!(count, 0);
    assert_eq!(ready, std::task::Poll::Ready(Ok(3)));
}
