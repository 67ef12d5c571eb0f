//! Unit tests that look at crate internals: child lists and armed timers.

use std::time::Duration;

use crate::Context;
use crate::context::tree::child_count;

/// Serializes the tests that count armed timers (a process-wide number), and those that arm
/// many.
pub(in crate::context) static TIMER_COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn children(ctx: &Context) -> usize {
    child_count(ctx.core().expect("a cancellable context"))
}

#[test]
fn dropped_children_leave_no_trace() {
    let parent = Context::background().with_cancel();
    let kids: Vec<_> = (0..100).map(|_| parent.with_cancel()).collect();
    assert_eq!(children(&parent), 100);
    // Drop every other one (from the middle of the list too), then the rest.
    let (even, odd): (Vec<_>, Vec<_>) = kids.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    drop(even);
    assert_eq!(children(&parent), 50);
    drop(odd);
    assert_eq!(children(&parent), 0);
}

#[test]
fn cancelled_child_is_removed_from_parent_at_once() {
    let parent = Context::background().with_cancel();
    let child = parent.with_cancel();
    let keep = child.context().clone();
    child.cancel();
    assert_eq!(
        children(&parent),
        0,
        "cancel unlinks even while clones live"
    );
    assert!(keep.is_cancelled());
}

#[test]
fn value_nodes_register_nothing_and_grandchildren_attach_to_the_nearest_core() {
    let parent = Context::background().with_cancel();
    struct K;
    impl crate::ContextKey for K {
        const NAME: &'static str = "K";
    }
    let valued = parent.with_value(K).with_value(K);
    let grandchild = valued.with_cancel();
    assert_eq!(children(&parent), 1);
    drop(grandchild);
    assert_eq!(children(&parent), 0);
}

#[test]
fn cancel_empties_the_list_and_adopted_nodes_unlink_cleanly() {
    let root = Context::background().with_cancel();
    let mid = root.with_cancel();
    let leaves: Vec<_> = (0..10).map(|_| mid.with_cancel()).collect();
    assert_eq!(children(&mid), 10);
    root.cancel();
    assert!(leaves.iter().all(|leaf| leaf.is_cancelled()));
    assert_eq!(children(&mid), 0);
    drop(leaves); // their `Drop` must find themselves unlinked
    drop(mid);
}

#[test]
fn cancelled_or_dropped_deadlines_release_their_timer() {
    let _serial = TIMER_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let before = crate::context::tree::timer::pending();
    let scopes: Vec<_> = (0..2_000)
        .map(|_| Context::background().with_timeout(Duration::from_secs(3600)))
        .collect();
    assert_eq!(crate::context::tree::timer::pending(), before + 2_000);
    let (cancelled, dropped): (Vec<_>, Vec<_>) = scopes
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    for (_, scope) in cancelled {
        let ctx = scope.context().clone();
        scope.cancel();
        std::mem::forget(ctx); // cancelled but never dropped: the timer must still go
    }
    drop(dropped);
    assert_eq!(
        crate::context::tree::timer::pending(),
        before,
        "timers were not released"
    );
}

#[test]
fn a_parent_cancel_disarms_descendant_timers() {
    let _serial = TIMER_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let before = crate::context::tree::timer::pending();
    let root = Context::background().with_cancel();
    let timed: Vec<_> = (0..1_000)
        .map(|_| root.with_timeout(Duration::from_secs(3600)))
        .collect();
    root.cancel();
    assert_eq!(crate::context::tree::timer::pending(), before);
    drop(timed);
}

#[test]
fn a_dropped_merge_leaves_no_trace_in_either_parent() {
    let first = Context::background().with_cancel();
    let second = Context::background().with_cancel();
    let merges: Vec<_> = (0..100).map(|_| first.merge(&second)).collect();
    assert_eq!(children(&first), 100);
    assert_eq!(
        crate::context::tree::merge_count(second.core().unwrap()),
        100
    );
    drop(merges);
    assert_eq!(children(&first), 0);
    assert_eq!(crate::context::tree::merge_count(second.core().unwrap()), 0);
}

fn is_spread(ctx: &Context) -> bool {
    crate::context::tree::is_spread(ctx.core().expect("a cancellable context"))
}

