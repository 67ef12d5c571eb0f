//! A cancellable node's [`Core`]: its state, cause, waiters and after-funcs, and the
//! heads of its children lists (the lists themselves are `children.rs`'s).

use std::panic::Location;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::task::Waker;
use std::time::Instant;

use super::children::{List, Spread, free_spread};
use super::slab::Slab;
use super::{NodeRef, Panic, WeakNode, catch, timer};
use crate::context::error::{Cause, Error};
use crate::sync::{AtomicPtr, AtomicU8, AtomicUsize, Mutex, lock};

pub(super) const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE: u8 = 2;

pub(in crate::context) type AfterFn = Box<dyn FnOnce() + Send + 'static>;

/// The state shared by a cancellable node and every value node below it.
pub(in crate::context) struct Core {
    pub(super) state: AtomicU8,
    /// The effective deadline: this node's own, or the nearest ancestor's.
    pub(in crate::context) deadline: Option<Instant>,
    /// Whether this node armed a timer of its own (`WithDeadline` rather than `WithCancel`).
    pub(super) own_deadline: bool,
    /// Where the scope was created: a dropped scope's or a fired deadline's cause location.
    pub(super) created: &'static Location<'static>,
    /// Slot in the timer driver, or `timer::NO_SLOT` (invariant 7).
    pub(super) timer_slot: AtomicUsize,
    /// The list this core is linked in, if any, and its links there (invariant 2;
    /// `children.rs`).
    pub(super) owner: AtomicPtr<()>,
    pub(super) prev: AtomicPtr<Core>,
    pub(super) next: AtomicPtr<Core>,
    /// This core's spread of children lists, once derivations from it contended, or null.
    pub(super) spread: AtomicPtr<Spread>,
    /// The root of the walk that ended this core (an ancestor, invariant 3), or null when
    /// that was this core itself. Written once, before `state` (invariant 1), so whoever sees
    /// the state done reads it without a lock; it holds the cause (one copy per cancel) and
    /// its lock is held until the walk is over (invariant 6).
    pub(super) cause_from: AtomicPtr<Core>,
    pub(super) inner: Mutex<Inner>,
}

pub(super) struct Inner {
    /// The cause given to the cancel that ended this core, when this core was the walk root;
    /// until then, the cause to report if the own deadline fires (`with_deadline_cause`).
    pub(super) cause: Option<Cause>,
    /// Where the walk root was ended (`Cause::location`), once it was.
    pub(super) ended_at: Option<&'static Location<'static>>,
    /// The core's own list of children (its spread has more).
    pub(super) children: List,
    pub(super) waiters: Slab<Waker>,
    /// What to do when this core ends, besides waking: after-funcs to dispatch, and merged
    /// contexts (`Context::merge`) whose other parent this core is, ended right after the
    /// walk that ends it (invariant 9). One slab for both keeps the node small.
    pub(super) on_end: Slab<OnEnd>,
}

/// An entry of `Inner::on_end`.
pub(super) enum OnEnd {
    AfterFunc(AfterFn),
    Merge(WeakNode),
}

/// Where a cancel's cause is recorded: in the cancelled core, or in its walk root.
pub(super) enum Origin {
    /// This core is the walk root, cancelled with this cause, there.
    Own(Option<Cause>, &'static Location<'static>),
    /// This core is the walk root, and its cause was stored at creation (a deadline's).
    Preset,
    /// Ended by the walk rooted at this core.
    Walk(*const Core),
}

impl Core {
    pub(super) fn new(
        deadline: Option<Instant>,
        own_deadline: bool,
        deadline_cause: Option<Cause>,
        created: &'static Location<'static>,
    ) -> Core {
        Core {
            state: AtomicU8::new(LIVE),
            deadline,
            own_deadline,
            created,
            timer_slot: AtomicUsize::new(timer::NO_SLOT),
            owner: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            next: AtomicPtr::new(ptr::null_mut()),
            spread: AtomicPtr::new(ptr::null_mut()),
            cause_from: AtomicPtr::new(ptr::null_mut()),
            inner: Mutex::new(Inner {
                cause: deadline_cause,
                ended_at: None,
                children: List::EMPTY,
                waiters: Slab::new(),
                on_end: Slab::new(),
            }),
        }
    }

