//! The cancellation tree: nodes, their shared state, and the cancel algorithm.
//!
//! Every derived context is one `Node` in one heap allocation (an `Arc`), holding its
//! parent, its kind, and, for value nodes, the value itself (the node is unsized over the
//! value so the value needs no box of its own). Only cancellable nodes (`with_cancel`,
//! `with_deadline`) carry a [`Core`]: the atomic state, the cause, the waiters, the
//! after-funcs and the list of cancellable children. Value nodes point at the `Core` of their
//! nearest cancellable ancestor; `without_cancel` nodes and the roots have none.
//!
//! # Invariants
//!
//! 1. `Core::state` goes from `LIVE` to `CANCELLED` or `DEADLINE` once, under the core's own
//!    lock, after the cause is stored. Readers need no lock: one load tells done or not.
//! 2. A core's children form an intrusive doubly-linked list whose head is in the owner's
//!    `Inner` and whose links live in the children. Every link of a child (`prev`, `next`,
//!    `linked`) is read and written only under the lock of the child's current `owner`;
//!    `owner` itself changes only while the old and the new owner's locks are both held.
//! 3. A child's owner is always one of its ancestors, so the child's chain of `parent`
//!    references keeps its owner alive; reading `owner` and locking it is always safe.
//! 4. A node unlinks itself from its owner in `Drop`, before any of its fields are dropped.
//!    Hence, while a thread holds an owner's lock, every core in that owner's list is valid
//!    memory, even if its node's reference count already reached zero.
//! 5. A cancelled core has an empty list forever: new children of a done parent are born
//!    done and are never linked.
//! 6. Lock order: an ancestor's core before a descendant's, and any core before the timer
//!    driver's lock. No lock is held while user code (an after-func, or the drop of one or
//!    of a waker) runs; wakers are woken under the lock of the core they wait on, as Go
//!    closes its done channel.
//!
//! # Cancel
//!
//! `cancel` holds the cancelled core's lock for the whole walk, as Go does, so when it
//! returns every descendant is done, even one that a concurrent canceller reached first
//! (that canceller holds the descendant's lock until its own walk is over). The walk uses
//! no stack and allocates nothing: it pops a child, marks it done, and splices the child's
//! children onto its own list (adoption, as tokio-util's tree does), until the list is empty.

use std::any::Any;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::task::Waker;
use std::time::Instant;

use crate::context::Context;
use crate::error::{Cause, Error};
use crate::loom::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Mutex, lock};
use crate::slab::Slab;
use crate::timer;

/// A node whose value has been erased; what a [`Context`] points at.
pub(crate) type NodeRef = Arc<Node<dyn Any + Send + Sync>>;

pub(crate) const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE: u8 = 2;

pub(crate) struct Node<V: ?Sized> {
    /// The context this one was derived from (keeps the whole chain alive).
    pub(crate) parent: Context,
    /// Bloom filter of the value-key types on this node and above (see `crate::value`).
    pub(crate) keys: u64,
    pub(crate) kind: Kind,
    /// The value of a value node; `()` for the other kinds.
    pub(crate) value: V,
}

pub(crate) enum Kind {
    /// `with_cancel`, `with_deadline`, `with_timeout`.
    Cancel(Core),
    /// `with_value`: the key's type and name, and the core that decides when it is done.
    Value {
        key: std::any::TypeId,
        name: &'static str,
        signal: Option<CorePtr>,
    },
    /// `without_cancel`: values pass through, cancellation does not.
    WithoutCancel,
}

/// A pointer to an ancestor's [`Core`].
#[derive(Clone, Copy)]
pub(crate) struct CorePtr(ptr::NonNull<Core>);

// SAFETY: a `CorePtr` is only dereferenced as `&Core` (which is `Sync`), and the node that
// holds it keeps the pointee alive through its `parent` chain (see `Node::signal`).
unsafe impl Send for CorePtr {}
// SAFETY: as above.
unsafe impl Sync for CorePtr {}

