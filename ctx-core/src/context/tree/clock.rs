//! Deadlines on tokio's paused clock (feature `test-util`).
//!
//! Inside a tokio runtime whose clock is paused (`#[tokio::test(start_paused = true)]`,
//! `tokio::time::pause()`), "now" is tokio's clock, and a deadline is armed as a
//! `tokio::time::Sleep` rather than in the driver's heaps: tokio's time driver then sees it
//! (auto-advance jumps to it when nothing else is pending, `tokio::time::advance` passes it)
//! and, when it fires, calls the waker this file gives it, which ends the context as the
//! driver thread would. The real-time driver is never told of such a deadline. Everywhere
//! else (no runtime, a running clock) nothing changes.
//!
//! A paused clock is recognised through tokio's public API alone: while paused,
//! `tokio::time::Instant::now()` does not move (tokio advances it only when its runtime
//! parks or `advance` is called), while a running clock moves with `std`'s. So: read
//! tokio's clock, wait until `std`'s has moved past its first reading, read tokio's again;
//! equal readings mean paused.
//!
//! Pending sleeps sit in one table keyed by their core's address, guarded by one lock. Lock
//! order: a core's lock (a walk disarms under it) before this table, before tokio's driver
//! lock (taken by a sleep's poll and drop). Tokio calls wakers with its lock released, and
//! the waker takes no lock of ours before it starts its walk.

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::Instant;

use super::core::Deadline;
use super::{Core, Node, NodeRef, discard, walk};

/// `Core::timer_slot` of a core whose deadline is armed on tokio's paused clock.
pub(super) const PAUSED_SLOT: u32 = u32::MAX - 1;

/// The deadlines armed on a paused clock, by core address: the sleep tokio's timer knows,
/// and the node to end.
type Sleeps = HashMap<usize, (Pin<Box<tokio::time::Sleep>>, Weak<Node<()>>)>;

fn sleeps() -> &'static Mutex<Sleeps> {
    static SLEEPS: std::sync::OnceLock<Mutex<Sleeps>> = std::sync::OnceLock::new();
    SLEEPS.get_or_init(Mutex::default)
}

/// Tokio's clock, if this thread is inside a runtime whose clock is paused.
pub(in crate::context) fn paused_now() -> Option<Instant> {
    let first = tokio::time::Instant::now();
    let real = Instant::now();
    // A running clock reads `std`'s clock under the hood: once `std`'s has moved past
    // `real`, a second reading of it is later than the first (both are monotonic).
    while Instant::now() <= real {
        std::hint::spin_loop();
    }
    let second = tokio::time::Instant::now();
    (first == second).then(|| first.into_std())
}

/// Now, on the clock deadlines are on: tokio's when paused, else `std`'s.
pub(in crate::context) fn now() -> Instant {
    paused_now().unwrap_or_else(Instant::now)
}

/// Ends the context whose deadline this sleep stands for, once tokio's clock reaches it.
struct Fire(Weak<Node<()>>);

impl Wake for Fire {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(node) = self.0.upgrade() else {
            return; // dropped meanwhile: its drop disarmed it
        };
        let node: NodeRef = node;
        let Some(core) = node.core() else { return };
        // Tokio wakes every pending sleep when its runtime shuts down, its clock unmoved: a
        // deadline not reached on that clock does not fire.
        if core.effective_deadline().nanos() <= Deadline::now().nanos() {
            discard(walk::expire(&node));
        }
    }
}

/// Arms `core`'s deadline on tokio's clock, if this thread's runtime has it paused; false
/// (nothing done) otherwise. Same contract as `timer::arm`: `core` is `node`'s, new, live
/// and not yet attached (invariant 7).
pub(super) fn arm(core: &Core, node: &Arc<Node<()>>) -> bool {
    if paused_now().is_none() {
        return false;
    }
    let Some(at) = core.deadline() else {
        return false;
    };
    let mut sleep = Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)));
    let waker = Waker::from(Arc::new(Fire(Arc::downgrade(node))));
    let mut table = sleeps().lock().unwrap_or_else(PoisonError::into_inner);
    // Registers the sleep with tokio's timer. Unconstrained: a task out of its coop budget
    // would otherwise see the sleep wake its waker at once, which would end the context.
    let mut unconstrained = tokio::task::unconstrained(sleep.as_mut());
    let polled = Pin::new(&mut unconstrained).poll(&mut TaskContext::from_waker(&waker));
    if polled.is_pending() {
        table.insert(core as *const Core as usize, (sleep, Arc::downgrade(node)));
        // SAFETY: under the table's lock (invariant 7).
        unsafe { core.set_timer_slot(PAUSED_SLOT) };
        return true;
    }
    drop(table);
    drop(sleep);
    // Already due on tokio's clock (it moved since the derivation read it).
    let node: NodeRef = node.clone();
    discard(walk::expire(&node));
    true
}

