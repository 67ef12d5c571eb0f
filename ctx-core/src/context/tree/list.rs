//! The one intrusive doubly-linked list of the crate: a core's children lists and its
//! spread's shards (`children.rs`), and the debug registry's shards (`debug.rs`). An item
//! carries its own [`Links`], so linking allocates nothing.
//!
//! A list and the links of its items are read and written only under the lock that guards
//! the list (the list is reached only through that lock's guard); an item is in at most one
//! list at a time, and stays valid memory while it is in one (it unlinks itself before it is
//! freed: invariant 4 of the tree). The links are atomics only so that an item can be `Sync`
//! without a cell; every access is `Relaxed`, ordered by the lock.

use std::ptr;
use std::sync::atomic::Ordering::Relaxed;

use crate::sync::AtomicPtr;

/// An item's links in the list it is in (both null when it is in none, or is the only item).
pub(in crate::context) struct Links<T> {
    prev: AtomicPtr<T>,
    next: AtomicPtr<T>,
}

impl<T> Links<T> {
    #[inline(always)]
    pub(in crate::context) fn new() -> Links<T> {
        Links {
            prev: AtomicPtr::new(ptr::null_mut()),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

/// An item of an intrusive list.
///
/// # Safety
///
/// `links` returns the same `Links` for the whole life of the item, used by no other list.
pub(in crate::context) unsafe trait Linked: Sized {
    fn links(&self) -> &Links<Self>;
}

/// The head of an intrusive list.
pub(in crate::context) struct List<T>(*const T);

// SAFETY: the list's items are only dereferenced under the lock that guards the list; the
// pointer itself is plain data.
unsafe impl<T> Send for List<T> {}

impl<T: Linked> List<T> {
    pub(in crate::context) const EMPTY: List<T> = List(ptr::null());

    /// Pushes `item`, in no list, at the head.
    pub(in crate::context) fn push(&mut self, item: &T) {
        let links = item.links();
        debug_assert!(
            links.prev.load(Relaxed).is_null() && links.next.load(Relaxed).is_null(),
            "an item is in one list at a time"
        );
        let head = self.0;
        links.next.store(head.cast_mut(), Relaxed);
        if !head.is_null() {
            // SAFETY: `head` is in this list, whose lock the caller holds: valid memory.
            unsafe { &*head }
                .links()
                .prev
                .store(ptr::from_ref(item).cast_mut(), Relaxed);
        }
        self.0 = item;
    }

    /// Unlinks `item`.
    ///
    /// # Safety
    ///
    /// `item` is in this list, so its neighbours are too and are valid memory while the
    /// caller holds the list's lock.
    pub(in crate::context) unsafe fn remove(&mut self, item: &T) {
        let links = item.links();
        let prev = links.prev.load(Relaxed);
        let next = links.next.load(Relaxed);
        if prev.is_null() {
            debug_assert!(ptr::eq(self.0, item), "the item is in this list");
            self.0 = next;
        } else {
            // SAFETY: the caller's promise.
            let prev = unsafe { &*prev }.links();
            debug_assert!(
                ptr::eq(prev.next.load(Relaxed), item),
                "the item is in this list"
            );
            prev.next.store(next, Relaxed);
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { &*next }.links().prev.store(prev, Relaxed);
        }
        links.prev.store(ptr::null_mut(), Relaxed);
        links.next.store(ptr::null_mut(), Relaxed);
    }

    /// Unlinks the head and returns it.
    pub(in crate::context) fn pop(&mut self) -> Option<*const T> {
        let head = self.0;
        if head.is_null() {
            return None;
        }
        // SAFETY: `head` is in this list, whose lock the caller holds.
        unsafe { self.remove(&*head) };
        Some(head)
    }

    /// The items, head first, for a reader that holds the list's lock.
    #[cfg(any(test, feature = "debug-tree"))]
    pub(in crate::context) fn iter(&self) -> impl Iterator<Item = &T> {
        let mut cursor = self.0;
        std::iter::from_fn(move || {
            // SAFETY: in this list, whose lock the caller holds for as long as it borrows
            // the list: valid memory.
            let item = unsafe { cursor.as_ref() }?;
            cursor = item.links().next.load(Relaxed);
            Some(item)
        })
    }

    #[cfg(test)]
    pub(in crate::context) fn len(&self) -> usize {
        self.iter().count()
    }
}
