//! The deadline driver: one lazily started thread that cancels contexts whose deadline
//! passed, so deadlines work with no async runtime at all.
//!
//! Pending deadlines sit in binary min-heaps indexed through slabs of slots: arming is
//! O(log n) and disarming (a deadline context cancelled or dropped early) removes its entry
//! at once, in O(log n), so a long-lived process with many short-lived requests never
//! accumulates dead timers. A heap stores only `(Instant, slot)`; the slot holds a weak
//! reference to the node, so an armed timer never keeps a context alive.
//!
//! There is one heap per shard, and each thread arms into its own shard (as Go keeps a
//! timer heap per P), so threads deriving deadlines in parallel do not contend on one lock.
//! The driver scans the shards for the earliest deadline.
//!
//! # Invariants
//!
//! 1. `Core::timer_slot` is written only under its shard's lock; it is `NO_SLOT` exactly when
//!    the core has no entry in a heap, else it names the shard and the slot.
//! 2. A node disarms its timer in `Drop` under its shard's lock, so while the driver holds a
//!    shard's lock every core named by that shard's slots is valid memory.
//! 3. The driver never holds a shard's lock while it cancels (lock order: cores, then
//!    shards, then the driver's own lock).
//! 4. An arm that may need the driver to wake earlier bumps `epoch` after inserting; the
//!    driver rescans when `epoch` moved during its scan, so no earlier deadline is missed.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use crate::tree::{Core, Node, NodeRef};

/// `Core::timer_slot` when the core has no pending timer.
pub(crate) const NO_SLOT: usize = usize::MAX;

type WeakNode = Weak<Node<dyn std::any::Any + Send + Sync>>;

/// Shards: a power of two, so the slot encoding is a shift.
const SHARDS: usize = 8;

struct Driver {
    shards: [Mutex<Timers>; SHARDS],
    /// Bumped by arms that put an entry first in their shard (invariant 4).
    epoch: AtomicU64,
    /// When the driver will next wake, in nanoseconds after `base`.
    next_wake: AtomicU64,
    base: Instant,
    sleep: Mutex<bool>, // whether the driver thread was started
    wake: Condvar,
}

#[derive(Default)]
struct Timers {
    heap: Vec<Entry>,
    slots: Vec<Slot>,
    /// Head of the free list threaded through vacant slots' `pos`; `NO_SLOT` if none.
    free: usize,
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

// SAFETY: `Slot::core` is only dereferenced under the shard's lock, where invariant 2 keeps
// it valid; everything else in `Timers` is `Send`.
unsafe impl Send for Timers {}

fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| Driver {
        shards: std::array::from_fn(|_| {
            Mutex::new(Timers {
                free: NO_SLOT,
                ..Timers::default()
            })
        }),
        epoch: AtomicU64::new(0),
        next_wake: AtomicU64::new(u64::MAX),
        base: Instant::now(),
        sleep: Mutex::new(false),
        wake: Condvar::new(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// This thread's shard.
fn my_shard() -> usize {
    use std::cell::Cell;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD
        .try_with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
            }
            shard.get()
        })
        .unwrap_or(0)
}

fn nanos_after(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// Arms `core`'s deadline. The caller holds `core`'s lock and has checked it is live.
pub(crate) fn arm(core: &Core, node: &NodeRef, at: Instant) {
    if cfg!(ctx_loom) {
        return; // loom models do not cover deadlines
    }
    let driver = driver();
    let shard = my_shard();
    let first = {
        let mut timers = lock(&driver.shards[shard]);
        let slot = timers.alloc_slot(Slot {
            node: Some(std::sync::Arc::downgrade(node)),
            core,
            pos: 0,
        });
        let pos = timers.heap.len();
        timers.heap.push(Entry { at, slot });
        timers.slots[slot].pos = pos;
        let pos = timers.sift_up(pos);
        core.timer_slot.store(slot * SHARDS + shard, Relaxed);
        pos == 0
    };
    if first {
        driver.epoch.fetch_add(1, SeqCst); // invariant 4
        if nanos_after(driver.base, at) < driver.next_wake.load(SeqCst) {
            let mut started = lock(&driver.sleep);
            if !*started {
                *started = true;
                start_driver_thread(driver);
            }
            driver.wake.notify_one();
        }
    }
}

/// Removes `core`'s pending deadline, if it has one.
pub(crate) fn disarm(core: &Core) {
    if cfg!(ctx_loom) || core.timer_slot.load(Relaxed) == NO_SLOT {
        return; // never armed, or already fired (a stale read is re-checked under the lock)
    }
    let shard = core.timer_slot.load(Relaxed) % SHARDS;
    let mut timers = lock(&driver().shards[shard]);
    let encoded = core.timer_slot.load(Relaxed);
    if encoded != NO_SLOT {
        let slot = encoded / SHARDS;
        let pos = timers.slots[slot].pos;
        timers.remove_at(pos);
        timers.free_slot(slot);
        core.timer_slot.store(NO_SLOT, Relaxed);
    }
}

/// How many deadlines are armed (for tests that check timers are released).
#[cfg(test)]
pub(crate) fn pending() -> usize {
    driver()
        .shards
        .iter()
        .map(|shard| lock(shard).heap.len())
        .sum()
}

fn start_driver_thread(driver: &'static Driver) {
    std::thread::Builder::new()
        .name("ctx-deadlines".into())
        .spawn(move || run(driver))
        .expect("ctx: could not start the deadline driver thread");
}

fn run(driver: &'static Driver) {
    let mut due: Vec<NodeRef> = Vec::new();
    loop {
        let epoch = driver.epoch.load(SeqCst);
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        for shard in &driver.shards {
            let mut timers = lock(shard);
            while let Some(&Entry { at, slot }) = timers.heap.first() {
                if at > now || due.len() == 1024 {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    break;
                }
                timers.remove_at(0);
                let Slot { node, core, .. } = timers.free_slot(slot);
                // SAFETY: invariant 2: the core's node cannot finish dropping while we hold
                // its shard's lock.
                unsafe { &*core }.timer_slot.store(NO_SLOT, Relaxed);
                if let Some(node) = node.and_then(|weak| weak.upgrade()) {
                    due.push(node);
                }
            }
        }
        if !due.is_empty() {
            for node in due.drain(..) {
                crate::tree::expire(&node); // no shard lock held (invariant 3)
            }
            continue;
        }
        let sleep = lock(&driver.sleep);
        if driver.epoch.load(SeqCst) != epoch {
            continue; // an arm raced with the scan: scan again (invariant 4)
        }
        driver.next_wake.store(
            earliest.map_or(u64::MAX, |at| nanos_after(driver.base, at)),
            SeqCst,
        );
        let _sleep = match earliest {
            Some(at) => {
                driver
                    .wake
                    .wait_timeout(sleep, at.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => driver
                .wake
                .wait(sleep)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        driver.next_wake.store(0, SeqCst); // awake: arms need not wake us
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
