//! The cancellation tree and the deadline driver: the whole algorithm, behind the thin
//! handles of `handle.rs`, `scope.rs`, `after.rs` and `wait.rs`.
//!
//! Every derived context is one [`Node`] in one heap allocation (an `Arc`; for a node with no
//! value, often one this thread kept from a cancel node it freed, see `recycle.rs`), holding its
//! parent, its kind, and, for value nodes, the value itself (the node is unsized over the
//! value so the value needs no box of its own). Only cancellable nodes (`with_cancel`,
//! `with_deadline`) carry a [`Core`]: the atomic state, the cause, the waiters, the
//! after-funcs and the list of cancellable children. Value nodes point at the `Core` of their
//! nearest cancellable ancestor; `without_cancel` nodes and the roots have none.
//!
//! Leaves first; each file imports only from those above it in this table, but for the
//! cycles that remain between `core.rs`, `children.rs` and `timer.rs` (a core holds its
//! children list and spread, and disarms its timer when it ends).
//!
//! | file | holds |
//! | --- | --- |
//! | `slab.rs` | the slab behind waiters, after-funcs and timer slots |
//! | `core.rs` | a node's [`Core`]: state (behind accessors), cause, waiters, after-funcs; its lock's guard, `Locked` |
//! | `children.rs` | the lists of children: a core's own, and its spread once contended |
//! | `timer.rs` | the deadline driver |
//! | `walk.rs` | the cancel walk, and a due deadline ended by whoever sees it |
//! | `drop.rs` | dropping nodes: unlink, after-funcs of a scope nobody can observe, no recursion |
//! | `clock.rs` | feature `test-util`: deadlines on tokio's paused clock |
//! | `explored.rs` | feature `test-util`: the `EXPLORED` state, a check's way to the explorer |
//! | `after_pool.rs` | the threads that run after-funcs (at most 64) |
//! | `recycle.rs` | emptied cancel nodes, kept for the next derivations (bounded process-wide) |
//! | `mod.rs` | nodes, links, derivation |
//! | `chain.rs` | what a chain says about itself: its values, how it prints |
//!
//! # Invariants
//!
//! 1. **One end.** `Core::state` goes from `LIVE` to `CANCELLED` or `DEADLINE` once, under
//!    the core's own lock, after how it ended (`Core::ended`: its cause's place, or the
//!    root of the walk that ended it) is stored. (`EXPLORED`, feature `test-util`, is a
//!    live core being explored, `explored.rs`: every reader but a check takes it for
//!    `LIVE`, through `core::is_live`.) Readers need no lock:
//!    one load tells done or not, and once it reads done, an `Acquire` fence after it makes
//!    the cause visible (`Core::read_state`; while live the load is `Relaxed`, so a loop
//!    that checks for cancellation does not reload the context's other fields).
//! 2. **List links.** A core's children form intrusive doubly-linked lists: its own, whose
//!    head is in its `Inner`, and, once derivations from it contended, one per shard of its
//!    spread (`children.rs`). Every link of a child (its `Links`, `list.rs`, and `owner`)
//!    is read and written only under the lock of the list named by the child's `owner` (the
//!    core's own lock, or the shard's); `owner` moves from one list to another only while
//!    both lists' locks are held, and becomes null (in no list) only as the last access by
//!    whoever unlinked it.
//! 3. **Owners are ancestors.** A child's owner is always one of its ancestors (or a shard
//!    of one, which lives as long as it), so the
//!    child's chain of `parent` references keeps its owner alive: reading `owner` and locking
//!    it is always safe. Likewise a walk root named in `Core::ended` and a value node's
//!    `core` point at ancestors,
//!    and a merged node holds its second parent (`Merged::other`), so the core it is
//!    registered with outlives the registration.
//! 4. **Unlink before free.** A node disarms its timer and unlinks itself from its owner in
//!    `Drop`, before any of its fields are dropped. Hence, while a thread holds an owner's
//!    lock, every core in that owner's list is valid memory, even if its node's reference
//!    count already reached zero; and while the driver holds a timer shard's lock, every core
//!    that shard's slots name is valid memory.
//! 5. **Done lists are empty.** A done core's lists stay empty forever: new children of a
//!    done parent are born done and are never linked. (A shard's push checks the core is
//!    live under the shard's lock, which the walk takes after marking the core done.) A
//!    done child may sit in a live list: one whose deadline fired between its arming and
//!    its attach (invariant 7). It has no children; a walk skips it, its drop unlinks it.
//! 6. **A walk holds its root.** A cancel walk holds the lock of the core it started at (its
//!    root) from marking it done until every descendant is done, and every core it ends
//!    records that root in `Core::ended`. A cancel that finds a core already done waits on
//!    that root's lock before returning, so *every* cancel returns only once the whole
//!    subtree is done, not only the one that won.
//! 7. **Timer slots.** `Core::timer_slot` is written only under its shard's lock (for a
//!    deadline on tokio's paused clock, `clock.rs`'s table lock instead); it is
//!    `NO_SLOT` exactly when the core has no live slot in a shard (a disarmed core's slot
//!    is dead at once, and names no core). A core is armed once, while live, before it is
//!    attached to its parent: then no walk can reach it, only the driver, which ends it as
//!    any walk does. Its end (by a walk, or born done) disarms it under its own lock; its
//!    drop, if still armed, disarms it first (invariant 4).
//! 8. **No lost driver wake-up.** An arm that puts an entry first in its shard bumps `epoch`
//!    and then reads `next_wake`; the driver stores `next_wake` and then reads `epoch` before
//!    it sleeps (all `SeqCst`). Either the driver sees the new epoch and rescans, or the arm
//!    sees when the driver will wake and wakes it sooner.
//! 9. **Merges end after the walk, before the cancel returns.** A merged node is a child of
//!    its first parent (in its list, like any child) and is registered, by a weak reference,
//!    in its second parent's core. A walk takes the registrations of every core it ends and,
//!    once its locks are released, walks each merged node with the root's error and cause.
//!    So no lock is ever taken across two parents' trees (no lock-order cycle, however
//!    merges nest), and the cancel of either parent returns only once the merge is done.
//!
//! # Lock order
//!
//! An ancestor's core before a descendant's core, a core before the shards of its spread,
//! then a timer shard, then the driver's sleep lock, then the after-func pool's lock. No
//! lock is ever taken in the other order, and none is taken while a spread's shard is held.
//!
//! # User code inside the tree, and its panics
//!
//! The tree calls user code in four places; none of them can leave it half-updated:
//!
//! - **A waker's `wake_by_ref`** runs under the lock of the core it waits on (as Go closes
//!   its done channel under the lock). A panic there is caught; the cancel walk finishes
//!   (every descendant done, every other waker woken, every after-func dispatched), the
//!   locks are released, and then the first panic resumes in the thread that called
//!   `cancel` (or is dropped, with the panic hook's message, on the deadline driver, which
//!   goes on firing deadlines; or if that thread is already unwinding).
//! - **A waker's or after-func's `drop`**, and the drop of a replaced cause, never run under
//!   a lock: they are moved out first. A panic there reaches whoever dropped them.
//! - **An after-func** runs on the after-func pool, never under a lock; a panic is caught
//!   there and the worker goes on.
//! - **A value's `Drop`**, when a node is freed. A panic there is caught while the rest of
//!   the chain is freed (nothing leaks, later drops on that thread still work), then resumes.
//!
//! The core never formats a [`Cause`](crate::Cause): its `Display` is user code, run only by
//! whoever prints it.

