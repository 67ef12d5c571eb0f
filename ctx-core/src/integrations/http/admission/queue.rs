//! The state an [`AdmissionLayer`](super::AdmissionLayer) shares with every clone of itself
//! and of its services: the places in the service, the queue of requests waiting for one,
//! the counters, and the window of recent service times.
//!
//! One `std::sync::Mutex` guards the places and the queue (there is no other lock, so no
//! lock order); the counters and the service-time threshold are atomics read without it.
//!
//! # Invariants
//!
//! 1. `in_flight <= max_in_flight`. Each counted place is held by exactly one of: a
//!    [`Permit`], or a waiter that [`release`](Shared::release) granted (removed from the
//!    queue) and whose [`Ticket`] has not yet noticed.
//! 2. A waiter's entry stays in the queue until one of two things happens, both under the
//!    lock: `release` removes it to hand it a place (the freed place passes to it:
//!    `in_flight` does not change), or its ticket removes it when the request leaves (its
//!    context ended, or its future was dropped). So a ticket that does not find its entry
//!    holds a place, which it must turn into a `Permit` or give back with `release`.
//! 3. Entries are pushed at the back with a fresh, increasing id and removed from anywhere,
//!    so the queue is sorted by id and a ticket finds its entry by binary search.
//! 4. The queue is not empty only while every place is taken: a request waits only when
//!    `in_flight == max_in_flight`, and a freed place goes to a waiter while there is one.
//!    Hence a request that finds a free place may take it without passing anyone.
//! 5. No waker is woken or dropped under the lock: it is taken out of the queue and woken
//!    or dropped after the lock is released, so a panicking waker finds the state whole. The
//!    one piece of user code under the lock, a waker's clone, runs before the update it
//!    belongs to. So a poisoned lock still guards a whole state, and is used as it is.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The time, on the clock deadlines are measured on ([`Context::now`](crate::Context::now):
/// tokio's paused clock in a test, the system's otherwise), so budgets, service times and
/// waits agree with the deadlines they are compared with.
pub(super) fn now() -> Instant {
    crate::Context::now()
}

/// The layer's settings, fixed once it is built.
#[derive(Clone, Copy, Debug)]
pub(super) struct Config {
    pub(super) max_in_flight: usize,
    pub(super) max_queued: usize,
    pub(super) min_budget: Duration,
    /// CoDel's target: an oldest wait under it means the queue is draining.
    pub(super) target: Duration,
    /// CoDel's interval: a queue whose oldest wait stayed above `target` this long stands.
    pub(super) interval: Duration,
}

/// Service times kept for the "recent requests needed" estimate.
pub(super) const WINDOW: usize = 64;
/// Once the window is full, the estimate is computed again after this many samples.
const RECOMPUTE: usize = 64;
/// Fewer measured requests than this, and no estimate (no request is judged by it).
pub(super) const MIN_SAMPLES: usize = 5;

/// What the layer did with requests, since it was built.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) admitted: AtomicU64,
    pub(super) shed: AtomicU64,
    pub(super) expired_on_arrival: AtomicU64,
    pub(super) expired_while_queued: AtomicU64,
    pub(super) predicted_miss: AtomicU64,
}

impl Counts {
    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request waiting for a place.
#[derive(Debug)]
struct Entry {
    id: u64,
    since: Instant,
    /// None until its future is first polled (a grant before that is found on that poll).
    waker: Option<Waker>,
}

/// The last [`WINDOW`] service times, in nanoseconds, oldest overwritten first.
#[derive(Debug)]
struct Window {
    samples: [u64; WINDOW],
    len: usize,
    next: usize,
    /// Samples pushed since the estimate was last computed.
    fresh: usize,
}

impl Window {
    /// Adds `took`; the new estimate if it is time to compute one: after every sample while
    /// the window fills, then every [`RECOMPUTE`]th.
    ///
    /// perf (bench instructions, Layers/ContextLayer+AdmissionLayer): the estimate is a
    /// selection over the whole window, under the layer's lock; computed for every request,
    /// every request would pay for it.
    fn push(&mut self, took: Duration) -> Option<u64> {
        self.samples[self.next] = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        self.fresh += 1;
        if self.len < MIN_SAMPLES || (self.len == WINDOW && self.fresh < RECOMPUTE) {
            return None;
        }
        self.fresh = 0;
        let mut sorted = self.samples;
        let sorted = &mut sorted[..self.len];
        // The 10th percentile, rounded down: the minimum up to 10 samples, the 7th
        // smallest of 64. Low on purpose: a request with less budget than this would have
        // missed its deadline in 9 cases out of 10 even when served at once.
        let (_, low, _) = sorted.select_nth_unstable((self.len - 1) / 10);
        Some(*low)
    }
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    queue: VecDeque<Entry>,
    next_id: u64,
    /// The last time the queue was seen draining (empty, or its oldest wait under target).
    calm_at: Instant,
    window: Window,
}

/// Everything an admission layer's clones share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) counts: Counts,
    /// The "recent requests needed" estimate in nanoseconds; 0 while there is none.
    needed: AtomicU64,
    state: Mutex<State>,
}

/// What [`Shared::arrive`] decided.
pub(super) enum Arrival {
    /// A place was free: it is the request's.
    Admit(Permit),
    /// Every place is taken: the request waits.
    Wait(Ticket),
    /// Every place is taken and the queue is full.
    Full,
}

