//! The deadline driver: one lazily started thread that cancels contexts whose deadline
//! passed, so deadlines work with no async runtime at all.
//!
//! Pending deadlines sit in binary min-heaps of `(deadline, slot)`, 16 bytes each (the
//! deadline in nanoseconds, as the core keeps it); the slot, in a slab, holds a weak
//! reference to the node (thin: a deadline node has no value, so it is a `Node<()>`; with the
//! slab's tag, 16 bytes a slot), so an armed timer never keeps a context alive.
//! Arming pushes an entry (O(1) for the usual deadline, later than those pending; O(log n)
//! at worst). Disarming (a deadline context cancelled or dropped early, the common case)
//! is O(1): it releases the slot's node and marks the slot dead, leaving its heap entry to
//! be discarded when it reaches the top. Dead entries never outnumber live ones by much:
//! once they are half the heap it is rebuilt without them, so a long-lived process with
//! many short-lived requests never accumulates dead timers (amortized O(1) per disarm).
//!
//! The tables give memory back: once fewer than an eighth of their room is in use, and they
//! have room for more than [`FLOOR`] entries, they are rebuilt at twice their live size
//! (the live slots renumbered, each core's `timer_slot` rewritten under the shard's lock,
//! as invariant 7 asks). A burst of a million deadlines, once over, leaves a few KiB.
//!
//! There is one heap per shard, and each thread arms into its own shard (as Go keeps a
//! timer heap per P), so threads deriving deadlines in parallel do not contend on one lock.
//! The driver scans the shards for the earliest deadline. Invariants 4, 7 and 8 of the tree
//! (`tree/mod.rs`) are this file's: shard locks keep cores valid, slots are written under
//! them, and arms and the driver's sleep cannot miss each other.
//!
//! The driver never stops: a waker that panics while a deadline fires is caught by the walk,
//! and a value whose `Drop` panics when the driver frees the last reference is caught here;
//! the panic hook has reported both, and the next deadline fires on time.

use std::panic::AssertUnwindSafe;
use std::sync::Weak;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::core::Deadline;
use super::slab::Slab;
use super::{Core, Node, NodeRef, discard, walk};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, lock};

/// `Core::timer_slot` when the core has no pending timer.
pub(in crate::context) const NO_SLOT: u32 = u32::MAX;

use super::shard::SHARDS;

struct Driver {
    shards: [Shard; SHARDS],
    /// Bumped by arms that put an entry first in their shard (invariant 8).
    epoch: AtomicU64,
    /// When the driver will next wake (a `Deadline`'s nanoseconds, at least 0); 0 while it
    /// is awake.
    next_wake: AtomicU64,
    /// Whether the driver thread was started.
    sleep: Mutex<bool>,
    wake: Condvar,
    /// Set by `stop_driver` so a loom model can end.
    stop: AtomicBool,
    /// The driver thread, for `stop_driver` to join: a model's statics are dropped when
    /// its main thread returns.
    #[cfg(ctx_loom)]
    thread: Mutex<Option<crate::sync::thread::JoinHandle<()>>>,
}

/// A shard's timers, alone on their cache lines: threads arming into neighbouring shards
/// would otherwise bounce one line between cores on every arm and disarm.
#[repr(align(128))]
struct Shard(Mutex<Timers>);

/// The room (in entries) below which a shard's tables are never shrunk. Small under loom, so
/// that the models shrink them.
#[cfg(not(ctx_loom))]
const FLOOR: usize = 1024;
#[cfg(ctx_loom)]
const FLOOR: usize = 2;

struct Timers {
    /// Which shard this is (for the slot encoding).
    shard: usize,
    /// The room below which the tables are not shrunk: [`FLOOR`]; never, in the unit tests
    /// of the heap, whose slots name no node.
    floor: usize,
    /// A min-heap on `at`; entries whose slot is dead are skipped when they surface.
    heap: Vec<Entry>,
    /// One per heap entry, dead or alive: a slot is freed with its entry, so a key in the
    /// heap always names its own slot.
    slots: Slab<Slot>,
    /// Dead slots (disarmed, their entries still in the heap).
    dead: usize,
}