impl<V: ?Sized> Node<V> {
    /// The core that decides when this node is done, if any.
    #[inline]
    pub(crate) fn signal(&self) -> Option<&Core> {
        match &self.kind {
            Kind::Cancel(core) => Some(core),
            // SAFETY: `signal` points at the core of a cancellable ancestor, which our
            // `parent` chain keeps alive for as long as `self` lives (invariant 3's reasoning).
            Kind::Value { signal, .. } => signal.map(|p| unsafe { p.0.as_ref() }),
            Kind::WithoutCancel => None,
        }
    }

    pub(crate) fn signal_ptr(&self) -> Option<CorePtr> {
        self.signal().map(|core| CorePtr(ptr::NonNull::from(core)))
    }
}

/// The state shared by a cancellable node and every value node below it.
pub(crate) struct Core {
    state: AtomicU8,
    /// The effective deadline: this node's own, or the nearest ancestor's.
    pub(crate) deadline: Option<Instant>,
    /// Whether this node armed a timer of its own (`WithDeadline` rather than `WithCancel`).
    pub(crate) own_deadline: bool,
    /// Slot in the timer driver, or `timer::NO_SLOT`; guarded by the driver's lock.
    pub(crate) timer_slot: AtomicUsize,
    /// Links in the owner's child list (invariant 2).
    owner: AtomicPtr<Core>,
    prev: AtomicPtr<Core>,
    next: AtomicPtr<Core>,
    linked: AtomicBool,
    /// The core whose cancel ended this one (an ancestor, kept alive by our parent chain),
    /// or null when that was this core itself. Written once, before `state` (invariant 1),
    /// so whoever sees the state done reads it without a lock.
    cause_from: AtomicPtr<Core>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The cause given to the cancel that ended this core, when this core was the one
    /// cancelled; a descendant ended by it records only `cause_from` (one copy per cancel).
    cause: Option<Cause>,
    first_child: *const Core,
    waiters: Slab<Waker>,
    after_funcs: Slab<AfterFn>,
}

// SAFETY: `first_child` is only dereferenced under this lock, by invariants 2 and 4.
unsafe impl Send for Inner {}

pub(crate) type AfterFn = Box<dyn FnOnce() + Send + 'static>;

impl Core {
    pub(crate) fn new(
        deadline: Option<Instant>,
        own_deadline: bool,
        deadline_cause: Option<Cause>,
    ) -> Core {
        Core {
            state: AtomicU8::new(LIVE),
            deadline,
            own_deadline,
            timer_slot: AtomicUsize::new(timer::NO_SLOT),
            owner: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            next: AtomicPtr::new(ptr::null_mut()),
            linked: AtomicBool::new(false),
            cause_from: AtomicPtr::new(ptr::null_mut()),
            inner: Mutex::new(Inner {
                // Until done, the cause to report if the own deadline fires (if any): the
                // deadline's cancel keeps it, any other cancel replaces it.
                cause: deadline_cause,
                first_child: ptr::null(),
                waiters: Slab::new(),
                after_funcs: Slab::new(),
            }),
        }
    }