impl Shared {
    pub(super) fn new(config: Config) -> Shared {
        Shared {
            config,
            counts: Counts::default(),
            needed: AtomicU64::new(0),
            state: Mutex::new(State {
                in_flight: 0,
                queue: VecDeque::new(),
                next_id: 0,
                calm_at: now(),
                window: Window {
                    samples: [0; WINDOW],
                    len: 0,
                    next: 0,
                    fresh: 0,
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // By invariant 5 the state is whole even if a panic poisoned the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long recent requests took inside the service, at the least (see [`Window::push`]);
    /// `None` until [`MIN_SAMPLES`] were measured.
    pub(super) fn needed(&self) -> Option<Duration> {
        match self.needed.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Takes a free place, or a place in the queue, or neither.
    pub(super) fn arrive(self: &Arc<Shared>) -> Arrival {
        let mut state = self.lock();
        // By invariant 4, a free place means nobody waits: taking it passes no one.
        if state.in_flight < self.config.max_in_flight {
            state.in_flight += 1;
            drop(state);
            return Arrival::Admit(Permit::new(self.clone()));
        }
        if state.queue.len() >= self.config.max_queued {
            return Arrival::Full;
        }
        let now = now();
        if state.queue.is_empty() {
            state.calm_at = now; // it was empty until now: draining
        }
        let id = state.next_id;
        state.next_id += 1;
        // Invariant 3: ids grow toward the back.
        state.queue.push_back(Entry {
            id,
            since: now,
            waker: None,
        });
        drop(state);
        Arrival::Wait(Ticket {
            shared: Some(self.clone()),
            id,
        })
    }

    /// Gives a place back: to a waiter if there is one (which one: [`State::next_waiter`]),
    /// else to the pool. `took` is a finished request's service time, for the estimate.
    fn release(&self, took: Option<Duration>) {
        let waker = {
            let mut state = self.lock();
            if let Some(took) = took
                && let Some(needed) = state.window.push(took)
            {
                self.needed.store(needed.max(1), Ordering::Relaxed);
            }
            match state.next_waiter(&self.config) {
                // Invariant 2: the place passes to the waiter, `in_flight` unchanged.
                Some(entry) => entry.waker,
                None => {
                    state.in_flight -= 1;
                    None
                }
            }
        };
        // Invariant 5: woken outside the lock.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Requests in the service, and waiting, now.
    pub(super) fn occupancy(&self) -> (usize, usize) {
        let state = self.lock();
        (state.in_flight, state.queue.len())
    }
}

impl State {
    /// The waiter a freed place goes to. CoDel's test for a standing queue: if the oldest
    /// waiter has waited less than `target`, or the queue was seen so within the last
    /// `interval`, the queue is draining and the oldest goes first (FIFO); otherwise it
    /// stands, and the newest goes first (adaptive LIFO): it has the most budget left, while
    /// the oldest are the likeliest to expire anyway.
    fn next_waiter(&mut self, config: &Config) -> Option<Entry> {
        let oldest = self.queue.front()?;
        let now = now();
        let standing = if now.saturating_duration_since(oldest.since) < config.target {
            self.calm_at = now;
            false
        } else {
            now.saturating_duration_since(self.calm_at) >= config.interval
        };
        match standing {
            true => self.queue.pop_back(),
            false => self.queue.pop_front(),
        }
    }

    fn position(&self, id: u64) -> Option<usize> {
        // Invariant 3: sorted by id.
        self.queue.binary_search_by_key(&id, |entry| entry.id).ok()
    }
}

/// A place in the service. Dropped, it goes to the next waiter (or back to the pool).
#[derive(Debug)]
pub(super) struct Permit {
    shared: Option<Arc<Shared>>,
}

impl Permit {
    fn new(shared: Arc<Shared>) -> Permit {
        Permit {
            shared: Some(shared),
        }
    }

    pub(super) fn shared(&self) -> &Shared {
        self.shared
            .as_ref()
            .expect("a permit holds its layer until dropped")
    }

    /// The request is over after `took` in the service: the place goes on, and `took`
    /// joins the window of recent service times.
    pub(super) fn finish(mut self, took: Duration) {
        if let Some(shared) = self.shared.take() {
            shared.release(Some(took));
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(None);
        }
    }
}

/// A request's place in the queue. Dropped before it was turned into a [`Permit`], the
/// request leaves: its entry is removed, or, had it just been granted a place, the place
/// goes on. Either way it counts as expired while queued (its context ended, or its caller
/// went away).
#[derive(Debug)]
pub(super) struct Ticket {
    shared: Option<Arc<Shared>>,
    id: u64,
}

impl Ticket {
    /// `Ready` once the request holds a place (then [`into_permit`](Ticket::into_permit));
    /// until then `waker` is woken when it gets one.
    pub(super) fn poll_granted(&mut self, waker: &Waker) -> Poll<()> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(());
        };
        let mut state = shared.lock();
        let Some(i) = state.position(self.id) else {
            return Poll::Ready(()); // invariant 2: granted
        };
        let entry = &mut state.queue[i];
        if entry.waker.as_ref().is_some_and(|old| old.will_wake(waker)) {
            return Poll::Pending;
        }
        // Invariant 5: the clone runs before the update, the old waker drops after the lock.
        let old = entry.waker.replace(waker.clone());
        drop(state);
        drop(old);
        Poll::Pending
    }

    /// The place [`poll_granted`](Ticket::poll_granted) found.
    pub(super) fn into_permit(mut self) -> Permit {
        Permit {
            shared: self.shared.take(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        Counts::add(&shared.counts.expired_while_queued);
        let mut state = shared.lock();
        match state.position(self.id) {
            Some(i) => {
                // The entry's waker is this request's own: dropped, not woken, and after
                // the lock (invariant 5).
                let entry = state.queue.remove(i);
                drop(state);
                drop(entry);
            }
            None => {
                // Invariant 2: granted a moment ago. The place goes on.
                drop(state);
                shared.release(None);
            }
        }
    }
}
