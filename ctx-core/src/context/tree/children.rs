//! The lists of children: a core's own list, and, once derivations from it contend, its
//! *spread*: one list per group of threads, each under a lock of its own on cache lines of
//! its own, so that threads deriving from (and dropping children of) one shared parent, a
//! server's root under concurrent requests, do not all queue on the parent's lock.
//!
//! A child is linked in at most one list, which `Core::owner` names (an [`Owner`]): null when
//! it is in none. The lists are intrusive and doubly linked (`list.rs`); a
//! child's links and `owner` are read and written only under the lock of the list that owns
//! it (invariant 2): the core's own lock for its own list, the shard's lock for a shard.
//!
//! # The spread
//!
//! A core gets its spread the first time a derivation finds its lock taken, and keeps it
//! until it is freed (a `Box` of [`SHARDS`] shards, one allocation per contended parent,
//! never one per derivation). The spread is installed under the core's own lock, after
//! checking the core is live: so the walk that ends the core, which reads the spread under
//! that lock once the core is done, always sees it (or it never comes). Later derivations
//! push into their thread's shard: under the shard's lock they check the core is still live,
//! and the walk takes every shard's lock (after marking the core done) to adopt what is
//! there; so a child pushed into a shard is either adopted by the walk or born done
//! (invariant 5 holds for the shards too).
//!
//! # Lock order
//!
//! A core's own lock before its shards' locks; a shard's lock is never held while another
//! lock is taken.

use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::core::{Core, Locked};
use super::list::List;
use super::tagged::{self, Either};
use crate::sync::{Mutex, lock};

use super::shard::SHARDS;

/// One list of a spread, alone on its cache lines.
#[repr(align(128))]
pub(super) struct Shard {
    list: Mutex<List<Core>>,
}

/// A core's shards (see the module docs).
pub(super) struct Spread {
    shards: [Shard; SHARDS],
}

impl Spread {
    fn new() -> Spread {
        Spread {
            shards: std::array::from_fn(|_| Shard {
                list: Mutex::new(List::EMPTY),
            }),
        }
    }

    /// This thread's shard.
    pub(super) fn mine(&self) -> &Shard {
        &self.shards[super::shard::mine()]
    }
}

/// The list a child is linked in, encoded in `Core::owner` (a tagged word, `tagged.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The core's own list, in its `Inner`, under its own lock.
    Core(*const Core),
    /// A shard of the core's spread, under the shard's lock.
    Shard(*const Shard),
}

impl Owner {
    fn encode(self) -> *mut () {
        tagged::encode::<Core, Shard>(match self {
            Owner::Core(core) => Either::Left(core),
            Owner::Shard(shard) => Either::Right(shard),
        })
    }

    fn decode(encoded: *mut ()) -> Option<Owner> {
        tagged::decode::<Core, Shard>(encoded).map(|either| match either {
            Either::Left(core) => Owner::Core(core),
            Either::Right(shard) => Owner::Shard(shard),
        })
    }
}

impl Core {
    /// Links a new child core under `self`, or, if `self` is done, makes the child done with
    /// the same error and cause (invariant 5). The child is not yet shared.
    pub(super) fn attach(&self, child: &Core) {
        if self.err().is_none() {
            let linked = match self.spread() {
                None => self.attach_own(child),
                Some(spread) => attach_shard(self, spread.mine(), child),
            };
            if linked {
                return;
            }
        }
        let err = self.err().expect("a core that refused a child is done");
        child.born_done(err, self.walk_root());
    }

    /// Links `child` in this core's own list; if that lock is contended, gives the core its
    /// spread for the derivations to come. False if the core is done.
    fn attach_own(&self, child: &Core) -> bool {
        let (mut locked, contended) = self.lock_contended();
        if self.is_done() {
            return false;
        }
        if contended {
            install_spread(&mut locked);
        }
        link(&mut locked, child);
        true
    }
}

/// Gives the core whose lock is `locked` its spread, if it has none yet; the caller saw it
/// live under that lock, so the walk that ends it sees the spread (module docs).
fn install_spread(locked: &mut Locked) {
    debug_assert!(!locked.core().is_done(), "a spread is installed while live");
    let cold = locked.cold_part();
    if cold.spread.load(Relaxed).is_null() {
        cold.spread
            .store(Box::into_raw(Box::new(Spread::new())), Release);
    }
}

/// Links `child` in `shard` of `parent`'s spread, unless `parent` is done (checked under the
/// shard's lock: the walk adopts a shard's children under that lock, after marking the core
/// done).
fn attach_shard(parent: &Core, shard: &Shard, child: &Core) -> bool {
    let mut list = lock(&shard.list);
    if parent.is_done() {
        return false;
    }
    list.push(child);
    child.owner.store(Owner::Shard(shard).encode(), Release);
    true
}