/// Drops `core`'s sleep if its deadline is armed on a paused clock; false if it is not.
pub(super) fn disarm(core: &Core) -> bool {
    if core.timer_slot() != PAUSED_SLOT {
        return false;
    }
    let mut table = sleeps().lock().unwrap_or_else(PoisonError::into_inner);
    let armed = table.remove(&(core as *const Core as usize));
    // SAFETY: under the table's lock (invariant 7).
    unsafe { core.set_timer_slot(super::timer::NO_SLOT) };
    drop(table);
    drop(armed); // a sleep's drop takes tokio's driver lock: not under ours
    true
}

/// Ends every context whose deadline is armed on the paused clock and has passed on it,
/// as tokio's driver does when it processes its timers.
fn fire_due() {
    let now = Deadline::now().nanos();
    let due: Vec<NodeRef> = {
        let table = sleeps().lock().unwrap_or_else(PoisonError::into_inner);
        table
            .values()
            .filter_map(|(_, node)| node.upgrade())
            .filter(|node| {
                node.core()
                    .is_some_and(|core| core.effective_deadline().nanos() <= now)
            })
            .map(|node| -> NodeRef { node })
            .collect()
    };
    for node in due {
        discard(walk::expire(&node));
        drop(node); // its drop, if the last, disarms it: our lock is released
    }
}

/// [`Context::wait`] and [`Context::wait_timeout`] on a paused clock, blocking until `until`
/// (on tokio's clock) at the latest. Nothing moves a paused clock while this thread blocks
/// (its runtime advances it when idle, or a task calls `advance`), so, as an idle runtime
/// would, the clock jumps to what comes first: `ctx`'s deadline or `until`. `None` when the
/// clock is not paused, or there is nothing to jump to (only another thread can end the
/// wait then), or the deadline passed without ending the context (one on the real clock):
/// the caller blocks as usual.
pub(in crate::context) fn wait(
    ctx: &crate::Context,
    until: Option<Instant>,
) -> Option<Option<crate::Error>> {
    let now = paused_now()?;
    let target = match (ctx.deadline(), until) {
        (Some(deadline), Some(until)) => deadline.min(until),
        (deadline, until) => deadline.or(until)?,
    };
    if let Some(ahead) = target.checked_duration_since(now).filter(|d| !d.is_zero()) {
        // `advance` moves the clock as its first poll begins; the rest of it (a yield to let
        // the runtime process its timers) is what `fire_due` does here.
        let mut advance = std::pin::pin!(tokio::time::advance(ahead));
        let _ = advance
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()));
    }
    fire_due();
    let err = ctx.core().and_then(Core::err);
    if err.is_some() || until.is_some_and(|until| target >= until) {
        return Some(err);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PoisonError, sleeps};
    use crate::{Context, Error};

    /// How many deadlines sit on a paused clock.
    fn armed() -> usize {
        sleeps()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A paused deadline is one sleep until it fires, is cancelled or is dropped; then its
    /// sleep goes, and none is left behind. (The only test in this binary that pauses.)
    #[test]
    fn a_paused_deadline_keeps_its_sleep_only_while_pending() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let before = armed();
            let fires = Context::background().with_timeout(Duration::from_secs(1));
            let cancelled = Context::background().with_timeout(Duration::from_secs(1));
            let dropped = Context::background().with_timeout(Duration::from_secs(1));
            let child = fires.with_timeout(Duration::from_secs(2)); // the parent's is sooner
            assert_eq!(armed(), before + 3);
            cancelled.cancel();
            drop(dropped);
            assert_eq!(armed(), before + 1);
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(fires.err(), Some(Error::DeadlineExceeded));
            assert_eq!(child.err(), Some(Error::DeadlineExceeded));
            assert_eq!(armed(), before);
        });
    }
}