    /// The error, once done: the hot path, one atomic load.
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        match self.state.load(Acquire) {
            LIVE => None,
            CANCELLED => Some(Error::Cancelled),
            _ => Some(Error::DeadlineExceeded),
        }
    }

    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Acquire) != LIVE
    }

    pub(crate) fn cause(&self) -> Option<Cause> {
        let err = self.err()?;
        // SAFETY: `cause_origin` is this core or an ancestor, alive while we are.
        let origin = unsafe { &*self.cause_origin() };
        Some(
            lock(&origin.inner)
                .cause
                .clone()
                .unwrap_or(Cause::from(err)),
        )
    }

    /// The core holding the cause of this (done) core's cancel: itself or an ancestor.
    fn cause_origin(&self) -> *const Core {
        let from = self.cause_from.load(Relaxed); // ordered by the caller's Acquire of `state`
        if from.is_null() { self } else { from }
    }

    /// Replaces the cause recorded by the cancel of this core (for `Group`, which takes its
    /// error back out of the cause when it returns it). Descendants see the new one too.
    #[allow(dead_code)] // used by the `tokio` feature
    pub(crate) fn replace_cause(&self, cause: Cause) -> Option<Cause> {
        let mut inner = lock(&self.inner);
        if self.is_done() && self.cause_from.load(Relaxed).is_null() {
            inner.cause.replace(cause)
        } else {
            None
        }
    }

    fn as_ptr(&self) -> *mut Core {
        self as *const Core as *mut Core
    }

    /// Links a new child core under `self`, or, if `self` is done, makes the child done with
    /// the same error and cause (invariant 5). The child is not yet shared.
    pub(crate) fn attach(&self, child: &Core) {
        if let Some(err) = self.err() {
            return child.born_done(err, self.cause_origin());
        }
        let mut inner = lock(&self.inner);
        match self.err() {
            None => push_child(self, &mut inner, child),
            Some(err) => {
                drop(inner);
                child.born_done(err, self.cause_origin());
            }
        }
    }

    /// Marks a new, unshared core done as its parent is: no lock is needed, as nothing
    /// else can see it yet, and it has no waiters, after-funcs, children or timer.
    fn born_done(&self, err: Error, origin: *const Core) {
        self.cause_from.store(origin as *mut Core, Relaxed);
        self.state.store(state_of(err), Release);
    }

    /// Arms this core's own deadline timer, unless it is already done (checked under the
    /// core's lock so a concurrent cancel either sees the slot or the arm sees the state).
    pub(crate) fn arm(&self, node: &NodeRef, deadline: Instant) {
        let _inner = lock(&self.inner);
        if !self.is_done() {
            timer::arm(self, node, deadline);
        }
    }

    /// Registers `waker` for this core's end, or reports the error if it already came.
    /// `slot` is the caller's registration, created on first use and reused after.
    pub(crate) fn register_waker(&self, slot: &mut Option<usize>, waker: &Waker) -> Option<Error> {
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
    pub(crate) fn deregister_waker(&self, key: usize) {
        let mut inner = lock(&self.inner);
        let removed = inner.waiters.remove(key);
        drop(inner);
        drop(removed);
    }

    /// Registers `f` to run when this core is done; if it already is, returns `f` back.
    pub(crate) fn register_after(&self, f: AfterFn) -> Result<usize, AfterFn> {
        let mut inner = lock(&self.inner);
        if self.is_done() {
            return Err(f);
        }
        Ok(inner.after_funcs.insert(f))
    }

    /// Removes a registered after-func; true if it had not run yet (it never will now).
    pub(crate) fn deregister_after(&self, key: usize) -> bool {
        let mut inner = lock(&self.inner);
        let removed = if self.is_done() {
            None
        } else {
            inner.after_funcs.remove(key)
        };
        drop(inner);
        // Dropping `f` runs the drops of what it captured (a `CancelHandle`, say), which may
        // lock this very core: never under our lock.
        removed.is_some()
    }

    /// Marks this core done and releases its waiters, after-funcs and timer. Called under
    /// the core's own lock, once (the caller checked the state).
    fn finish(&self, inner: &mut Inner, err: Error, origin: &Origin) {
        match origin {
            Origin::Own(cause) => inner.cause = cause.clone(),
            Origin::Preset => {}
            Origin::Inherited(from) => self.cause_from.store(*from as *mut Core, Relaxed),
        }
        self.state.store(state_of(err), Release);
        // Wake by reference: the wakers stay registered until their `Done` is dropped or the
        // node is, so no waker (whose drop may run user code) is dropped under this lock.
        for waker in inner.waiters.values() {
            waker.wake_by_ref();
        }
        for f in inner.after_funcs.take_all() {
            spawn_after_func(f);
        }
        if self.own_deadline {
            timer::disarm(self);
        }
    }

    /// Removes this core from its owner's list, if it is in one (invariants 2 and 3).
    pub(crate) fn unlink(&self) {
        loop {
            let owner = self.owner.load(Acquire);
            if owner.is_null() {
                return;
            }
            // SAFETY: by invariant 3 the owner is an ancestor, kept alive by our parent chain.
            let owner_ref = unsafe { &*owner };
            let mut inner = lock(&owner_ref.inner);
            if self.owner.load(Relaxed) != owner {
                continue; // adopted by another ancestor meanwhile; lock that one instead
            }
            if self.linked.load(Relaxed) {
                remove_child(&mut inner, self);
            }
            return;
        }
    }
}