mod after_pool;
mod chain;
mod children;
#[cfg(feature = "test-util")]
pub(in crate::context) mod clock;
mod core;
mod drop;
#[cfg(feature = "test-util")]
pub(in crate::context) mod explored;
pub(in crate::context) mod list;
pub(in crate::context) mod recycle;
pub(in crate::context) mod shard;
mod slab;
mod tagged;
pub(in crate::context) mod timer;
mod walk;

use std::any::Any;
use std::panic::Location;
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use crate::context::error::{Cause, Error};

pub(in crate::context) use self::after_pool::dispatch as dispatch_after_func;
#[cfg(feature = "debug-tree")]
pub(in crate::context) use self::chain::root_name;
#[cfg(any(test, ctx_loom))]
pub(in crate::context) use self::children::spread_now;
use self::core::Deadline;
pub(in crate::context) use self::core::{AfterFn, Core, OwnDeadline};
#[cfg(test)]
pub(in crate::context) use self::{
    children::{child_count, is_spread},
    walk::merge_count,
};

/// A node whose value has been erased.
pub(in crate::context) type NodeRef = Arc<Node<dyn Any + Send + Sync>>;
/// A reference that does not keep a node alive (timer slots, merge registrations).
pub(in crate::context) type WeakNode = std::sync::Weak<Node<dyn Any + Send + Sync>>;

/// A panic payload caught inside the tree, to resume once its locks are released.
pub(in crate::context) type Panic = Box<dyn Any + Send + 'static>;

