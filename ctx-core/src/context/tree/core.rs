//! A cancellable node's [`Core`]: its state, cause, waiters and after-funcs, and the
//! heads of its children lists (the lists themselves are `children.rs`'s).

use std::panic::Location;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::task::Waker;
use std::time::{Duration, Instant};

use std::cell::UnsafeCell;

use super::children::{Spread, free_spread};
use super::list::{Linked, Links, List};
use super::slab::Slab;
use super::tagged::{self, Either};
use super::{Panic, WeakNode, catch, timer};
use crate::context::error::{Cause, Error};
use crate::sync::{AtomicPtr, AtomicU8, AtomicU32, Mutex, MutexGuard, fence, lock};

pub(super) const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE: u8 = 2;

pub(in crate::context) type AfterFn = Box<dyn FnOnce() + Send + 'static>;

/// The state shared by a cancellable node and every value node below it.
///
/// What most contexts never need (a cause given with the cancel, waiters, after-funcs,
/// merges, a spread) lives in [`Cold`], allocated on first use.
///
/// perf (bench go_parity, CancelTree/depth=1000/Root=OpenCanceler): kept to 80 bytes, so that
/// a whole node with its reference counts is at most 120, a size glibc's allocator serves
/// from its fast bins.
pub(in crate::context) struct Core {
    state: AtomicU8,
    /// Whether this node armed a timer of its own (`WithDeadline` rather than `WithCancel`).
    own_deadline: bool,
    /// Whether this is a merged node (`Context::merge`), whose value is a `Merged`.
    merged: bool,
    /// Slot in the timer driver, or `timer::NO_SLOT` (invariant 7).
    timer_slot: AtomicU32,
    /// The effective deadline: this node's own, or the nearest ancestor's.
    deadline: Deadline,
    /// Where the scope was created: a dropped scope's or a fired deadline's cause location.
    created: &'static Location<'static>,
    /// The list this core is linked in, if any, and its links there (invariant 2): the
    /// children lists' own fields, read and written only by `children.rs`.
    pub(super) owner: AtomicPtr<()>,
    links: Links<Core>,
    /// How this core ended (an [`Ended`]; null while live). Written once, before `state`
    /// (invariant 1), so whoever sees the state done reads it without a lock.
    ended: AtomicPtr<()>,
    /// The rarely needed parts, or null until first needed. Set once, under our lock.
    cold: AtomicPtr<Cold>,
    inner: Mutex<Inner>,
}

/// What the core's lock guards inline; the [`Cold`] part is guarded by it too. Reached only
/// through [`Locked`], which binds it to its core.
pub(super) struct Inner {
    /// The core's own list of children (its spread has more).
    children: List<Core>,
}

// SAFETY: a core's links are its own field, for the one children list it is in.
unsafe impl Linked for Core {
    fn links(&self) -> &Links<Core> {
        &self.links
    }
}

/// A core's lock, held: the guard of its [`Inner`], bound to the core it belongs to. The
/// functions that need a core's lock are methods of this guard (or take it), so they cannot
/// be handed another core's: what the lock guards (the own children list, the cold part's
/// [`ColdLocked`]) is reached only through here.
pub(super) struct Locked<'a> {
    core: &'a Core,
    inner: MutexGuard<'a, Inner>,
}

impl<'a> Locked<'a> {
    /// Whether the core is live: under its lock, a plain read (invariant 1: it ends only
    /// under this lock).
    pub(super) fn is_live(&self) -> bool {
        is_live(self.core.state.load(Relaxed))
    }