fn state_of(err: Error) -> u8 {
    match err {
        Error::Cancelled => CANCELLED,
        Error::DeadlineExceeded => DEADLINE,
    }
}

/// Runs an after-func on a thread of its own, as Go runs it in its own goroutine: it may be
/// slow or block without delaying the canceller or any other after-func.
pub(crate) fn spawn_after_func(f: AfterFn) {
    let spawned = crate::loom::thread::Builder::new()
        .name("ctx-after-func".into())
        .spawn(f);
    // The OS refusing a thread leaves nothing better to do with `f`: it was moved into the
    // failed spawn and dropped there. Report it rather than lose it silently.
    if let Err(err) = spawned {
        eprintln!("ctx: could not start a thread for an after_func: {err}");
    }
}

/// Pushes `child` at the head of `owner`'s list; caller holds `owner`'s lock.
fn push_child(owner: &Core, inner: &mut Inner, child: &Core) {
    let head = inner.first_child;
    child.prev.store(ptr::null_mut(), Relaxed);
    child.next.store(head as *mut Core, Relaxed);
    if !head.is_null() {
        // SAFETY: `head` is in `owner`'s list, whose lock we hold (invariant 4).
        unsafe { &*head }.prev.store(child.as_ptr(), Relaxed);
    }
    inner.first_child = child;
    child.owner.store(owner.as_ptr(), Release);
    child.linked.store(true, Relaxed);
}

/// Unlinks `child` from the list whose head is in `inner`; caller holds that owner's lock.
fn remove_child(inner: &mut Inner, child: &Core) {
    let prev = child.prev.load(Relaxed);
    let next = child.next.load(Relaxed);
    if prev.is_null() {
        inner.first_child = next;
    } else {
        // SAFETY: `prev` is in the same list, whose lock the caller holds (invariant 4).
        unsafe { &*prev }.next.store(next, Relaxed);
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { &*next }.prev.store(prev, Relaxed);
    }
    child.prev.store(ptr::null_mut(), Relaxed);
    child.next.store(ptr::null_mut(), Relaxed);
    child.linked.store(false, Relaxed);
}

/// Pops the head of the list in `inner`; caller holds that owner's lock, and the returned
/// core stays valid until the caller releases it (invariant 4).
fn pop_child(inner: &mut Inner) -> Option<*const Core> {
    let head = inner.first_child;
    if head.is_null() {
        return None;
    }
    // SAFETY: `head` is in the list and the caller holds the owner's lock (invariant 4).
    remove_child(inner, unsafe { &*head });
    Some(head)
}

/// Where a cancel's cause is recorded: in the cancelled core, or in an ancestor's.
enum Origin {
    Own(Option<Cause>),
    /// Own, and already stored at creation (`with_deadline_cause`'s cause).
    Preset,
    Inherited(*const Core),
}

/// Cancels `core` and every descendant with `err` and `cause` (the first cancel wins), then
/// removes `core` from its owner's list. Allocates nothing (but the after-func threads).
pub(crate) fn cancel(core: &Core, err: Error, cause: Option<Cause>) {
    cancel_from(core, err, Origin::Own(cause));
}

