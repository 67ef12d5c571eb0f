//! loom models of the tree's races. Run with
//! `RUSTFLAGS="--cfg ctx_loom" cargo test -p ctx-core --no-default-features --release --test loom`
//! (`.ci/run` does, with a bounded preemption count).
#![cfg(ctx_loom)]

use std::sync::Arc;

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