    /// The core whose lock this is.
    pub(super) fn core(&self) -> &'a Core {
        self.core
    }

    /// The core's own list of children (invariant 2).
    pub(super) fn children(&mut self) -> &mut List<Core> {
        &mut self.inner.children
    }

    /// The cold part's locked state, if the cold part was made.
    pub(super) fn cold(&mut self) -> Option<&mut ColdLocked> {
        let cold = self.core.cold.load(Relaxed); // set under the lock we hold
        // SAFETY: `ColdLocked` is only reached through a `Locked` of its own core, which
        // holds that core's lock (so this `&mut self` is exclusive); it lives as long as
        // the core.
        (!cold.is_null()).then(|| unsafe { &mut *(*cold).locked.get() })
    }

    /// The cold part's locked state, made now if it was not yet.
    pub(super) fn cold_or_make(&mut self) -> &mut ColdLocked {
        self.cold_part();
        self.cold().expect("just made")
    }

    /// Marks this core done, wakes its waiters, dispatches its after-funcs, hands its merged
    /// nodes to `merges` (ended by the caller once its locks are released) and disarms its
    /// timer. Called once, live (the caller checked the state under this lock). Returns
    /// the cause it replaced, for the caller to drop after its locks (user code).
    pub(super) fn finish(
        &mut self,
        err: Error,
        origin: &Origin,
        panic: &mut Option<Panic>,
        merges: &mut Vec<WeakNode>,
    ) -> Option<Cause> {
        let (ended, replaced) = match origin {
            Origin::Own(cause, at) => {
                let replaced = match (self.cold(), cause) {
                    (Some(cold), _) => std::mem::replace(&mut cold.cause, cause.clone()),
                    (None, Some(cause)) => {
                        self.cold_or_make().cause = Some(cause.clone());
                        None
                    }
                    (None, None) => None,
                };
                (Ended::Here(at), replaced)
            }
            Origin::Preset => (Ended::Here(self.core.created), None),
            Origin::Walk(root) => (Ended::ByWalkOf(*root), None),
        };
        let core = self.core;
        debug_assert!(
            is_live(core.state.load(Relaxed)),
            "a core ends once (invariant 1)"
        );
        core.ended.store(ended.encode(), Relaxed);
        core.state.store(state_of(err), Release);
        if let Some(cold) = self.cold() {
            // Wake by reference: the wakers stay registered until their `Done` is dropped or
            // the node is, so no waker (whose drop is user code) is dropped under this lock.
            // A panicking waker is caught so the walk goes on (see the module docs).
            for waker in cold.waiters.values() {
                catch(panic, || waker.wake_by_ref());
            }
            if cold.on_end.has_slots() {
                for entry in cold.on_end.take_all() {
                    match entry {
                        OnEnd::AfterFunc(f) => super::dispatch_after_func(f),
                        OnEnd::Merge(merged) => merges.push(merged),
                    }
                }
            }
        }
        if core.own_deadline {
            timer::disarm(core);
        }
        replaced
    }

    /// The cold part itself (for the spread), made now if needed.
    pub(super) fn cold_part(&mut self) -> &'a Cold {
        let mut cold = self.core.cold.load(Relaxed);
        if cold.is_null() {
            cold = Box::into_raw(Box::new(Cold::new()));
            self.core.cold.store(cold, Release);
        }
        // SAFETY: made above or earlier, freed only with the core.
        unsafe { &*cold }
    }
}

/// The parts of a [`Core`] most contexts never need, allocated on first use and freed with
/// the core.
pub(super) struct Cold {
    /// The core's spread of children lists, once derivations from it contended, or null.
    /// Set once under the core's lock; read without it (`children.rs`).
    pub(super) spread: AtomicPtr<Spread>,
    /// Only ever touched under the core's lock (see [`Locked::cold`]).
    locked: UnsafeCell<ColdLocked>,
}

/// The part of [`Cold`] the core's lock guards.
#[derive(Default)]
pub(super) struct ColdLocked {
    /// The cause given to the cancel that ended this core, when this core was the walk root;
    /// until then, the cause to report if the own deadline fires (`with_deadline_cause`).
    pub(super) cause: Option<Cause>,
    pub(super) waiters: Slab<Waker>,
    /// What to do when this core ends, besides waking: after-funcs to dispatch, and merged
    /// contexts (`Context::merge`) whose other parent this core is, ended right after the
    /// walk that ends it (invariant 9).
    pub(super) on_end: Slab<OnEnd>,
}

/// An entry of `ColdLocked::on_end`.
pub(super) enum OnEnd {
    AfterFunc(AfterFn),
    Merge(WeakNode),
}