    /// The deadline this node set itself (`WithDeadline` rather than `WithCancel`).
    pub(in crate::context) fn own_deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.own_deadline)
    }

    /// The error, once done: the hot path, one atomic load (invariant 1).
    #[inline]
    pub(in crate::context) fn err(&self) -> Option<Error> {
        match self.state.load(Acquire) {
            LIVE => None,
            CANCELLED => Some(Error::Cancelled),
            _ => Some(Error::DeadlineExceeded),
        }
    }

    #[inline]
    pub(in crate::context) fn is_done(&self) -> bool {
        self.state.load(Acquire) != LIVE
    }

    pub(in crate::context) fn cause(&self) -> Option<Cause> {
        let err = self.err()?;
        // SAFETY: the walk root is this core or an ancestor, alive while we are (invariant 3).
        let origin = unsafe { &*self.walk_root() };
        let inner = lock(&origin.inner);
        let cause = inner.cause.clone().unwrap_or(Cause::from(err));
        Some(cause.at(inner.ended_at))
    }

    /// The root of the walk that ended this (done) core: itself or an ancestor.
    pub(super) fn walk_root(&self) -> *const Core {
        let from = self.cause_from.load(Relaxed); // ordered by the caller's Acquire of `state`
        if from.is_null() { self } else { from }
    }

    pub(super) fn as_ptr(&self) -> *mut Core {
        self as *const Core as *mut Core
    }

    /// Marks a new, unshared core done as its parent is: no lock is needed, as nothing
    /// else can see it yet, and it has no waiters, after-funcs, children or timer.
    pub(super) fn born_done(&self, err: Error, root: *const Core) {
        self.cause_from.store(root as *mut Core, Relaxed);
        self.state.store(state_of(err), Release);
    }

    /// Arms this core's own deadline timer, unless it is already done (invariant 7).
    pub(super) fn arm(&self, node: &NodeRef, deadline: Instant) {
        let _inner = lock(&self.inner);
        if !self.is_done() {
            timer::arm(self, node, deadline);
        }
    }

    /// Registers `waker` for this core's end, or reports the error if it already came.
    /// `slot` is the caller's registration, created on first use and reused after.
    pub(in crate::context) fn register_waker(
        &self,
        slot: &mut Option<usize>,
        waker: &Waker,
    ) -> Option<Error> {
        let mut inner = lock(&self.inner);
        if let Some(err) = self.err() {
            return Some(err); // a registration stays until the waiter drops (see `finish`)
        }
        let replaced = match slot.and_then(|key| inner.waiters.get_mut(key)) {
            Some(registered) if registered.will_wake(waker) => None,
            Some(registered) => Some(std::mem::replace(registered, waker.clone())),
            None => {
                *slot = Some(inner.waiters.insert(waker.clone()));
                None
            }
        };
        drop(inner);
        drop(replaced); // user code may run when a waker drops: never under our lock
        None
    }

    /// Forgets a waker registration (a `Done` dropped before its context ended).
    pub(in crate::context) fn deregister_waker(&self, key: usize) {
        let removed = lock(&self.inner).waiters.remove(key);
        drop(removed); // outside the lock: a waker's drop is user code
    }

    /// Registers `f` to run when this core is done; if it already is, returns `f` back.
    pub(in crate::context) fn register_after(&self, f: AfterFn) -> Result<usize, AfterFn> {
        let mut inner = lock(&self.inner);
        if self.is_done() {
            return Err(f);
        }
        Ok(inner.on_end.insert(OnEnd::AfterFunc(f)))
    }

    /// Removes a registered after-func; true if it had not run yet (it never will now).
    pub(in crate::context) fn deregister_after(&self, key: usize) -> bool {
        let removed = {
            let mut inner = lock(&self.inner);
            if self.is_done() {
                None
            } else {
                inner.on_end.remove(key)
            }
        };
        // `f`'s captures (a `CancelHandle`, say) may lock this very core when they drop:
        // dropped here, after the lock.
        removed.is_some()
    }

    /// Registers a merged node to end when this core does; `Err` if it already has.
    pub(super) fn watch(&self, merged: WeakNode) -> Result<usize, WeakNode> {
        let mut inner = lock(&self.inner);
        if self.is_done() {
            return Err(merged);
        }
        Ok(inner.on_end.insert(OnEnd::Merge(merged)))
    }

    /// Forgets a merged node's registration (it is being dropped).
    pub(super) fn unwatch(&self, key: usize) {
        let removed = lock(&self.inner).on_end.remove(key);
        drop(removed); // a `Weak`: freeing it runs no user code, but no need to hold the lock
    }

    /// Marks this core done, wakes its waiters, dispatches its after-funcs, hands its merged
    /// nodes to `merges` (ended by the caller once its locks are released) and disarms its
    /// timer. Called under the core's own lock, once (the caller checked the state). Returns
    /// the cause it replaced, for the caller to drop after its locks (user code).
    pub(super) fn finish(
        &self,
        inner: &mut Inner,
        err: Error,
        origin: &Origin,
        panic: &mut Option<Panic>,
        merges: &mut Vec<WeakNode>,
    ) -> Option<Cause> {
        let replaced = match origin {
            Origin::Own(cause, at) => {
                inner.ended_at = Some(at);
                std::mem::replace(&mut inner.cause, cause.clone())
            }
            Origin::Preset => {
                inner.ended_at = Some(self.created);
                None
            }
            Origin::Walk(root) => {
                self.cause_from.store(*root as *mut Core, Relaxed);
                None
            }
        };
        self.state.store(state_of(err), Release);
        // Wake by reference: the wakers stay registered until their `Done` is dropped or the
        // node is, so no waker (whose drop is user code) is dropped under this lock. A
        // panicking waker is caught so the walk goes on (see the module docs).
        for waker in inner.waiters.values() {
            catch(panic, || waker.wake_by_ref());
        }
        if inner.on_end.has_slots() {
            for entry in inner.on_end.take_all() {
                match entry {
                    OnEnd::AfterFunc(f) => super::dispatch_after_func(f),
                    OnEnd::Merge(merged) => merges.push(merged),
                }
            }
        }
        if self.own_deadline {
            timer::disarm(self);
        }
        replaced
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        free_spread(self);
    }
}

fn state_of(err: Error) -> u8 {
    match err {
        Error::Cancelled => CANCELLED,
        Error::DeadlineExceeded => DEADLINE,
    }
}
