//! Reusing the memory of freed cancel nodes, per thread.
//!
//! When the last reference to a cancellable context is dropped (by its scope, the common end
//! of a request's scope once its children, waiters and clones are gone, or by its last
//! `Context`), its node is emptied in place, exactly as if it were freed (`Node`'s `Drop`
//! runs: unlinked, disarmed, after-funcs dispatched, parent released), and the empty
//! allocation stays on this thread's free list instead of going back to the allocator. The
//! next node this thread derives with a `()` value (a cancel, deadline or `without_cancel`
//! node) is built in it.
//!
//! perf (bench service, with_timeout_100k and 1k): with many contexts alive, the order a general-purpose allocator hands freed blocks
//! back in decides how many cache misses building and dropping the next ones take (glibc's
//! fast bins and tcache reverse runs of them), and its free path reads the neighbouring
//! block. A per-thread LIFO list costs a load and a store, and hands back the memory this
//! thread touched last.
//!
//! # Invariants
//!
//! Cited as "recycling invariant N" (the tree's own list is in `tree/mod.rs`).
//!
//! 1. **Only unique, plain nodes are kept.** A node is kept only if it is a `Kind::Cancel`
//!    node that is not merged, which `derive_child` and `derive_cancel` make as an
//!    `Arc<Node<()>>` (so converting its `NodeRef` back to `Arc<Node<()>>` is the inverse of
//!    the unsizing coercion that made it, as `Arc::from_raw` requires), and only once
//!    `Arc::get_mut` proved no other strong or weak reference exists (the timer's weak one is
//!    released first). Nothing can then reach the memory but us.
//! 2. **A kept block is empty.** Its node was dropped in place before it was kept; a kept
//!    block is an `Arc<MaybeUninit<Node<()>>>` whose first word links the next kept block.
//! 3. **Bounded, process-wide.** A thread keeps at most as many blocks as its quota, and its
//!    quota is at most [`PER_THREAD`] blocks, granted in chunks of [`CHUNK`] from one
//!    process-wide budget of [`BUDGET_BLOCKS`]: the sum of all quotas never exceeds it,
//!    however many threads there are. A thread whose kept blocks fall two chunks below its
//!    quota gives a chunk back; a thread that exits frees its blocks and gives its whole
//!    quota back. Past its quota (or with no budget left), a freed node goes back to the
//!    allocator as usual.
//!
//! At the release build's node size (about 120 bytes) the budget is about 2 MiB for the
//! whole process; a thread keeps at most about 120 KiB. A thread's quota covers a request
//! loop that keeps up to a thousand scopes alive at once (`service`'s 1k row), where reuse
//! pays most; beyond that, freed nodes go back to the allocator.

use std::any::TypeId;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{Kind, Node, NodeRef, timer};

/// An empty node allocation (recycling invariant 2).
type Blank = MaybeUninit<Node<()>>;

/// The most blocks one thread keeps (recycling invariant 3). Small under loom, so that the
/// models run out of quota and budget and take every path.
#[cfg(not(ctx_loom))]
pub(in crate::context) const PER_THREAD: usize = 1_024;
#[cfg(ctx_loom)]
pub(in crate::context) const PER_THREAD: usize = 2;

/// The quota a thread takes from, or gives back to, the budget at once.
#[cfg(not(ctx_loom))]
const CHUNK: usize = 128;
#[cfg(ctx_loom)]
const CHUNK: usize = 1;

/// The most blocks all threads together keep (recycling invariant 3).
#[cfg(not(ctx_loom))]
pub(in crate::context) const BUDGET_BLOCKS: usize = 16_384;
#[cfg(ctx_loom)]
pub(in crate::context) const BUDGET_BLOCKS: usize = 3;

const _: () = assert!(PER_THREAD.is_multiple_of(CHUNK) && BUDGET_BLOCKS >= CHUNK);
#[cfg(not(ctx_loom))]
const _: () = assert!(
    PER_THREAD == 1_024 && BUDGET_BLOCKS == 16_384,
    "`CancelScope`'s docs and the README give these figures"
);

/// The blocks no thread has a quota for.
///
/// std's atomic in the loom build too: it publishes no memory (a count, `Relaxed`), and a
/// thread gives its quota back when its thread-locals are dropped, which loom does for a
/// model's main thread after it has torn down the model's statics. Loom's threads run one at
/// a time, so the count is exact there and is whole again when each model ends.
fn budget() -> &'static std::sync::atomic::AtomicUsize {
    static BUDGET: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(BUDGET_BLOCKS);
    &BUDGET
}