#[derive(Clone, Copy)]
struct Entry {
    /// The deadline, in `Deadline` nanoseconds.
    at: i64,
    slot: u32,
}

/// An armed node, or `None`: a dead slot whose heap entry is yet to be discarded.
type Slot = Option<Weak<Node<()>>>;

/// The core of an armed node.
///
/// # Safety
///
/// The caller holds the lock of the shard `node` is armed in: invariant 4 keeps the node's
/// fields valid until its drop has disarmed it there, even once no strong reference is left.
unsafe fn core_of(node: &Weak<Node<()>>) -> &Core {
    // SAFETY: as the caller promises; the weak reference keeps the allocation itself.
    let node = unsafe { &*node.as_ptr() };
    node.core().expect("only cancel nodes are armed")
}

impl Driver {
    fn new() -> Driver {
        Driver {
            shards: std::array::from_fn(|shard| Shard(Mutex::new(Timers::new(shard, FLOOR)))),
            epoch: AtomicU64::new(0),
            next_wake: AtomicU64::new(u64::MAX),
            sleep: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            #[cfg(ctx_loom)]
            thread: Mutex::new(None),
        }
    }
}

#[cfg(not(ctx_loom))]
fn driver() -> &'static Driver {
    static DRIVER: std::sync::OnceLock<Driver> = std::sync::OnceLock::new();
    DRIVER.get_or_init(Driver::new)
}

#[cfg(ctx_loom)]
fn driver() -> &'static Driver {
    loom::lazy_static! {
        static ref DRIVER: Driver = Driver::new();
    }
    &DRIVER
}

/// `Core::timer_slot` for `slot` of `shard`.
fn encode(slot: usize, shard: usize) -> u32 {
    u32::try_from(slot * SHARDS + shard).expect("fewer than 500 million armed deadlines per shard")
}

/// `at` as `next_wake` holds it.
fn wake_at(at: i64) -> u64 {
    u64::try_from(at).unwrap_or(0)
}

/// Whether an entry for `at` is due at `now`. Loom models have no clock: there every armed
/// deadline is due, and what the models check is that the driver sees it.
fn is_due(at: i64, now: i64) -> bool {
    cfg!(ctx_loom) || at <= now
}

/// Arms `core`'s deadline: the core of `node`, new, live and not yet attached to its parent,
/// so that no walk can reach it (invariant 7).
pub(super) fn arm(core: &Core, node: &std::sync::Arc<Node<()>>) {
    #[cfg(feature = "test-util")]
    if super::clock::arm(core, node) {
        return; // on tokio's paused clock
    }
    let driver = driver();
    let shard = super::shard::mine();
    let at = core.effective_deadline().nanos();
    let first = {
        let mut timers = lock(&driver.shards[shard].0);
        let slot = timers.slots.insert(Some(std::sync::Arc::downgrade(node)));
        let encoded = encode(slot, shard);
        let entry = Entry {
            at,
            slot: slot as u32, // fits: `encoded` does
        };
        timers.heap.push(entry);
        let last = timers.heap.len() - 1;
        let pos = timers.sift_up(last, entry);
        // SAFETY: under the lock of the shard `encoded` names.
        unsafe { core.set_timer_slot(encoded) };
        pos == 0
    };
    if first {
        // Invariant 8: bump the epoch, then read when the driver means to wake.
        driver.epoch.fetch_add(1, SeqCst);
        if wake_at(at) < driver.next_wake.load(SeqCst) {
            let mut started = lock(&driver.sleep);
            if !*started {
                *started = start_driver_thread(driver);
            }
            driver.wake.notify_one();
        }
    }
}

/// Removes `core`'s pending deadline, if it has one.
pub(super) fn disarm(core: &Core) {
    if core.timer_slot() == NO_SLOT {
        return; // never armed, or already fired (a stale read is re-checked under the lock)
    }
    #[cfg(feature = "test-util")]
    if super::clock::disarm(core) {
        return; // it was on tokio's paused clock
    }
    let shard = core.timer_slot() as usize % SHARDS;
    let mut timers = lock(&driver().shards[shard].0);
    let encoded = core.timer_slot();
    if encoded != NO_SLOT {
        let released = timers.kill(encoded as usize / SHARDS);
        // SAFETY: under the lock of the shard the slot named.
        unsafe { core.set_timer_slot(NO_SLOT) };
        drop(timers);
        drop(released); // a `Weak`: no user code, but no need to free it under the lock
    }
}

