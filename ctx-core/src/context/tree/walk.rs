//! The cancel walk.
//!
//! `cancel` holds the lock of the core it cancels (the walk root) for the whole walk, as Go
//! does, so when it returns every descendant is done (invariant 6). The walk uses no stack
//! and allocates nothing: it moves the root's spread onto its own list, then pops a child,
//! marks it done, and moves the child's children (its own list and its spread) onto the
//! root's list (adoption, as tokio-util's tree does), until the list is empty. A cancel that
//! finds its core already done waits for the walk that ended it. A core whose own deadline
//! is due is ended here too, by whoever sees it first (`Core::err_or_expire`).

use std::panic::Location;
use std::ptr;

use super::children::{adopt, adopt_spread, pop, release, unlink};
use super::core::{Core, Deadline, Origin};
use super::{NodeRef, Panic, discard};
use crate::context::error::{Cause, Error};

/// Cancels `core` and every descendant with `err` and `cause` (the first cancel wins), then
/// removes `core` from its owner's list. Returns once the whole subtree is done, whichever
/// cancel won (invariant 6), with the first panic of a user waker, if any, for the caller to
/// resume. Allocates nothing (but what the after-func pool needs).
pub(in crate::context) fn cancel(
    core: &Core,
    err: Error,
    cause: Option<Cause>,
    at: &'static Location<'static>,
) -> Option<Panic> {
    walk(core, err, Origin::Own(cause, at))
}

/// Fires a core's own deadline (called by the timer driver, and by a derivation whose
/// deadline already passed).
pub(super) fn expire(node: &NodeRef) -> Option<Panic> {
    node.core().and_then(expire_core)
}

/// Fires `core`'s own deadline.
pub(super) fn expire_core(core: &Core) -> Option<Panic> {
    walk(core, Error::DeadlineExceeded, Origin::Preset)
}

impl Core {
    /// [`err`](Core::err), after ending this core if its own deadline has passed and the
    /// driver has not fired it yet: that deadline is due, so whoever sees it first ends it,
    /// with what the driver would (`DeadlineExceeded`, the deadline's cause, and a waker's
    /// panic discarded, not resumed). A waiter that polls after the deadline so never sees
    /// the context live, however late the driver thread is scheduled. (Not under loom: there
    /// every deadline is due at once, and the models check that the driver fires them.)
    #[inline]
    pub(in crate::context) fn err_or_expire(&self) -> Option<Error> {
        match self.err() {
            None if self.has_own_deadline() && !cfg!(ctx_loom) => self.expire_if_due(),
            err => err,
        }
    }

    /// perf (bench instructions, CheckCanceled/Done): the clock read and the walk, out of
    /// line: inlined, they make every `Done` poll's code too large for its caller to build
    /// the `Done` in place.
    #[inline(never)]
    fn expire_if_due(&self) -> Option<Error> {
        if self.effective_deadline().nanos() <= Deadline::now().nanos() {
            discard(expire_core(self));
        }
        self.err()
    }
}

fn walk(core: &Core, err: Error, origin: Origin) -> Option<Panic> {
    if core.is_done() {
        wait_for_walk(core);
        return None;
    }
    let mut locked = core.lock();
    if !locked.is_live() {
        drop(locked);
        wait_for_walk(core);
        return None;
    }
    let walking = Walking::enter(core);
    let mut panic = None;
    let mut merges = Vec::new(); // allocates only if the subtree has merged contexts
    let replaced = locked.finish(err, &origin, &mut panic, &mut merges);
    let root = Origin::Walk(core);
    adopt_spread(core, &mut locked); // the spread's children, now that we are done
    while let Some(child) = pop(&mut locked) {
        // SAFETY: popped under our lock; the child keeps us as its owner until `release`, so
        // it cannot be freed before its `Drop` gets our lock (invariant 4).
        let child = unsafe { &*child };
        let mut child_locked = child.lock(); // ancestor before descendant
        if child_locked.is_live() {
            // `Walk` origins replace no cause.
            let _ = child_locked.finish(err, &root, &mut panic, &mut merges);
            // Adopt the grandchildren, once the child is done (so it takes no more).
            adopt(&mut child_locked, &mut locked);
        }
        // Else ended by a walk rooted at `child` itself (it was in our list, so no other walk
        // could pop it), which held this lock until its subtree was done (invariant 6).
        drop(child_locked);
        release(child);
    }
    // Merged contexts take this walk's error and cause (invariant 9).
    let forwarded = (!merges.is_empty()).then(|| {
        let cause = locked.cold().and_then(|cold| cold.cause.clone());
        (cause, core.ended_at())
    });
    drop(locked);
    drop(walking);
    unlink(core);
    drop(replaced); // a user error's drop: after the locks
    if let Some((cause, at)) = forwarded {
        for merged in merges {
            if let Some(node) = merged.upgrade()
                && let Some(merged) = node.core()
            {
                let more = walk(merged, err, Origin::Own(cause.clone(), at));
                panic = panic.or(more);
            }
        }
    }
    panic
}

crate::sync::thread_local! {
    /// The root of the walk this thread is running, if any: a waker woken by the walk may
    /// cancel a context the walk already ended, and must not wait for its own thread.
    #[allow(clippy::missing_const_for_thread_local, reason = "loom's thread_local! has no const form")]
    static WALKING: std::cell::Cell<*const Core> = std::cell::Cell::new(ptr::null());
}

/// Marks this thread as walking from a root until dropped (restoring an outer walk's root,
/// should a waker have started a nested one).
struct Walking(*const Core);

impl Walking {
    fn enter(root: &Core) -> Walking {
        Walking(WALKING.with(|walking| walking.replace(root)))
    }

    fn is_mine(root: *const Core) -> bool {
        WALKING.with(|walking| walking.get() == root)
    }
}

impl Drop for Walking {
    fn drop(&mut self) {
        WALKING.with(|walking| walking.set(self.0));
    }
}

/// Waits until the walk that ended `core` (done) is over: that walk holds its root's lock
/// until the whole subtree is done (invariant 6).
fn wait_for_walk(core: &Core) {
    // Order the read of `ended` after the state store that published it (invariant 1).
    let _ = core.is_done();
    let root = core.walk_root();
    if Walking::is_mine(root) {
        return; // a waker of this thread's own walk: the walk finishes when it returns
    }
    // SAFETY: the walk root is `core` or an ancestor, alive while `core` is (invariant 3).
    drop(unsafe { &*root }.lock());
}

#[cfg(test)]
pub(in crate::context) fn merge_count(core: &Core) -> usize {
    core.lock().cold().map_or(0, |cold| {
        cold.on_end
            .values()
            .filter(|entry| matches!(entry, super::core::OnEnd::Merge(_)))
            .count()
    })
}