/// Takes a chunk of quota from the budget, if it has one.
fn grant() -> bool {
    let budget = budget();
    let mut left = budget.load(Relaxed);
    loop {
        if left < CHUNK {
            return false;
        }
        match budget.compare_exchange_weak(left, left - CHUNK, Relaxed, Relaxed) {
            Ok(_) => return true,
            Err(now) => left = now,
        }
    }
}

/// This thread's kept blocks: a LIFO list threaded through their first words.
struct Kept {
    head: Cell<*const Blank>,
    len: Cell<usize>,
    /// How many blocks this thread may keep: granted from the budget, at most `PER_THREAD`.
    quota: Cell<usize>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        while let Some(blank) = self.pop() {
            drop(blank);
        }
        budget().fetch_add(self.quota.replace(0), Relaxed);
    }
}

impl Kept {
    const fn new() -> Kept {
        Kept {
            head: Cell::new(ptr::null()),
            len: Cell::new(0),
            quota: Cell::new(0),
        }
    }

    fn pop(&self) -> Option<Arc<Blank>> {
        let head = self.head.get();
        if head.is_null() {
            return None;
        }
        // SAFETY: `head` came from `Arc::into_raw` in `push`, and its first word holds the
        // next block's pointer (recycling invariant 2); the list owns that reference, now
        // ours.
        let blank = unsafe {
            self.head.set(head.cast::<*const Blank>().read());
            Arc::from_raw(head)
        };
        let len = self.len.get() - 1;
        self.len.set(len);
        if len + 2 * CHUNK <= self.quota.get() {
            self.quota.set(self.quota.get() - CHUNK);
            budget().fetch_add(CHUNK, Relaxed);
        }
        Some(blank)
    }

    /// Keeps `blank` (empty and unique: recycling invariants 1 and 2), or gives it back if
    /// this thread's quota is full and cannot grow (recycling invariant 3).
    fn push(&self, blank: Arc<Blank>) -> Result<(), Arc<Blank>> {
        let len = self.len.get();
        if len >= self.quota.get() {
            if self.quota.get() >= PER_THREAD || !grant() {
                return Err(blank);
            }
            self.quota.set(self.quota.get() + CHUNK);
        }
        // SAFETY: the block is empty and ours alone (recycling invariants 1, 2), and
        // `Arc::as_ptr` derives the pointer from the allocation, so it may be written; a
        // `Node<()>` is pointer-aligned and larger than a pointer.
        unsafe {
            Arc::as_ptr(&blank)
                .cast_mut()
                .cast::<*const Blank>()
                .write(self.head.get());
        }
        self.head.set(Arc::into_raw(blank));
        self.len.set(len + 1);
        Ok(())
    }
}

#[cfg(not(ctx_loom))]
std::thread_local! {
    static KEPT: Kept = const { Kept::new() };
}

#[cfg(ctx_loom)]
loom::thread_local! {
    static KEPT: Kept = Kept::new();
}

/// An empty allocation for a `Node<V>`: a kept one if `V` is `()` and this thread has one.
#[inline]
pub(super) fn take<V: 'static>() -> Option<Arc<MaybeUninit<Node<V>>>> {
    if TypeId::of::<V>() != TypeId::of::<()>() {
        return None;
    }
    let blank = KEPT.try_with(Kept::pop).ok().flatten()?;
    // SAFETY: `V` is `()`, so this is the same type.
    Some(unsafe { Arc::from_raw(Arc::into_raw(blank).cast::<MaybeUninit<Node<V>>>()) })
}

/// Frees `node`, the last reference a scope or context held, keeping its memory for reuse
/// if it is a plain cancel node that nothing else references (recycling invariant 1).
pub(in crate::context) fn release(node: NodeRef) {
    let Kind::Cancel(core) = &node.kind else {
        return drop(node);
    };
    if core.is_merged() {
        return drop(node);
    }
    if core.has_own_deadline() {
        timer::disarm(core); // the timer's weak reference goes (its drop would do the same)
    }
    // SAFETY: a cancel node that is not merged was made as an `Arc<Node<()>>` (recycling
    // invariant 1).
    let mut node = unsafe { Arc::from_raw(Arc::into_raw(node).cast::<Node<()>>()) };
    if Arc::get_mut(&mut node).is_none() {
        return drop(node); // the deadline driver holds it: it is firing it right now
    }
    // Unique from here on: no other `Arc` or `Weak` exists to make another from.
    // SAFETY: `MaybeUninit<T>` has `T`'s size and alignment.
    let blank = unsafe { Arc::from_raw(Arc::into_raw(node).cast::<Blank>()) };
    // SAFETY: the node is initialised and ours alone (so its memory may be written through
    // the allocation's pointer, as in `Link::derive`); it is dropped once, here, and the
    // block is empty from now on (if a drop panics, unwinding frees the block unread).
    unsafe { ptr::drop_in_place(Arc::as_ptr(&blank).cast_mut().cast::<Node<()>>()) };
    if let Ok(Err(blank)) = KEPT.try_with(move |kept| kept.push(blank)) {
        drop(blank);
    }
}