/// How many deadlines are armed (for tests that check timers are released).
#[cfg(test)]
pub(in crate::context) fn pending() -> usize {
    driver()
        .shards
        .iter()
        .map(|shard| {
            let timers = lock(&shard.0);
            timers.heap.len() - timers.dead
        })
        .sum()
}

/// Stops the driver thread (loom models must end with every thread finished).
#[cfg(ctx_loom)]
pub(in crate::context) fn stop_driver() {
    let driver = driver();
    driver.stop.store(true, SeqCst);
    drop(lock(&driver.sleep));
    driver.wake.notify_all();
    if let Some(thread) = lock(&driver.thread).take() {
        thread.join().expect("the deadline driver panicked");
    }
}

/// Starts the driver thread; false if the OS refused (the next arm tries again).
fn start_driver_thread(driver: &'static Driver) -> bool {
    let started = crate::sync::thread::Builder::new()
        .name("ctx-deadlines".into())
        .spawn(move || run(driver));
    match started {
        #[cfg(ctx_loom)]
        Ok(thread) => {
            *lock(&driver.thread) = Some(thread);
            true
        }
        #[cfg(not(ctx_loom))]
        Ok(_) => true,
        Err(err) => {
            eprintln!("ctx: could not start the deadline driver thread: {err}");
            false
        }
    }
}