/// Pushes `child` onto the own list of the core whose lock is `owner` (invariant 2).
fn link(owner: &mut Locked, child: &Core) {
    owner.children().push(child);
    child
        .owner
        .store(Owner::Core(owner.core()).encode(), Release);
}

/// Removes `core` from the list it is linked in, if any (invariants 2 and 3).
#[inline]
pub(super) fn unlink(core: &Core) {
    // In no list (a root's child, born done, or unlinked already): the common drop.
    if !core.owner.load(Acquire).is_null() {
        unlink_linked(core);
    }
}

#[inline(never)]
fn unlink_linked(core: &Core) {
    loop {
        let encoded = core.owner.load(Acquire);
        // Whichever list, its lock is taken, and `owner` re-read under it: an ancestor's walk
        // may have moved us meanwhile (it holds the old and the new list's locks to do so).
        let removed = |list: &mut List<Core>| {
            let still = core.owner.load(Relaxed) == encoded;
            if still {
                // SAFETY: `owner`, re-read under this list's lock, names this list.
                unsafe { list.remove(core) };
                core.owner.store(ptr::null_mut(), Relaxed);
            }
            still
        };
        let done = match Owner::decode(encoded) {
            None => return,
            // SAFETY: by invariant 3 the owner is an ancestor (or its spread), kept alive by
            // our parent chain.
            Some(Owner::Core(owner)) => removed(unsafe { &*owner }.lock().children()),
            // SAFETY: as above.
            Some(Owner::Shard(shard)) => removed(&mut lock(&unsafe { &*shard }.list)),
        };
        if done {
            return;
        }
    }
}

/// Pops the head of the own list of the core whose lock is `locked`, for the walk, which
/// holds that lock until it is done with the child and then calls [`release`]: until then
/// the child keeps its `owner`, so a concurrent `unlink` of it waits for our lock (and the
/// child's memory stays valid, invariant 4).
pub(super) fn pop(locked: &mut Locked) -> Option<*const Core> {
    locked.children().pop()
}

/// Marks a popped child as in no list: its `unlink` returns at once from now on, and it may
/// be freed right after, so this is the walk's last access to it.
pub(super) fn release(child: &Core) {
    child.owner.store(ptr::null_mut(), Release);
}

/// Moves every child of the done core whose lock is `from` (its own list, then its spread)
/// onto `to`'s own list: both the old and the new list's locks are held for each move
/// (invariant 2).
pub(super) fn adopt(from: &mut Locked, to: &mut Locked) {
    debug_assert!(
        from.core().is_done(),
        "a core's children are adopted once it is done"
    );
    move_all(from.children(), to);
    adopt_spread(from.core(), to);
}

/// Moves the children in the spread of `from`, a done core, onto `to`'s own list (`from` may
/// be `to`'s core itself: the walk root moves its spread onto its own list).
pub(super) fn adopt_spread(from: &Core, to: &mut Locked) {
    debug_assert!(
        from.is_done(),
        "a core's children are adopted once it is done"
    );
    if let Some(spread) = from.spread() {
        for shard in &spread.shards {
            move_all(&mut lock(&shard.list), to);
        }
    }
}

fn move_all(list: &mut List<Core>, to: &mut Locked) {
    while let Some(child) = list.pop() {
        // SAFETY: valid while we hold the old list's lock (invariant 4); once pushed onto
        // `to`'s list, while we hold `to`'s. `owner` goes straight from old to new, never
        // null, so an `unlink` of the child never skips our locks.
        link(to, unsafe { &*child });
    }
}

/// Frees a core's spread, if it has one (its lists are empty: its children, which keep it
/// alive, are gone).
pub(super) fn free_spread(spread: &mut crate::sync::AtomicPtr<Spread>) {
    let spread = spread.load(Relaxed); // `&mut`: no one else can reach it
    if !spread.is_null() {
        // SAFETY: made by `Box::into_raw` in `install_spread`; `&mut`: no one else can reach it.
        drop(unsafe { Box::from_raw(spread) });
    }
}

/// Gives `core` its spread now, as a contended derivation would (tests and loom models of
/// the spread's races).
#[cfg(any(test, ctx_loom))]
pub(in crate::context) fn spread_now(core: &Core) {
    let mut locked = core.lock();
    if !core.is_done() {
        install_spread(&mut locked);
    }
}

#[cfg(test)]
pub(in crate::context) fn child_count(core: &Core) -> usize {
    let own = core.lock().children().len();
    let Some(spread) = core.spread() else {
        return own;
    };
    own + spread
        .shards
        .iter()
        .map(|s| lock(&s.list).len())
        .sum::<usize>()
}

/// Whether `core` has a spread (for tests of the contended path).
#[cfg(test)]
pub(in crate::context) fn is_spread(core: &Core) -> bool {
    core.spread().is_some()
}
