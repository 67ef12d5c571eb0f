//! The deadline driver: one lazily started thread that cancels contexts whose deadline
//! passed, so deadlines work with no async runtime at all.
//!
//! Pending deadlines sit in a binary min-heap indexed through a slab of slots: arming is
//! O(log n) and disarming (a deadline context cancelled or dropped early) removes its entry
//! at once, in O(log n), so a long-lived process with many short-lived requests never
//! accumulates dead timers. The heap stores only `(Instant, slot)`; the slot holds a weak
//! reference to the node, so an armed timer never keeps a context alive.
//!
//! # Invariants
//!
//! 1. `Core::timer_slot` is written only under the driver lock; it is `NO_SLOT` exactly when
//!    the core has no entry in the heap.
//! 2. A node disarms its timer in `Drop` under the driver lock, so while the driver holds
//!    the lock every core named by a slot is valid memory.
//! 3. The driver never holds its lock while it cancels (lock order: cores, then driver).

use std::sync::{Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use crate::tree::{Core, Node, NodeRef};

/// `Core::timer_slot` when the core has no pending timer.
pub(crate) const NO_SLOT: usize = usize::MAX;

type WeakNode = Weak<Node<dyn std::any::Any + Send + Sync>>;

struct Driver {
    timers: Mutex<Timers>,
    /// Signalled when the earliest deadline moves earlier.
    wake: Condvar,
}

#[derive(Default)]
struct Timers {
    heap: Vec<Entry>,
    slots: Vec<Slot>,
    /// Head of the free list threaded through vacant slots' `pos`; `NO_SLOT` if none.
    free: usize,
    started: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    at: Instant,
    slot: usize,
}

struct Slot {
    /// `None` when vacant.
    node: Option<WeakNode>,
    core: *const Core,
    /// Index in `heap` while occupied; next free slot while vacant.
    pos: usize,
}

// SAFETY: `Slot::core` is only dereferenced under the driver lock, where invariant 2 keeps
// it valid; everything else in `Timers` is `Send`.
unsafe impl Send for Timers {}

fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| Driver {
        timers: Mutex::new(Timers {
            free: NO_SLOT,
            ..Timers::default()
        }),
        wake: Condvar::new(),
    })
}

fn lock_timers(driver: &Driver) -> std::sync::MutexGuard<'_, Timers> {
    driver
        .timers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Arms `core`'s deadline. The caller holds `core`'s lock and has checked it is live.
pub(crate) fn arm(core: &Core, node: &NodeRef, at: Instant) {
    if cfg!(ctx_loom) {
        return; // loom models do not cover deadlines
    }
    let driver = driver();
    let mut timers = lock_timers(driver);
    let slot = timers.alloc_slot(Slot {
        node: Some(std::sync::Arc::downgrade(node)),
        core,
        pos: 0,
    });
    let pos = timers.heap.len();
    timers.heap.push(Entry { at, slot });
    timers.slots[slot].pos = pos;
    let pos = timers.sift_up(pos);
    core.timer_slot
        .store(slot, std::sync::atomic::Ordering::Relaxed);
    if !timers.started {
        timers.started = true;
        start_driver_thread(driver);
    } else if pos == 0 {
        driver.wake.notify_one();
    }
}