/// How a done core ended, encoded in `Core::ended`: the root of the walk that ended it (an
/// ancestor, invariant 3, whose lock that walk holds until it is over, invariant 6, and
/// which holds the cause: one copy per cancel), or, for the root itself, where it was ended
/// (a `Location`'s address: a tagged word, `tagged.rs`).
enum Ended {
    ByWalkOf(*const Core),
    Here(&'static Location<'static>),
}

impl Ended {
    fn encode(self) -> *mut () {
        tagged::encode::<Core, Location<'static>>(match self {
            Ended::ByWalkOf(root) => Either::Left(root),
            Ended::Here(at) => Either::Right(at),
        })
    }

    fn decode(encoded: *mut ()) -> Option<Ended> {
        tagged::decode::<Core, Location<'static>>(encoded).map(|either| match either {
            Either::Left(root) => Ended::ByWalkOf(root),
            // SAFETY: encoded only from a `&'static Location` (`encode`).
            Either::Right(at) => Ended::Here(unsafe { &*at }),
        })
    }
}

/// An `Option<Instant>` in 8 bytes: nanoseconds from a process-wide base, `i64::MIN` for
/// none. A deadline more than 292 years from the base reads back as 292 years away.
#[derive(Clone, Copy)]
pub(super) struct Deadline(i64);

impl Deadline {
    pub(super) const NONE: Deadline = Deadline(i64::MIN);

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    pub(super) fn new(at: Option<Instant>) -> Deadline {
        let Some(at) = at else {
            return Deadline::NONE;
        };
        let base = Deadline::base();
        match at.checked_duration_since(base) {
            Some(after) => Deadline(nanos(after)),
            None => Deadline(-nanos(base.duration_since(at))),
        }
    }

    /// Now, as a deadline (the timer driver's clock).
    #[inline]
    pub(super) fn now() -> Deadline {
        #[cfg(feature = "test-util")] // tokio's clock, if paused (it may be behind the base)
        if let Some(paused) = super::clock::paused_now() {
            return Deadline::new(Some(paused));
        }
        let base = Deadline::base(); // first, so it is never later than the clock read
        Deadline(nanos(Instant::now().saturating_duration_since(base)))
    }

    /// `timeout` after `self` (a time, not `NONE`). An absurd timeout (`Duration::MAX`)
    /// means "no time limit worth a timer": a century.
    #[inline]
    fn after(self, timeout: Duration) -> Deadline {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
        Deadline(self.0.saturating_add(nanos(timeout.min(CENTURY))))
    }

    pub(super) fn is_none(self) -> bool {
        self.0 == i64::MIN
    }

    /// Nanoseconds from the base (`i64::MIN` for none): what the timer heap orders by.
    pub(super) fn nanos(self) -> i64 {
        self.0
    }

    fn get(self) -> Option<Instant> {
        if self.is_none() {
            return None;
        }
        let base = Deadline::base();
        let magnitude = std::time::Duration::from_nanos(self.0.unsigned_abs());
        if self.0 >= 0 {
            base.checked_add(magnitude)
        } else {
            base.checked_sub(magnitude)
        }
    }
}

/// `d` in nanoseconds, saturating at `i64::MAX` (292 years); in 64-bit arithmetic, which
/// `Duration::as_nanos` (128-bit) is not.
#[inline]
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_secs())
        .ok()
        .and_then(|secs| secs.checked_mul(1_000_000_000))
        .and_then(|n| n.checked_add(i64::from(d.subsec_nanos())))
        .unwrap_or(i64::MAX)
}

/// A deadline a node sets itself (`with_deadline`, `with_timeout`), and the time it was
/// set at: deriving reads the clock once, and compares and arms in nanoseconds.
#[derive(Clone, Copy)]
pub(in crate::context) struct OwnDeadline {
    pub(super) at: Deadline,
    pub(super) now: Deadline,
}

impl OwnDeadline {
    /// At `at`.
    #[inline]
    pub(in crate::context) fn at(at: Instant) -> OwnDeadline {
        OwnDeadline {
            at: Deadline::new(Some(at)),
            now: Deadline::now(),
        }
    }