/// A spread parent (one list per thread group) links, unlinks and cancels children in every
/// shard, and adopts the shards of spread children too.
#[test]
fn a_spread_parent_links_unlinks_and_cancels_every_child() {
    let (root, cancel) = Context::background().with_cancel().into_parts();
    crate::context::tree::spread_now(root.core().unwrap());
    assert!(is_spread(&root));
    // Children from several threads land in several shards.
    let kids: Vec<_> = std::thread::scope(|s| {
        let makers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..25).map(|_| root.with_cancel()).collect::<Vec<_>>()))
            .collect();
        makers.into_iter().flat_map(|m| m.join().unwrap()).collect()
    });
    assert_eq!(children(&root), 100);
    let (keep, gone): (Vec<_>, Vec<_>) =
        kids.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    drop(gone);
    assert_eq!(children(&root), 50);
    // A spread child with grandchildren in its own shards and its own list.
    let mid = &keep[0].1;
    crate::context::tree::spread_now(mid.core().unwrap());
    let grandkids: Vec<_> = std::thread::scope(|s| {
        let makers: Vec<_> = (0..3)
            .map(|_| s.spawn(|| (0..10).map(|_| mid.with_cancel()).collect::<Vec<_>>()))
            .collect();
        makers.into_iter().flat_map(|m| m.join().unwrap()).collect()
    });
    assert_eq!(children(mid), 30);
    cancel.cancel();
    assert!(keep.iter().all(|(_, kid)| kid.is_cancelled()));
    assert!(grandkids.iter().all(|kid| kid.is_cancelled()));
    assert_eq!(children(&root), 0);
    assert_eq!(children(mid), 0);
    // Born done from now on, in no list.
    assert!(root.with_cancel().is_cancelled());
    assert_eq!(children(&root), 0);
}

/// Threads deriving from one parent at once give it its spread (and then still find every
/// child cancelled with it).
#[test]
fn contended_derivations_spread_the_parent() {
    let (root, cancel) = Context::background().with_cancel().into_parts();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !is_spread(&root) && std::time::Instant::now() < deadline {
                    for _ in 0..1000 {
                        drop(root.with_cancel());
                    }
                }
            });
        }
    });
    assert!(
        is_spread(&root),
        "20 s of four threads deriving never contended"
    );
    let kids: Vec<_> = (0..10).map(|_| root.with_cancel()).collect();
    assert_eq!(children(&root), 10);
    cancel.cancel();
    assert!(kids.iter().all(|kid| kid.is_cancelled()));
}

/// A node with its reference counts fits 120 bytes: glibc's fast bins (the size the tree's
/// build-and-free benchmarks depend on). `debug-tree` adds its registration on top.
#[test]
#[cfg(not(feature = "debug-tree"))]
fn a_node_fits_in_120_bytes() {
    use crate::context::tree::{Link, Node};
    assert_eq!(std::mem::size_of::<Link>(), 16);
    // A scope is its context alone: returned whole, no flag word to spill.
    assert_eq!(std::mem::size_of::<crate::CancelScope>(), 16);
    assert!(
        std::mem::size_of::<Node<()>>() + 16 <= 120,
        "{}",
        std::mem::size_of::<Node<()>>()
    );
}

/// Deadlines are kept in 8 bytes (nanoseconds from a process-wide base) and read back
/// exactly, before the base and after it.
#[test]
fn deadlines_read_back_exactly() {
    let now = std::time::Instant::now();
    let mut cases = vec![
        now,
        now + Duration::from_nanos(1),
        now + Duration::from_secs(100 * 365 * 86_400),
    ];
    cases.extend(now.checked_sub(Duration::from_secs(3600)));
    cases.extend(now.checked_sub(Duration::from_nanos(7)));
    for at in cases {
        let ctx = Context::background().with_deadline(at);
        assert_eq!(ctx.deadline(), Some(at));
        // A child without a deadline of its own reports its parent's.
        assert_eq!(ctx.with_cancel().deadline(), Some(at));
    }
    assert_eq!(Context::background().with_cancel().deadline(), None);
}

/// `with_timeout` counts from the clock read it makes (in nanoseconds, without 128-bit
/// arithmetic), and an absurd timeout saturates at a century rather than overflowing.
#[test]
fn timeouts_count_from_now_and_absurd_ones_are_a_century() {
    let timeout = Duration::new(7, 123_456_789);
    let before = std::time::Instant::now();
    let scope = Context::background().with_timeout(timeout);
    let after = std::time::Instant::now();
    let at = scope.deadline().expect("a timeout sets a deadline");
    assert!(before + timeout <= at && at <= after + timeout);

    let century = Duration::from_secs(100 * 365 * 86_400);
    for absurd in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        century * 2,
    ] {
        let before = std::time::Instant::now();
        let scope = Context::background().with_timeout(absurd);
        let after = std::time::Instant::now();
        let at = scope.deadline().expect("a deadline");
        assert!(
            before + century <= at && at <= after + century,
            "{absurd:?}"
        );
        assert!(!scope.is_cancelled());
        // A child asking for a later deadline gets this one; one asking for the same keeps
        // its own (as in Go); both read back the same instant.
        assert_eq!(scope.with_timeout(absurd).deadline(), Some(at));
        assert_eq!(scope.with_deadline(at).deadline(), Some(at));
    }
}
