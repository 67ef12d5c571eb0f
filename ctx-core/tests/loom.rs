//! loom models of the tree's races. Run with
//! `RUSTFLAGS="--cfg ctx_loom" cargo test -p ctx-core --no-default-features --release --test loom`
//! (`.ci/run` does, with a bounded preemption count).
#![cfg(ctx_loom)]

use std::sync::Arc;
use std::time::Duration;

use ctx_core::{Context, Error};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

#[test]
fn cancel_races_derive() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel().into_parts();
        let deriver = thread::spawn(move || parent.with_cancel().into_parts());
        cancel.cancel();
        let (child, _handle) = deriver.join().unwrap();
        // Whichever came first, the child of a cancelled parent is cancelled once cancel
        // returned and the derivation finished.
        assert_eq!(child.err(), Some(Error::Cancelled));
    });
}

#[test]
fn cancel_races_child_drop() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel().into_parts();
        let child = parent.with_cancel();
        let grandchild = child.with_cancel();
        let dropper = thread::spawn(move || {
            drop(grandchild);
            drop(child);
        });
        cancel.cancel();
        dropper.join().unwrap();
        assert!(parent.is_cancelled());
        // A new child of the (done) parent is born done; nothing dangles.
        assert_eq!(parent.with_cancel().err(), Some(Error::Cancelled));
    });
}

#[test]
fn cancel_races_cancel_of_a_descendant() {
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel().into_parts();
        let (mid, cancel_mid) = root.with_cancel().into_parts();
        let leaf = mid.with_cancel();
        let other = thread::spawn(move || cancel_mid.cancel_with("mid"));
        cancel_root.cancel_with("root");
        // The root's cancel returned: the whole subtree is done, whoever won at `mid`.
        assert!(leaf.is_cancelled());
        assert!(mid.is_cancelled());
        other.join().unwrap();
        let cause = leaf.cause().unwrap().to_string();
        assert!(cause == "root" || cause == "mid", "{cause}");
        assert_eq!(
            leaf.cause().unwrap().to_string(),
            mid.cause().unwrap().to_string()
        );
    });
}

#[test]
fn after_func_races_stop() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel().into_parts();
        let ran = Arc::new(AtomicBool::new(false));
        let stop_won = Arc::new(AtomicBool::new(false));
        let after = {
            let (ran, stop_won) = (ran.clone(), stop_won.clone());
            ctx.after_func(move || {
                assert!(!stop_won.load(Ordering::SeqCst), "ran after a winning stop");
                ran.store(true, Ordering::SeqCst);
            })
        };
        let canceller = thread::spawn(move || cancel.cancel());
        let stopped = after.stop();
        if stopped {
            stop_won.store(true, Ordering::SeqCst);
        }
        canceller.join().unwrap();
        if !stopped {
            while !ran.load(Ordering::SeqCst) {
                thread::yield_now(); // the after-func thread must run it
            }
        }
    });
}

#[test]
fn wait_is_woken_by_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel().into_parts();
        let child = ctx.with_cancel();
        let waiter = thread::spawn(move || child.wait());
        cancel.cancel_with("done");
        assert_eq!(waiter.join().unwrap(), Error::Cancelled);
    });
}

/// A cancel that finds its context already ended by an ancestor's walk still returns only
/// once its whole subtree is done: the root's walk adopts `leaf` and ends it after `mid`.
#[test]
fn cancel_of_a_scope_an_ancestor_is_ending_waits_for_the_subtree() {
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel().into_parts();
        let mid = root.with_cancel();
        let leaf = mid.with_cancel();
        let leaf_ctx = leaf.context().clone();
        let other = thread::spawn(move || cancel_root.cancel());
        mid.cancel();
        assert!(
            leaf_ctx.is_cancelled(),
            "mid's cancel returned before its subtree was done"
        );
        other.join().unwrap();
        drop(leaf);
    });
}