    /// `timeout` from now.
    #[inline]
    pub(in crate::context) fn after(timeout: Duration) -> OwnDeadline {
        let now = Deadline::now();
        OwnDeadline {
            at: now.after(timeout),
            now,
        }
    }
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
    /// A cancel node's core, whose effective deadline is `deadline` (its own, if
    /// `own_deadline`, else its parent's).
    #[inline(always)] // built in place, inside the new node (see `Link::derive`)
    pub(super) fn new(
        deadline: Deadline,
        own_deadline: bool,
        deadline_cause: Option<Cause>,
        created: &'static Location<'static>,
    ) -> Core {
        Core::build(deadline, own_deadline, false, deadline_cause, created)
    }

    /// A merged node's core (`Context::merge`).
    pub(super) fn new_merged(
        deadline: Option<Instant>,
        created: &'static Location<'static>,
    ) -> Core {
        Core::build(Deadline::new(deadline), false, true, None, created)
    }

    /// perf (bench instructions, CancelTree/depth=10/Root=OpenCanceler): one struct
    /// expression, nothing written after it, so that it is built straight into the node's
    /// memory rather than on the stack and copied.
    #[inline(always)]
    fn build(
        deadline: Deadline,
        own_deadline: bool,
        merged: bool,
        deadline_cause: Option<Cause>,
        created: &'static Location<'static>,
    ) -> Core {
        let cold = match deadline_cause {
            None => ptr::null_mut(),
            Some(cause) => Box::into_raw(Box::new(Cold::with_cause(cause))),
        };
        Core {
            state: AtomicU8::new(LIVE),
            own_deadline,
            merged,
            timer_slot: AtomicU32::new(timer::NO_SLOT),
            deadline,
            created,
            owner: AtomicPtr::new(ptr::null_mut()),
            links: Links::new(),
            ended: AtomicPtr::new(ptr::null_mut()),
            cold: AtomicPtr::new(cold),
            inner: Mutex::new(Inner {
                children: List::EMPTY,
            }),
        }
    }

    /// The effective deadline: this node's own, or the nearest ancestor's.
    #[inline]
    pub(in crate::context) fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Whether this is a merged node (`Context::merge`), whose value is a `Merged`.
    #[inline]
    pub(super) fn is_merged(&self) -> bool {
        self.merged
    }

    /// Whether this node armed a timer of its own (`WithDeadline` rather than `WithCancel`).
    #[inline]
    pub(super) fn has_own_deadline(&self) -> bool {
        self.own_deadline
    }

    /// The effective deadline, encoded: this node's own, or the nearest ancestor's.
    #[inline]
    pub(super) fn effective_deadline(&self) -> Deadline {
        self.deadline
    }

    /// Where the scope was created: a dropped scope's or a fired deadline's cause location.
    #[inline]
    pub(super) fn created(&self) -> &'static Location<'static> {
        self.created
    }

    /// The core's slot in the timer driver, or `timer::NO_SLOT` (invariant 7: stable while
    /// the caller holds the lock of the shard it names).
    #[inline]
    pub(super) fn timer_slot(&self) -> u32 {
        self.timer_slot.load(Relaxed)
    }

    /// Records the core's slot in the timer driver.
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the timer shard `slot` names (or, for `NO_SLOT`, of the
    /// shard the old slot named; for a deadline on tokio's paused clock, `clock.rs`'s table
    /// lock): invariant 7.
    #[inline]
    pub(super) unsafe fn set_timer_slot(&self, slot: u32) {
        self.timer_slot.store(slot, Relaxed);
    }

    /// The state word itself, for `explored.rs`, which moves a live core between `LIVE` and
    /// `EXPLORED` (feature `test-util`); everything else reads it through `err` / `is_done`.
    #[cfg(feature = "test-util")]
    #[inline]
    pub(super) fn state_word(&self) -> &AtomicU8 {
        &self.state
    }

    /// Takes this core's lock.
    pub(super) fn lock(&self) -> Locked<'_> {
        Locked {
            core: self,
            inner: lock(&self.inner),
        }
    }

    /// Takes this core's lock; true too if another thread held it (it was contended).
    pub(super) fn lock_contended(&self) -> (Locked<'_>, bool) {
        let (inner, contended) = match self.inner.try_lock() {
            Ok(inner) => (inner, false),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => (poisoned.into_inner(), false),
            Err(std::sync::TryLockError::WouldBlock) => (lock(&self.inner), true),
        };
        (Locked { core: self, inner }, contended)
    }

