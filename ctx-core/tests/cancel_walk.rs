//! The cancel walk's ordering promises (invariant 6 of `tree/mod.rs`): a cancel returns only
//! once the whole subtree is done, whichever cancel won, and a waker that cancels from inside
//! the walk does not wait for its own thread.

use std::sync::{Arc, Barrier, mpsc};
use std::task::{Wake, Waker};
use std::thread;

use ctx_core::Context;

mod support;

use support::{PROMPTLY, Tag, poll};

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