fn run(driver: &'static Driver) {
    let mut due: Vec<NodeRef> = Vec::new();
    loop {
        let epoch = driver.epoch.load(SeqCst);
        let now = Deadline::now().nanos();
        let earliest = driver.take_due(now, &mut due);
        if !due.is_empty() {
            for node in due.drain(..) {
                // No shard lock held (lock order). A waker's panic comes back from the walk
                // (the hook reported it); a value's `Drop` panics here if we hold the last
                // reference. Neither stops the driver.
                let fired = std::panic::catch_unwind(AssertUnwindSafe(move || {
                    discard(walk::expire(&node));
                    drop(node);
                }));
                discard(fired.err());
            }
            continue;
        }
        let sleep = lock(&driver.sleep);
        if driver.stop.load(SeqCst) {
            return;
        }
        // Invariant 8: say when we will wake, then check that no arm came since the scan.
        driver
            .next_wake
            .store(earliest.map_or(u64::MAX, wake_at), SeqCst);
        if driver.epoch.load(SeqCst) != epoch {
            driver.next_wake.store(0, SeqCst);
            continue;
        }
        let _sleep = match earliest {
            Some(at) => {
                driver
                    .wake
                    .wait_timeout(sleep, Duration::from_nanos(wake_at(at.saturating_sub(now))))
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

impl Driver {
    /// Takes the due entries of every shard (at most a batch) into `due`; returns the
    /// earliest deadline left.
    fn take_due(&self, now: i64, due: &mut Vec<NodeRef>) -> Option<i64> {
        let mut earliest: Option<i64> = None;
        for shard in &self.shards {
            let mut timers = lock(&shard.0);
            while let Some(&Entry { at, slot }) = timers.heap.first() {
                let slot = slot as usize;
                if timers.slot(slot).is_none() {
                    timers.pop();
                    timers.slots.remove(slot);
                    timers.dead -= 1;
                    continue;
                }
                if !is_due(at, now) || due.len() == 1024 {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    break;
                }
                timers.pop();
                let node = timers.slots.remove(slot).flatten().expect("a live slot");
                // SAFETY: we hold the shard's lock.
                // and the lock of the shard the slot named, for `set_timer_slot`.
                unsafe { core_of(&node).set_timer_slot(NO_SLOT) };
                if let Some(node) = node.upgrade() {
                    due.push(node);
                }
            }
            timers.shrink_if_sparse();
        }
        earliest
    }
}

impl Timers {
    fn new(shard: usize, floor: usize) -> Timers {
        Timers {
            shard,
            floor,
            heap: Vec::new(),
            slots: Slab::new(),
            dead: 0,
        }
    }

    fn slot(&mut self, key: usize) -> &mut Slot {
        self.slots.get_mut(key).expect("a heap entry has a slot")
    }

    /// Marks a slot dead (its core was disarmed); returns its weak reference, to be dropped
    /// by the caller. Rebuilds the heap without dead entries once they are half of it.
    fn kill(&mut self, key: usize) -> Slot {
        let released = self.slot(key).take();
        debug_assert!(released.is_some(), "a slot is killed once");
        self.dead += 1;
        if self.dead > 32 && self.dead * 2 > self.heap.len() {
            self.purge();
        }
        self.shrink_if_sparse();
        released
    }

    /// Rebuilds the tables at twice their live size if less than an eighth of their room is
    /// live and they have room for more than `floor` entries (so a shrink that rewrites n
    /// live cores' slots comes after at least 3n disarms or fires since the tables were that
    /// large: amortized O(1) each). The caller holds the shard's
    /// lock (invariants 4 and 7: each live slot's core is valid memory, and its `timer_slot`
    /// may be rewritten).
    fn shrink_if_sparse(&mut self) {
        let room = self.heap.capacity().max(self.slots.capacity());
        let live = self.heap.len() - self.dead;
        if room <= self.floor || live * 8 >= room {
            return;
        }
        let keep = (live * 2).max(self.floor / 2);
        let mut slots = Slab::with_capacity(keep);
        let mut heap = Vec::with_capacity(keep);
        for entry in std::mem::take(&mut self.heap) {
            let Some(node) = self.slots.remove(entry.slot as usize).flatten() else {
                continue; // dead: dropped with its slot
            };
            let at_node = node.as_ptr();
            let slot = slots.insert(Some(node));
            // SAFETY: we hold the shard's lock (the caller's promise), and the slot keeps the
            // allocation.
            let core = unsafe { &*at_node }
                .core()
                .expect("only cancel nodes are armed");
            // SAFETY: as above; the new slot is in this shard.
            unsafe { core.set_timer_slot(encode(slot, self.shard)) };
            heap.push(Entry {
                at: entry.at,
                slot: slot as u32,
            });
        }
        self.heap = heap;
        self.slots = slots;
        self.dead = 0;
        self.heapify();
    }

    /// Restores the heap order after entries were taken out of the middle: O(n).
    fn heapify(&mut self) {
        for pos in (0..self.heap.len() / 2).rev() {
            self.sift_down(pos);
        }
    }

    /// Drops every dead entry and slot, and re-heapifies what is left: O(n), once per n/2
    /// disarms.
    fn purge(&mut self) {
        let mut heap = std::mem::take(&mut self.heap);
        heap.retain(|entry| {
            let dead = self.slot(entry.slot as usize).is_none();
            if dead {
                self.slots.remove(entry.slot as usize);
            }
            !dead
        });
        self.heap = heap;
        self.dead = 0;
        self.heapify();
    }

    /// Removes the first entry.
    fn pop(&mut self) {
        let last = self.heap.pop().expect("pop on an empty heap");
        if !self.heap.is_empty() {
            self.heap[0] = last;
            self.sift_down(0);
        }
    }

    /// Moves `entry`, at `pos`, up to its place; returns where.
    ///
    /// perf (bench instructions, Timeouts/alive=1000): it takes the entry rather than read
    /// back the one just pushed, a load that would wait for the push's stores.
    fn sift_up(&mut self, mut pos: usize, entry: Entry) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap[parent].at <= entry.at {
                break;
            }
            self.heap[pos] = self.heap[parent];
            pos = parent;
        }
        self.heap[pos] = entry;
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
            self.heap[pos] = self.heap[child];
            pos = child;
        }
        self.heap[pos] = entry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn arm(t: &mut Timers, at: Instant) -> usize {
        let slot = t.slots.insert(Some(Weak::new()));
        let entry = Entry {
            at: nanos(at),
            slot: slot as u32,
        };
        t.heap.push(entry);
        let last = t.heap.len() - 1;
        t.sift_up(last, entry);
        slot
    }

    fn nanos(at: Instant) -> i64 {
        Deadline::new(Some(at)).nanos()
    }

    /// Pops the live entries in order, discarding dead ones as the driver does.
    fn drain(t: &mut Timers, base: Instant) -> Vec<u64> {
        let mut order = Vec::new();
        while let Some(first) = t.heap.first().copied() {
            t.pop();
            let dead = t.slot(first.slot as usize).is_none();
            t.slots.remove(first.slot as usize);
            if dead {
                t.dead -= 1;
            } else {
                order.push(((first.at - nanos(base)) / 1_000_000) as u64);
            }
        }
        order
    }

    /// What an armed deadline costs the driver: a 16-byte heap entry and an 8-byte slot (a
    /// thin weak pointer, `None` its dead state), 16 bytes in the slab with its tag.
    #[test]
    fn an_armed_deadline_is_two_small_entries() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<Slot>(), 8);
    }

    /// Disarmed entries are skipped in order; nothing is left behind.
    #[test]
    fn heap_order_through_disarms() {
        let base = Instant::now();
        let mut t = Timers::new(0, usize::MAX);
        let keys: Vec<_> = [5u64, 3, 9, 1, 7, 2, 8, 6, 4, 0]
            .into_iter()
            .map(|i| arm(&mut t, base + std::time::Duration::from_millis(i)))
            .collect();
        for &slot in &keys[2..5] {
            drop(t.kill(slot)); // 9, 1, 7
        }
        assert_eq!(drain(&mut t, base), [0, 2, 3, 4, 5, 6, 8]);
        assert_eq!((t.heap.len(), t.dead, t.slots.len()), (0, 0, 0));
    }

    /// Dead entries never grow past the live ones: the heap is rebuilt without them, and
    /// keeps its order.
    #[test]
    fn dead_entries_are_purged() {
        let base = Instant::now();
        let mut t = Timers::new(0, usize::MAX);
        let mut live = Vec::new();
        for i in 0..10_000u64 {
            let slot = arm(
                &mut t,
                base + std::time::Duration::from_millis((i * 7919) % 10_000),
            );
            if i % 10 == 0 {
                live.push((i * 7919) % 10_000);
            } else {
                drop(t.kill(slot));
            }
            assert!(
                t.dead <= 32 || t.dead * 2 <= t.heap.len() + 1,
                "{} dead of {}",
                t.dead,
                t.heap.len()
            );
        }
        live.sort_unstable();
        assert_eq!(drain(&mut t, base), live);
    }

    /// Room for every armed deadline of this process's shards.
    fn room() -> usize {
        driver()
            .shards
            .iter()
            .map(|shard| {
                let timers = lock(&shard.0);
                timers.heap.capacity() + timers.slots.capacity()
            })
            .sum()
    }

    /// Once a burst of deadlines is over, the tables shrink back: to at most twice the
    /// floor per shard (other tests' deadlines may be armed meanwhile), not the burst's size.
    #[test]
    fn the_tables_shrink_after_a_burst() {
        let _serial = crate::context::unit_tests::TIMER_COUNT
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let root = crate::Context::background();
        let hour = std::time::Duration::from_secs(3600);
        let scopes: Vec<_> = (0..50_000).map(|_| root.with_timeout(hour)).collect();
        let armed = room();
        assert!(armed >= 50_000, "room for the burst: {armed}");
        // Kept in a disordered way: dropping every other first, then the rest.
        let (even, odd): (Vec<_>, Vec<_>) = scopes
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        drop(even);
        let live: Vec<_> = (0..10).map(|_| root.with_timeout(hour)).collect();
        drop(odd);
        let left = room();
        assert!(
            left <= 4 * FLOOR * SHARDS,
            "room left after the burst: {left}"
        );
        // The deadlines still armed keep working: renumbered, they disarm and fire.
        for scope in &live {
            assert!(scope.deadline().is_some() && !scope.is_cancelled());
        }
        drop(live);
        let soon = root.with_timeout(std::time::Duration::from_millis(10));
        let started = std::time::Instant::now();
        while !soon.is_cancelled() {
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