fn cancel_from(core: &Core, err: Error, origin: Origin) {
    if core.is_done() {
        return; // the first cancel won; no need for the lock
    }
    let mut inner = lock(&core.inner);
    if core.state.load(Relaxed) != LIVE {
        return;
    }
    core.finish(&mut inner, err, &origin);
    // Descendants point at the core that holds the cause: ours, or the one we inherit from.
    let inherited = Origin::Inherited(match origin {
        Origin::Own(_) | Origin::Preset => core as *const Core,
        Origin::Inherited(from) => from,
    });
    while let Some(child) = pop_child(&mut inner) {
        // SAFETY: popped under our lock; the child cannot be freed before its `Drop` gets our
        // lock (invariant 4), and we hold it until the end of this loop.
        let child = unsafe { &*child };
        let mut child_inner = lock(&child.inner); // ancestor before descendant (invariant 6)
        if child.state.load(Relaxed) != LIVE {
            continue; // a concurrent cancel finished it (and its subtree) first
        }
        child.finish(&mut child_inner, err, &inherited);
        // Adopt the grandchildren: we now hold both their old and their new owner's locks.
        while let Some(grandchild) = pop_child(&mut child_inner) {
            // SAFETY: valid while we hold the child's lock (invariant 4); once pushed onto our
            // list, while we hold ours.
            push_child(core, &mut inner, unsafe { &*grandchild });
        }
    }
    drop(inner);
    core.unlink();
}

/// Fires a core's own deadline (called by the timer driver).
pub(crate) fn expire(node: &NodeRef) {
    if let Some(core) = node.signal() {
        cancel_from(core, Error::DeadlineExceeded, Origin::Preset);
    }
}

impl<V: ?Sized> Drop for Node<V> {
    fn drop(&mut self) {
        if let Kind::Cancel(core) = &self.kind {
            if core.own_deadline {
                timer::disarm(core);
            }
            core.unlink(); // invariant 4: before any field is dropped
        }
        drop_parent_iteratively(std::mem::take(&mut self.parent));
    }
}

/// Drops a parent chain without recursing once per level.
///
/// Dropping the last reference to a node drops its parent, which may drop its parent in
/// turn: a million-deep chain would overflow the stack. Instead the outermost drop on a
/// thread drains a queue; nested drops hand their parent to it and return at once. A chain
/// only ever has one parent pending, kept in a slot; the overflow list is for parents found
/// while dropping a node's other fields (a value or an after-func holding a context).
fn drop_parent_iteratively(parent: Context) {
    use std::cell::{Cell, RefCell};
    thread_local! {
        static DRAINING: Cell<bool> = const { Cell::new(false) };
        static NEXT: Cell<Option<Context>> = const { Cell::new(None) };
        static OVERFLOW: RefCell<Vec<Context>> = const { RefCell::new(Vec::new()) };
    }
    if cfg!(ctx_loom) || !parent.is_sole_reference() {
        // Not the last reference (a plain decrement; should it become the last meanwhile,
        // its drop starts a queue of its own), or loom, whose threads share one OS thread.
        return;
    }
    let Ok(nested) = DRAINING.try_with(|draining| draining.replace(true)) else {
        return drop(parent); // thread teardown: fall back to plain recursion
    };
    if nested {
        // Should the queue be gone (thread teardown), the closures and `parent` drop here.
        let _ = NEXT.try_with(move |next| match next.replace(Some(parent)) {
            None => {}
            Some(earlier) => {
                let _ = OVERFLOW.try_with(move |overflow| overflow.borrow_mut().push(earlier));
            }
        });
        return;
    }
    drop(parent);
    loop {
        let next = NEXT.try_with(Cell::take).ok().flatten().or_else(|| {
            OVERFLOW
                .try_with(|overflow| overflow.borrow_mut().pop())
                .ok()
                .flatten()
        });
        match next {
            Some(ctx) => drop(ctx),
            None => break,
        }
    }
    let _ = DRAINING.try_with(|draining| draining.set(false));
}

#[cfg(test)]
pub(crate) fn child_count(core: &Core) -> usize {
    let inner = lock(&core.inner);
    let mut n = 0;
    let mut cur = inner.first_child;
    while !cur.is_null() {
        n += 1;
        // SAFETY: we hold the owner's lock (invariant 4).
        cur = unsafe { &*cur }.next.load(Relaxed);
    }
    n
}