/// What a `Context` is: a root, or a derived node (16 bytes: the node pointer, or the
/// root's tag beside it).
#[derive(Clone)]
pub(in crate::context) enum Link {
    Root(Root),
    Node(NodeRef),
}

/// The two roots.
///
/// perf (bench go_parity, CheckCanceled/Done): a whole word, so a `Link` is copied as whole
/// words that were stored as whole words (a one-byte tag is stored as a byte and read back
/// inside an 8-byte load, which stalls until the store reaches the cache: a ready `Done`
/// holds the background context). Instruction counts do not show the stall; wall time does.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(in crate::context) enum Root {
    Background,
    Todo,
}

impl Default for Link {
    fn default() -> Link {
        Link::Root(Root::Background)
    }
}

pub(in crate::context) struct Node<V: ?Sized> {
    /// The context this one was derived from (keeps the whole chain alive, invariant 3).
    pub(in crate::context) parent: Link,
    /// Bloom filter of the value-key types on this node and above (see `crate::key`).
    pub(in crate::context) keys: u64,
    pub(in crate::context) kind: Kind,
    /// When and where it was made, and its registry key (feature `debug-tree`).
    #[cfg(feature = "debug-tree")]
    pub(in crate::context) debug: super::debug::Registration,
    /// The value of a value node; `()` for the other kinds.
    pub(in crate::context) value: V,
}

pub(in crate::context) enum Kind {
    /// `with_cancel`, `with_deadline`, `with_timeout`; and `merge`, which is cancellable, a
    /// child of its parent in the tree, and ended by a second context too (its core is
    /// `merged` and the node's value is a [`Merged`]).
    Cancel(Core),
    /// `with_value`: the key's type and name, and the core that decides when it is done.
    Value {
        key: std::any::TypeId,
        name: &'static str,
        core: Option<CorePtr>,
    },
    /// `without_cancel`: values pass through, cancellation does not.
    WithoutCancel,
}

/// The value of a `Merge` node: the second parent.
pub(in crate::context) struct Merged {
    /// The other context: searched for values after the parent's chain, and kept alive so
    /// that its core can hold our registration (invariant 3).
    pub(in crate::context) other: Link,
    /// Our registration in `other`'s core, or `NO_WATCH`.
    watch: crate::sync::AtomicUsize,
}

const NO_WATCH: usize = usize::MAX;

/// Dropped with its node, after the node unlinked itself: the registration in `other`'s core
/// goes too, so a long-lived `other` does not grow (`other` is still alive: we hold it).
impl Drop for Merged {
    fn drop(&mut self) {
        let key = self.watch.load(std::sync::atomic::Ordering::Relaxed);
        if key != NO_WATCH
            && let Some(core) = self.other.core()
        {
            core.unwatch(key);
        }
    }
}

impl Node<dyn Any + Send + Sync> {
    /// The second parent, for a merged node.
    pub(in crate::context) fn merged(&self) -> Option<&Merged> {
        match &self.kind {
            Kind::Cancel(core) if core.is_merged() => {
                (&self.value as &dyn Any).downcast_ref::<Merged>()
            }
            _ => None,
        }
    }
}

/// A pointer to an ancestor's [`Core`].
#[derive(Clone, Copy)]
pub(in crate::context) struct CorePtr(ptr::NonNull<Core>);

// SAFETY: a `CorePtr` is only dereferenced as `&Core` (which is `Sync`), and the node that
// holds it keeps the pointee alive through its `parent` chain (invariant 3).
unsafe impl Send for CorePtr {}
// SAFETY: as above.
unsafe impl Sync for CorePtr {}

impl<V: ?Sized> Node<V> {
    /// The core that decides when this node is done, if any.
    #[inline]
    pub(in crate::context) fn core(&self) -> Option<&Core> {
        match &self.kind {
            Kind::Cancel(core) => Some(core),
            // SAFETY: `core` points at the core of a cancellable ancestor, which our `parent`
            // chain keeps alive for as long as `self` lives (invariant 3).
            Kind::Value { core, .. } => core.map(|p| unsafe { p.0.as_ref() }),
            Kind::WithoutCancel => None,
        }
    }
}

impl Link {
    #[inline]
    pub(in crate::context) fn node(&self) -> Option<&NodeRef> {
        match self {
            Link::Node(node) => Some(node),
            _ => None,
        }
    }

    /// The core that decides when this context is done; `None` if it never will be.
    #[inline]
    pub(in crate::context) fn core(&self) -> Option<&Core> {
        match self {
            Link::Node(node) => node.core(),
            _ => None,
        }
    }