/// How many blocks this thread keeps.
#[cfg(any(test, ctx_loom))]
pub(in crate::context) fn kept() -> usize {
    KEPT.with(|kept| kept.len.get())
}

/// How many blocks no thread has a quota for.
#[cfg(ctx_loom)]
pub(in crate::context) fn budget_left() -> usize {
    budget().load(Relaxed)
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::time::Duration;

    use super::{PER_THREAD, kept};
    use crate::{Context, ContextKey};

    /// Where a context's core lives: the identity of its node's memory.
    fn address(ctx: &Context) -> *const super::super::Core {
        ctx.core().expect("a cancellable context")
    }

    /// One recycling test at a time: the budget is process-wide, and one of them uses it all.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on a thread of its own, whose list starts empty.
    fn on_a_new_thread(f: impl FnOnce() + Send + 'static) {
        let _serial = serial();
        std::thread::spawn(f)
            .join()
            .expect("the test thread panicked");
    }

    #[test]
    fn a_dropped_scope_s_node_is_rebuilt_in_place_and_starts_fresh() {
        on_a_new_thread(|| {
            let bg = Context::background();
            // A scope that ended in every way a node can end: its deadline fired (a cause,
            // an error, a timer slot), with a waiter registered and a child cancelled.
            let old = bg.with_timeout(Duration::from_millis(200)); // fires after the poll
            let child = old.with_cancel();
            {
                let mut done = std::pin::pin!(old.done());
                let waker = std::task::Waker::noop();
                let polled = std::future::Future::poll(
                    done.as_mut(),
                    &mut std::task::Context::from_waker(waker),
                );
                assert!(polled.is_pending(), "a waiter is registered");
                while !old.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert!(child.is_cancelled());
            drop(child);
            let before = address(&old);
            assert_eq!(kept(), 1, "the child's node, dropped last, is kept");
            drop(old);
            assert_eq!(kept(), 2);

            let parent = bg.with_cancel(); // takes the block `old` left
            assert_eq!(address(&parent), before, "built in the last kept block");
            assert_eq!(kept(), 1);
            assert!(!parent.is_cancelled() && parent.err().is_none());
            assert!(parent.cause().is_none() && parent.deadline().is_none());
            // It works as any new node: children, cancel, a deadline of its own.
            let reused_child = parent.with_timeout(Duration::from_secs(3600));
            assert_eq!(kept(), 0);
            assert!(reused_child.deadline().is_some());
            parent.cancel();
            assert!(reused_child.is_cancelled());
            assert_eq!(reused_child.err(), Some(crate::Error::Cancelled));
        });
    }

    #[test]
    fn a_node_is_kept_only_once_nothing_else_holds_it() {
        on_a_new_thread(|| {
            let bg = Context::background();
            let scope = bg.with_cancel();
            let clone = scope.context().clone();
            drop(scope); // the clone holds it: cancelled, not kept
            assert!(clone.is_cancelled());
            assert_eq!(kept(), 0);
            drop(clone); // the last reference, a context's: kept
            assert_eq!(kept(), 1);

            let parent = bg.with_cancel(); // built in the kept block
            let child = parent.with_cancel();
            drop(parent); // the child holds it
            assert_eq!(kept(), 0);
            drop(child); // kept: the child's node (its parent is then freed as usual)
            assert_eq!(kept(), 1);

            drop(bg.with_value(Plain)); // a value node's value is not `()`: freed as usual
            assert_eq!(kept(), 1);

            let other = bg.with_cancel(); // built in the kept block
            let first = bg.with_cancel();
            assert_eq!(kept(), 0);
            let merged = first.merge(&other);
            drop(merged); // a merged node's value is not `()`: freed as usual
            assert_eq!(kept(), 0, "the merge is not kept");
            drop(first);
            drop(other);
            assert_eq!(kept(), 2, "its parents, dropped last, are");
        });
    }

    struct Plain;
    impl ContextKey for Plain {
        const NAME: &'static str = "Plain";
    }

    #[test]
    fn a_reused_node_takes_its_new_parent_s_values_and_deadline_not_its_old_one_s() {
        on_a_new_thread(|| {
            let bg = Context::background();
            let with_value = bg.with_value(Plain).with_timeout(Duration::from_secs(60));
            let old = with_value.with_cancel();
            assert!(old.value::<Plain>().is_some() && old.deadline().is_some());
            drop(old);
            let reused = bg.with_cancel();
            assert_eq!(kept(), 0, "built in the block `old` left");
            assert!(reused.value::<Plain>().is_none(), "no value above it now");
            assert!(reused.deadline().is_none(), "no deadline above it now");
            assert_eq!(
                reused.to_string(),
                "context.Background.WithCancel",
                "its chain is its new one"
            );
        });
    }

    #[test]
    fn a_node_freed_on_another_thread_is_kept_there() {
        on_a_new_thread(|| {
            let scope = Context::background().with_cancel();
            let kept_there = std::thread::spawn(move || {
                drop(scope);
                kept()
            })
            .join()
            .expect("the dropping thread panicked");
            assert_eq!(kept_there, 1, "kept by the thread that freed it");
            assert_eq!(kept(), 0, "not by the one that made it");
        });
    }

    struct Explodes;
    impl Drop for Explodes {
        fn drop(&mut self) {
            panic!("a value's drop panicked");
        }
    }
    impl ContextKey for Explodes {
        const NAME: &'static str = "Explodes";
    }

    #[test]
    fn a_panicking_drop_while_emptying_a_node_frees_it_and_keeps_nothing() {
        on_a_new_thread(|| {
            let bg = Context::background();
            let scope = bg.with_value(Explodes).with_cancel();
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(scope)));
            assert!(dropped.is_err(), "the value's panic reaches the dropper");
            assert_eq!(kept(), 0, "the block went back to the allocator");
            let next = bg.with_cancel(); // and the thread goes on deriving
            drop(next);
            assert_eq!(kept(), 1);
        });
    }

    #[test]
    fn a_thread_keeps_at_most_its_quota() {
        on_a_new_thread(|| {
            let bg = Context::background();
            let scopes: Vec<_> = (0..PER_THREAD + 10).map(|_| bg.with_cancel()).collect();
            drop(scopes);
            // Other tests' threads hold parts of the budget: at most a full quota, and some.
            assert!(kept() <= PER_THREAD && kept() > 0, "kept {}", kept());
            // Taking them back gives quota back to the budget, chunk by chunk.
            let again: Vec<_> = (0..PER_THREAD + 10).map(|_| bg.with_cancel()).collect();
            assert_eq!(kept(), 0);
            drop(again);
        });
    }

    #[test]
    fn the_budget_bounds_what_all_threads_keep() {
        // Threads that each free a full quota and stay alive until all have: together they
        // keep no more than the budget, however many there are.
        let _serial = serial();
        let threads = super::BUDGET_BLOCKS / PER_THREAD + 4;
        let freed = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
        let exit = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
        let (tx, rx) = std::sync::mpsc::channel();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (freed, exit, tx) = (freed.clone(), exit.clone(), tx.clone());
                std::thread::spawn(move || {
                    let bg = Context::background();
                    drop(
                        (0..PER_THREAD)
                            .map(|_| bg.with_cancel())
                            .collect::<Vec<_>>(),
                    );
                    tx.send(kept()).unwrap();
                    freed.wait();
                    exit.wait();
                })
            })
            .collect();
        freed.wait();
        let total: usize = rx.iter().take(threads).sum();
        assert!(
            total <= super::BUDGET_BLOCKS,
            "{threads} threads keep {total} blocks"
        );
        exit.wait();
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn scopes_dropped_while_their_deadlines_fire_are_freed_either_way() {
        let _timers = crate::context::unit_tests::TIMER_COUNT
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        on_a_new_thread(|| {
            let bg = Context::background();
            for i in 0..20_000u64 {
                // Deadlines due now or within microseconds: the driver is firing some of
                // them (holding a reference) as they are dropped.
                drop(bg.with_timeout(Duration::from_nanos(i % 5_000)));
            }
            assert!(kept() <= PER_THREAD);
        });
    }
}