/// Removes `core`'s pending deadline, if it has one.
pub(crate) fn disarm(core: &Core) {
    if cfg!(ctx_loom) || core.timer_slot.load(std::sync::atomic::Ordering::Relaxed) == NO_SLOT {
        return; // never armed, or already fired (a stale read is re-checked under the lock)
    }
    let mut timers = lock_timers(driver());
    let slot = core.timer_slot.load(std::sync::atomic::Ordering::Relaxed);
    if slot != NO_SLOT {
        let pos = timers.slots[slot].pos;
        timers.remove_at(pos);
        timers.free_slot(slot);
        core.timer_slot
            .store(NO_SLOT, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many deadlines are armed (for tests that check timers are released).
#[cfg(test)]
pub(crate) fn pending() -> usize {
    lock_timers(driver()).heap.len()
}

fn start_driver_thread(driver: &'static Driver) {
    std::thread::Builder::new()
        .name("ctx-deadlines".into())
        .spawn(move || run(driver))
        .expect("ctx: could not start the deadline driver thread");
}

fn run(driver: &'static Driver) {
    let mut due: Vec<NodeRef> = Vec::new();
    let mut timers = lock_timers(driver);
    loop {
        let now = Instant::now();
        while let Some(&Entry { at, slot }) = timers.heap.first() {
            if at > now || due.len() == 1024 {
                break;
            }
            timers.remove_at(0);
            let Slot { node, core, .. } = timers.free_slot(slot);
            // SAFETY: invariant 2: the core's node cannot finish dropping while we hold the lock.
            unsafe { &*core }
                .timer_slot
                .store(NO_SLOT, std::sync::atomic::Ordering::Relaxed);
            if let Some(node) = node.and_then(|weak| weak.upgrade()) {
                due.push(node);
            }
        }
        if !due.is_empty() {
            drop(timers); // invariant 3
            for node in due.drain(..) {
                crate::tree::expire(&node);
            }
            timers = lock_timers(driver);
            continue;
        }
        timers = match timers.heap.first() {
            Some(next) => {
                let wait = next.at.saturating_duration_since(now);
                driver
                    .wake
                    .wait_timeout(timers, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => driver
                .wake
                .wait(timers)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
    }
}

impl Timers {
    fn alloc_slot(&mut self, slot: Slot) -> usize {
        if self.free == NO_SLOT {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let key = self.free;
            self.free = self.slots[key].pos;
            self.slots[key] = slot;
            key
        }
    }

    fn free_slot(&mut self, key: usize) -> Slot {
        let vacant = Slot {
            node: None,
            core: std::ptr::null(),
            pos: self.free,
        };
        self.free = key;
        std::mem::replace(&mut self.slots[key], vacant)
    }

    fn set(&mut self, pos: usize, entry: Entry) {
        self.heap[pos] = entry;
        self.slots[entry.slot].pos = pos;
    }

    fn sift_up(&mut self, mut pos: usize) -> usize {
        let entry = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap[parent].at <= entry.at {
                break;
            }
            self.set(pos, self.heap[parent]);
            pos = parent;
        }
        self.set(pos, entry);
        pos
    }

    fn sift_down(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].at < self.heap[left].at {
                right
            } else {
                left
            };
            if self.heap[child].at >= entry.at {
                break;
            }
            self.set(pos, self.heap[child]);
            pos = child;
        }
        self.set(pos, entry);
    }

    fn remove_at(&mut self, pos: usize) {
        let last = self.heap.pop().expect("remove_at on an empty heap");
        if pos < self.heap.len() {
            self.set(pos, last);
            if self.sift_up(pos) == pos {
                self.sift_down(pos);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap keeps its order and its slot index through arbitrary removals.
    #[test]
    fn heap_order_and_index() {
        let base = Instant::now();
        let mut t = Timers {
            free: NO_SLOT,
            ..Timers::default()
        };
        let mut keys = Vec::new();
        for i in [5u64, 3, 9, 1, 7, 2, 8, 6, 4, 0] {
            let slot = t.alloc_slot(Slot {
                node: None,
                core: std::ptr::null(),
                pos: 0,
            });
            let pos = t.heap.len();
            t.heap.push(Entry {
                at: base + std::time::Duration::from_millis(i),
                slot,
            });
            t.slots[slot].pos = pos;
            t.sift_up(pos);
            keys.push((i, slot));
        }
        // Remove three from the middle by slot, as disarm does.
        for &(_, slot) in &keys[2..5] {
            let pos = t.slots[slot].pos;
            t.remove_at(pos);
            t.free_slot(slot);
        }
        for (pos, entry) in t.heap.iter().enumerate() {
            assert_eq!(t.slots[entry.slot].pos, pos);
        }
        let mut order = Vec::new();
        while let Some(first) = t.heap.first().copied() {
            order.push(first.at.duration_since(base).as_millis() as u64);
            t.remove_at(0);
        }
        assert_eq!(order, [0, 2, 3, 4, 5, 6, 8]);
    }
}