/// Births below a subtree that a walk is adopting: whatever the interleaving, a context
/// derived below the cancelled root is done once the cancel and the derivation returned.
#[test]
fn births_race_a_cancel_walk_with_adoption() {
    struct Tag;
    impl ctx_core::ContextKey for Tag {
        const NAME: &'static str = "Tag";
    }
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel().into_parts();
        let (mid, _mid) = root.with_cancel().into_parts();
        let (leaf, _leaf) = mid.with_cancel().into_parts();
        let deriver = thread::spawn(move || {
            let (born, handle) = leaf.with_value(Tag).with_cancel().into_parts();
            (born, handle)
        });
        cancel_root.cancel();
        let (born, _handle) = deriver.join().unwrap();
        assert_eq!(born.err(), Some(Error::Cancelled));
        assert!(born.value::<Tag>().is_some());
    });
}

/// The deadline driver fires a deadline armed while it rescans after a fire, or while it
/// is about to sleep: the arm either wakes it or is seen by its rescan.
#[test]
fn an_arm_racing_the_drivers_sleep_is_fired() {
    loom::model(|| {
        // Each armed the instant the previous one fired, while the driver rescans or goes to
        // sleep; the third finds a driver that has slept and woken once.
        for _ in 0..3 {
            let scope = Context::background().with_timeout(Duration::from_nanos(1));
            assert_eq!(scope.wait(), Error::DeadlineExceeded);
        }
        ctx_core::__stop_deadline_driver();
    });
}

/// Two threads arm at once, one of them starting the driver: both deadlines fire.
#[test]
fn arms_race_the_driver_start() {
    loom::model(|| {
        let other = thread::spawn(|| {
            let scope = Context::background().with_timeout(Duration::from_nanos(1));
            scope.wait()
        });
        let scope = Context::background().with_timeout(Duration::from_nanos(1));
        assert_eq!(scope.wait(), Error::DeadlineExceeded);
        assert_eq!(other.join().unwrap(), Error::DeadlineExceeded);
        ctx_core::__stop_deadline_driver();
    });
}

/// A cancel (disarm) races the driver firing the same deadline: one of them ends it, the
/// entry leaves the heap exactly once, and a later deadline still fires.
#[test]
fn disarm_races_fire() {
    loom::model(|| {
        let scope = Context::background().with_timeout(Duration::from_nanos(1));
        let ctx = scope.context().clone();
        let canceller = thread::spawn(move || scope.cancel());
        let err = ctx.wait();
        assert!(
            matches!(err, Error::Cancelled | Error::DeadlineExceeded),
            "{err:?}"
        );
        canceller.join().unwrap();
        let later = Context::background().with_timeout(Duration::from_nanos(1));
        assert_eq!(later.wait(), Error::DeadlineExceeded);
        ctx_core::__stop_deadline_driver();
    });
}

/// A deadline child is armed before it is attached to its parent (invariant 7), so the
/// driver may fire it while the derivation links it, and the parent's cancel may race both:
/// the child ends once, with the parent's error or its own, is done once both the cancel and
/// the derivation returned, and frees cleanly (a later deadline still fires).
#[test]
fn a_deadline_child_armed_before_its_attach_races_the_parents_cancel() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel().into_parts();
        let deriver = thread::spawn(move || parent.with_timeout(Duration::from_nanos(1)));
        cancel.cancel();
        let child = deriver.join().unwrap();
        let err = child.err();
        assert!(
            matches!(err, Some(Error::Cancelled | Error::DeadlineExceeded)),
            "{err:?}"
        );
        assert_eq!(child.wait(), err.unwrap());
        drop(child);
        let later = Context::background().with_timeout(Duration::from_nanos(1));
        assert_eq!(later.wait(), Error::DeadlineExceeded);
        ctx_core::__stop_deadline_driver();
    });
}