    pub(in crate::context) fn keys(&self) -> u64 {
        self.node().map_or(0, |node| node.keys)
    }

    /// Whether this is the only reference to its node (so no one else can observe it).
    #[inline]
    pub(in crate::context) fn is_sole_reference(&self) -> bool {
        matches!(self, Link::Node(node) if Arc::strong_count(node) == 1)
    }

    fn derive<V: Send + Sync + 'static>(
        &self,
        keys: u64,
        kind: impl FnOnce() -> Kind,
        value: V,
        created: &'static Location<'static>,
    ) -> Arc<Node<V>> {
        let _ = created; // kept by `debug-tree` only (cancel nodes keep theirs in the core)
        // perf (bench instructions, CancelTree/depth=10/Root=OpenCanceler): allocate first,
        // then write each field in place: `Arc::new` builds the node on the stack and copies
        // it over, `new_cyclic` ends with a locked increment that waits for every store
        // before it, and `Arc::get_mut` locks the weak count to prove what we know, that a
        // new `Arc` is unique.
        // A kept block of this thread's, if `V` is `()` (`recycle.rs`), else a new one.
        // Every field is written, one by one (a whole `Node` written at once is built on
        // the stack first and copied).
        let uninit = recycle::take::<V>().unwrap_or_else(Arc::<Node<V>>::new_uninit);
        let slot = Arc::as_ptr(&uninit).cast_mut().cast::<Node<V>>();
        // SAFETY: `uninit` was just made, or was kept empty and unique (recycling invariants
        // 1 and 2, `recycle.rs`), so there is no other `Arc` or `Weak` and no reference to its
        // value: the memory `slot` points at is ours alone (what `Arc::get_mut` would
        // check), and `Arc::as_ptr` derives it from the allocation, not from a shared
        // reference, so it may be written.
        let node = unsafe {
            (&raw mut (*slot).parent).write(self.clone());
            (&raw mut (*slot).keys).write(keys);
            (&raw mut (*slot).kind).write(kind());
            #[cfg(feature = "debug-tree")]
            (&raw mut (*slot).debug).write(super::debug::Registration::new(created));
            (&raw mut (*slot).value).write(value);
            uninit.assume_init()
        };
        #[cfg(feature = "test-util")]
        explored::inherit(self, &node.kind);
        #[cfg(feature = "debug-tree")]
        super::debug::register(&*node);
        node
    }

    /// A cancellable child with no deadline of its own (`with_cancel`): the hot derivation,
    /// one body, with no `Option` argument to pass through memory.
    ///
    /// perf (bench instructions, CancelTree/depth=10/Root=OpenCanceler): every derivation
    /// returns its node, not a [`Link`]: a fat pointer comes back in two registers, where a
    /// `Link` (an enum with a second payload) comes back through memory, and a caller that
    /// moves it on (into a `Vec`, a struct) reads it back in one load that waits for both
    /// stores. The public functions wrap the node inline, in the caller's frame.
    pub(in crate::context) fn derive_child(&self, created: &'static Location<'static>) -> NodeRef {
        let parent = self.core();
        let deadline = parent.map_or(Deadline::NONE, Core::effective_deadline);
        let core = || Kind::Cancel(Core::new(deadline, false, None, created));
        let child: NodeRef = self.derive(self.keys(), core, (), created);
        if let (Some(parent), Some(core)) = (parent, child.core()) {
            parent.attach(core);
        }
        child
    }

    /// A cancellable child: with its own deadline `own`, unless the parent's is no later
    /// (then it is a plain cancel child, as in Go); `cause` is reported if that deadline
    /// fires.
    pub(in crate::context) fn derive_cancel(
        &self,
        own: Option<OwnDeadline>,
        cause: Option<Cause>,
        created: &'static Location<'static>,
    ) -> NodeRef {
        let parent = self.core();
        let own = own.filter(|own| {
            parent.is_none_or(|p| {
                p.effective_deadline().is_none() || p.effective_deadline().nanos() >= own.at.nanos()
            })
        });
        let Some(OwnDeadline { at, now }) = own else {
            // A plain cancel child (`cause` is only ever reported for a deadline of its own).
            return self.derive_child(created);
        };
        let core = || Kind::Cancel(Core::new(at, true, cause, created));
        // Typed (`Node<()>`) until returned: the timer keeps a thin weak reference.
        let node = self.derive(self.keys(), core, (), created);
        let core = node.core().expect("a cancel node has a core");
        if at.nanos() <= now.nanos() {
            if let Some(parent) = parent {
                parent.attach(core);
            }
            let node: NodeRef = node;
            walk::expire(&node);
            node
        } else {
            // Armed before it is attached: no walk can reach it yet, so it needs no lock
            // (invariant 7). Not if the parent is already done: the child is born done with
            // the parent's error, which a deadline fired meanwhile must not pre-empt.
            if parent.is_none_or(|parent| !parent.is_done()) {
                timer::arm(core, &node);
            }
            if let Some(parent) = parent {
                parent.attach(core);
            }
            node
        }
    }

    /// A child of `self` that also ends when `other` does (with `other`'s error and cause),
    /// whose deadline is the earlier of the two and whose values are `self`'s, then
    /// `other`'s.
    pub(in crate::context) fn derive_merge(
        &self,
        other: &Link,
        created: &'static Location<'static>,
    ) -> NodeRef {
        let deadline = match (self.deadline(), other.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let merged = Merged {
            other: other.clone(),
            watch: crate::sync::AtomicUsize::new(NO_WATCH),
        };
        let kind = || Kind::Cancel(Core::new_merged(deadline, created));
        let node: NodeRef = self.derive(self.keys() | other.keys(), kind, merged, created);
        let core = node.core().expect("a merge node has a core");
        if let Some(parent) = self.core() {
            parent.attach(core);
        }
        if let Some(second) = other.core() {
            match second.watch(Arc::downgrade(&node)) {
                Ok(key) => {
                    let merged = node.merged().expect("a merge node holds a Merged");
                    merged
                        .watch
                        .store(key, std::sync::atomic::Ordering::Relaxed);
                }
                // `other` already ended: so does the merge (unless `self` did first).
                Err(_) => {
                    if let (Some(err), Some(cause)) = (second.err(), second.cause()) {
                        let at = cause.location().unwrap_or(created);
                        resume(walk::cancel(core, err, Some(cause), at));
                    }
                }
            }
        }
        node
    }

    pub(in crate::context) fn derive_value<V: Send + Sync + 'static>(
        &self,
        key: std::any::TypeId,
        name: &'static str,
        key_bits: u64,
        value: V,
        created: &'static Location<'static>,
    ) -> NodeRef {
        let core = self.core().map(|core| CorePtr(ptr::NonNull::from(core)));
        let kind = Kind::Value { key, name, core };
        self.derive(self.keys() | key_bits, || kind, value, created)
    }

    pub(in crate::context) fn derive_without_cancel(
        &self,
        created: &'static Location<'static>,
    ) -> NodeRef {
        self.derive(self.keys(), || Kind::WithoutCancel, (), created)
    }

    pub(in crate::context) fn deadline(&self) -> Option<Instant> {
        self.core().and_then(Core::deadline)
    }

    /// Cancels this context and its subtree (the first cancel wins); returns once the whole
    /// subtree is done (invariant 6). Resumes a panic of a user waker after that.
    pub(in crate::context) fn cancel(
        &self,
        err: Error,
        cause: Option<Cause>,
        at: &'static Location<'static>,
    ) {
        if let Some(core) = self.core() {
            resume(walk::cancel(core, err, cause, at));
        }
    }

    /// Where this cancellable context was created (for a scope's drop).
    pub(in crate::context) fn created(&self) -> Option<&'static Location<'static>> {
        match self.node().map(|node| &node.kind) {
            Some(Kind::Cancel(core)) => Some(core.created()),
            _ => None,
        }
    }
}

/// Resumes a panic caught inside the tree, now that its locks are released; unless this
/// thread is already unwinding (a cancel from a `Drop` during a panic), where a second panic
/// would abort: then the panic hook's message is all that is left of it.
pub(in crate::context) fn resume(panic: Option<Panic>) {
    if let Some(payload) = panic
        && !std::thread::panicking()
    {
        std::panic::resume_unwind(payload);
    }
}

/// Drops a panic caught inside the tree that no caller is to resume (on the deadline
/// driver, an after-func worker, or a waiter that fired a deadline for the driver): the
/// panic hook has reported it. A payload whose own `Drop` panics is leaked, so nothing
/// unwinds from here.
pub(in crate::context) fn discard(panic: Option<Panic>) {
    if let Some(payload) = panic
        && let Err(again) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(payload);
        }))
    {
        std::mem::forget(again);
    }
}

/// Runs user code that must not unwind through the tree: a panic is kept (the first one
/// only) for [`resume`] once the caller's locks are released.
pub(in crate::context) fn catch(first: &mut Option<Panic>, f: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        first.get_or_insert(payload);
    }
}