    /// The spread of children lists, if this core has one; no lock needed.
    #[inline]
    pub(super) fn spread(&self) -> Option<&Spread> {
        let cold = self.cold.load(Acquire);
        if cold.is_null() {
            return None;
        }
        // SAFETY: the cold part and its spread live as long as the core.
        let spread = unsafe { &*cold }.spread.load(Acquire);
        // SAFETY: as above.
        (!spread.is_null()).then(|| unsafe { &*spread })
    }

    /// The deadline this node set itself (`WithDeadline` rather than `WithCancel`).
    pub(in crate::context) fn own_deadline(&self) -> Option<Instant> {
        self.deadline().filter(|_| self.own_deadline)
    }

    /// The error, once done: the hot path, one atomic load (invariant 1).
    #[inline]
    pub(in crate::context) fn err(&self) -> Option<Error> {
        error_of(self.read_state())
    }

    /// The state, with `Acquire` ordering once it is done (what invariant 1 needs: the cause
    /// and the walk's work become visible), but `Relaxed` while live.
    ///
    /// perf (bench service, checkpoint_loop_1k): a relaxed load does not
    /// order the loads around it, so a loop that checks for cancellation keeps the context's
    /// other fields (its link, its kind) in registers rather than reloading them after every
    /// check.
    #[inline]
    fn read_state(&self) -> u8 {
        let state = self.state.load(Relaxed);
        if state != LIVE {
            #[cfg(feature = "test-util")] // explored and live: see `explored.rs`
            if state == super::explored::EXPLORED {
                return LIVE;
            }
            fence(Acquire);
        }
        state
    }

    #[inline]
    pub(in crate::context) fn is_done(&self) -> bool {
        self.read_state() != LIVE
    }

    pub(in crate::context) fn cause(&self) -> Option<Cause> {
        let err = self.err()?;
        // SAFETY: the walk root is this core or an ancestor, alive while we are (invariant 3).
        let root = unsafe { &*self.walk_root() };
        let stored = root.lock().cold().and_then(|cold| cold.cause.clone());
        Some(stored.unwrap_or(Cause::from(err)).at(Some(root.ended_at())))
    }

    /// The root of the walk that ended this (done) core: itself or an ancestor.
    pub(super) fn walk_root(&self) -> *const Core {
        // Ordered by the caller's Acquire of `state` (invariant 1).
        match Ended::decode(self.ended.load(Relaxed)) {
            Some(Ended::ByWalkOf(root)) => root,
            Some(Ended::Here(_)) | None => self,
        }
    }

    /// Where this core, a walk root, was ended (`Cause::location`).
    pub(super) fn ended_at(&self) -> &'static Location<'static> {
        match Ended::decode(self.ended.load(Relaxed)) {
            Some(Ended::Here(at)) => at,
            _ => self.created,
        }
    }

    /// Marks a new core done as its parent is. It is not yet shared and has no waiters,
    /// after-funcs or children; only the deadline driver may see it, if it was armed
    /// (invariant 7), so only then is the lock needed, to end it once.
    pub(super) fn born_done(&self, err: Error, root: *const Core) {
        let _locked = self.own_deadline.then(|| self.lock());
        if !is_live(self.state.load(Relaxed)) {
            return; // its deadline fired first: the driver ended it
        }
        self.ended.store(Ended::ByWalkOf(root).encode(), Relaxed);
        self.state.store(state_of(err), Release);
        if self.own_deadline {
            timer::disarm(self); // a no-op unless armed
        }
    }

    /// Registers `waker` for this core's end, or reports the error if it already came.
    /// `slot` is the caller's registration, created on first use and reused after.
    pub(in crate::context) fn register_waker(
        &self,
        slot: &mut Option<usize>,
        waker: &Waker,
    ) -> Option<Error> {
        let mut locked = self.lock();
        if let Some(err) = self.err() {
            return Some(err); // a registration stays until the waiter drops (see `finish`)
        }
        let waiters = &mut locked.cold_or_make().waiters;
        let replaced = match slot.and_then(|key| waiters.get_mut(key)) {
            Some(registered) if registered.will_wake(waker) => None,
            Some(registered) => Some(std::mem::replace(registered, waker.clone())),
            None => {
                *slot = Some(waiters.insert(waker.clone()));
                None
            }
        };
        drop(locked);
        drop(replaced); // user code may run when a waker drops: never under our lock
        None
    }