/// Both parents of a merge cancel at once: the merge ends with one of their causes, and
/// it is done by the time either cancel returns.
#[test]
fn both_parents_of_a_merge_cancel_at_once() {
    loom::model(|| {
        let (first, cancel_first) = Context::background().with_cancel().into_parts();
        let (second, cancel_second) = Context::background().with_cancel().into_parts();
        let merged = first.merge(&second);
        let seen = merged.context().clone();
        let other = thread::spawn(move || {
            cancel_second.cancel_with("second");
            assert!(
                seen.is_cancelled(),
                "the merge outlived its second parent's cancel"
            );
        });
        cancel_first.cancel_with("first");
        assert!(
            merged.is_cancelled(),
            "the merge outlived its first parent's cancel"
        );
        other.join().unwrap();
        let cause = merged.cause().unwrap().to_string();
        assert!(cause == "first" || cause == "second", "{cause}");
    });
}

/// A derivation into a spread parent's shard races the parent's cancel: the child is
/// adopted by the walk or born done, never left live in a shard.
#[test]
fn a_derivation_into_a_shard_races_the_cancel() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel().into_parts();
        ctx_core::__spread_children(&parent);
        let deriver = thread::spawn(move || parent.with_cancel().into_parts());
        cancel.cancel();
        let (child, _handle) = deriver.join().unwrap();
        assert_eq!(child.err(), Some(Error::Cancelled));
    });
}

/// A child in a shard unlinks (drops) while the parent's walk adopts that shard; a spread
/// grandchild's list is adopted through its spread parent.
#[test]
fn a_shard_child_drop_races_the_walk_adopting_it() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel().into_parts();
        ctx_core::__spread_children(&parent);
        let child = parent.with_cancel();
        ctx_core::__spread_children(&child);
        let grandchild = child.with_cancel();
        let kept = child.with_cancel();
        let dropper = thread::spawn(move || {
            drop(grandchild);
            drop(child);
        });
        cancel.cancel();
        assert!(kept.is_cancelled());
        dropper.join().unwrap();
        assert_eq!(parent.with_cancel().err(), Some(Error::Cancelled));
    });
}

/// Two derivations contend on a parent's lock (one of them installs the spread) while the
/// parent is cancelled: both children end up cancelled.
#[test]
fn contended_derivations_race_the_cancel() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel().into_parts();
        let other = parent.clone();
        let deriver = thread::spawn(move || other.with_cancel().into_parts());
        let (mine, _mine) = parent.with_cancel().into_parts();
        cancel.cancel();
        let (theirs, _theirs) = deriver.join().unwrap();
        assert_eq!(mine.err(), Some(Error::Cancelled));
        assert_eq!(theirs.err(), Some(Error::Cancelled));
    });
}

/// Two threads free more nodes than their quota and the process-wide budget allow (small
/// under loom) and derive again from what they kept: no thread keeps more than its quota,
/// the quotas never exceed the budget, an exiting thread gives its quota back, and a node
/// rebuilt in a kept block works as a new one.
#[test]
fn node_recycling_stays_within_its_budget() {
    fn churn(root: &Context) -> usize {
        let scopes: Vec<_> = (0..3).map(|_| root.with_cancel()).collect();
        drop(scopes);
        let (kept, _) = ctx_core::__recycling();
        let (again, cancel) = root.with_cancel().into_parts();
        let child = again.with_cancel();
        cancel.cancel();
        assert_eq!(child.err(), Some(Error::Cancelled));
        kept
    }
    loom::model(|| {
        let root = Context::background();
        let theirs = {
            let root = root.clone();
            thread::spawn(move || churn(&root))
        };
        let mine = churn(&root);
        let theirs = theirs.join().unwrap();
        assert!(mine <= 2 && theirs <= 2, "kept {mine} and {theirs}");
        let (kept, left) = ctx_core::__recycling();
        assert!(kept + left <= 3, "kept {kept}, budget left {left}");
    });
}