    /// Forgets a waker registration (a `Done` dropped before its context ended).
    pub(in crate::context) fn deregister_waker(&self, key: usize) {
        let removed = self.lock().cold().and_then(|cold| cold.waiters.remove(key));
        drop(removed); // outside the lock (the guard is gone): a waker's drop is user code
    }

    /// Registers `f` to run when this core is done; if it already is, returns `f` back.
    pub(in crate::context) fn register_after(&self, f: AfterFn) -> Result<usize, AfterFn> {
        let mut locked = self.lock();
        if self.is_done() {
            return Err(f);
        }
        Ok(locked.cold_or_make().on_end.insert(OnEnd::AfterFunc(f)))
    }

    /// Removes a registered after-func; true if it had not run yet (it never will now).
    pub(in crate::context) fn deregister_after(&self, key: usize) -> bool {
        let removed = {
            let mut locked = self.lock();
            if self.is_done() {
                None
            } else {
                locked.cold().and_then(|cold| cold.on_end.remove(key))
            }
        };
        // `f`'s captures (a `CancelHandle`, say) may lock this very core when they drop:
        // dropped here, after the lock.
        removed.is_some()
    }

    /// Registers a merged node to end when this core does; `Err` if it already has.
    pub(super) fn watch(&self, merged: WeakNode) -> Result<usize, WeakNode> {
        let mut locked = self.lock();
        if self.is_done() {
            return Err(merged);
        }
        Ok(locked.cold_or_make().on_end.insert(OnEnd::Merge(merged)))
    }

    /// Forgets a merged node's registration (it is being dropped).
    pub(super) fn unwatch(&self, key: usize) {
        let removed = self.lock().cold().and_then(|cold| cold.on_end.remove(key));
        drop(removed); // a `Weak`: freeing it runs no user code, but no need to hold the lock
    }
}

impl Cold {
    fn new() -> Cold {
        Cold {
            spread: AtomicPtr::new(ptr::null_mut()),
            locked: UnsafeCell::new(ColdLocked::default()),
        }
    }

    #[cold]
    fn with_cause(cause: Cause) -> Cold {
        let mut cold = Cold::new();
        cold.locked.get_mut().cause = Some(cause);
        cold
    }
}

impl Drop for Cold {
    fn drop(&mut self) {
        free_spread(&mut self.spread);
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let cold = self.cold.load(Relaxed); // `&mut self`: no one else can reach it
        if !cold.is_null() {
            // SAFETY: made by `Box::into_raw` in `new` or `cold_part`, freed only here.
            drop(unsafe { Box::from_raw(cold) });
        }
    }
}

impl Core {
    /// The cold part of a core no one else can reach (a node being freed).
    pub(super) fn cold_mut(&mut self) -> Option<&mut ColdLocked> {
        let cold = self.cold.load(Relaxed);
        // SAFETY: `&mut self`: exclusive, and the cold part lives as long as we do.
        (!cold.is_null()).then(|| unsafe { (*cold).locked.get_mut() })
    }
}

/// The state an error ends a core in.
#[inline]
fn state_of(err: Error) -> u8 {
    match err {
        Error::Cancelled => CANCELLED,
        Error::DeadlineExceeded => DEADLINE,
    }
}

/// Whether a state read without `read_state` is live (explored or not, `explored.rs`).
#[inline]
pub(super) fn is_live(state: u8) -> bool {
    #[cfg(feature = "test-util")]
    if state == super::explored::EXPLORED {
        return true;
    }
    state == LIVE
}

/// The error a state means: `None` while live.
#[inline]
pub(super) fn error_of(state: u8) -> Option<Error> {
    match state {
        LIVE => None,
        CANCELLED => Some(Error::Cancelled),
        _ => Some(Error::DeadlineExceeded),
    }
}
