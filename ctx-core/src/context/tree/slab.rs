//! A minimal slab: stable `usize` keys, O(1) insert and remove, freed slots reused.
//!
//! Used for the waiters and after-funcs of a cancellable node, and for the timer driver's
//! slots. Keys are handed to exactly one owner (a `Done`, `Run`, `AfterFunc` or armed core),
//! which is the only one that removes them, so a key is never reused while its owner still
//! holds it.

pub(in crate::context) struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// Head of the free list threaded through vacant entries; `entries.len()` when empty.
    next_free: usize,
    /// Occupied entries.
    len: usize,
}

/// A slab whose last entry is removed releases its buffer if it held more than this many
/// entries (a long-lived core that once had many waiters does not keep their room).
const KEEP_ENTRIES: usize = 64;

enum Entry<T> {
    Occupied(T),
    Vacant(usize),
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

impl<T> Slab<T> {
    pub(in crate::context) const fn new() -> Self {
        Slab {
            entries: Vec::new(),
            next_free: 0,
            len: 0,
        }
    }

    /// An empty slab with room for `capacity` entries.
    pub(in crate::context) fn with_capacity(capacity: usize) -> Self {
        Slab {
            entries: Vec::with_capacity(capacity),
            next_free: 0,
            len: 0,
        }
    }

    /// How many entries it has room for without growing.
    pub(in crate::context) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    pub(in crate::context) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        let key = self.next_free;
        if key == self.entries.len() {
            self.entries.push(Entry::Occupied(value));
            self.next_free = key + 1;
        } else {
            match std::mem::replace(&mut self.entries[key], Entry::Occupied(value)) {
                Entry::Vacant(next) => self.next_free = next,
                Entry::Occupied(_) => unreachable!("the free list only links vacant entries"),
            }
        }
        key
    }

    /// Whether it has any entry, occupied or vacant: a test cheaper than `take_all` on the
    /// common path, where nothing was ever inserted.
    pub(in crate::context) fn has_slots(&self) -> bool {
        !self.entries.is_empty()
    }

    pub(in crate::context) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    pub(in crate::context) fn remove(&mut self, key: usize) -> Option<T> {
        let entry = self.entries.get_mut(key)?;
        if let Entry::Vacant(_) = entry {
            return None;
        }
        match std::mem::replace(entry, Entry::Vacant(self.next_free)) {
            Entry::Occupied(value) => {
                self.next_free = key;
                self.len -= 1;
                if self.len == 0 && self.entries.capacity() > KEEP_ENTRIES {
                    // No key is held any more: the buffer can go.
                    self.entries = Vec::new();
                    self.next_free = 0;
                }
                Some(value)
            }
            Entry::Vacant(_) => unreachable!("checked above"),
        }
    }

    /// Every value in the slab.
    pub(in crate::context) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        })
    }

    /// Takes every value out, leaving the slab empty (and its buffer released).
    pub(in crate::context) fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.next_free = 0;
        self.len = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Occupied(value) => Some(value),
                Entry::Vacant(_) => None,
            })
    }

    /// How many entries are occupied.
    #[cfg(test)]
    pub(in crate::context) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn keys_are_reused_after_remove() {
        let mut slab = Slab::new();
        let a = slab.insert('a');
        let b = slab.insert('b');
        assert_eq!(slab.remove(a), Some('a'));
        assert_eq!(slab.remove(a), None, "a removed key stays removed");
        let c = slab.insert('c');
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(slab.get_mut(b), Some(&mut 'b'));
        assert_eq!(slab.len(), 2);
        let mut all: Vec<_> = slab.take_all().collect();
        all.sort();
        assert_eq!(all, ['b', 'c']);
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.remove(99), None);
    }

    #[test]
    fn an_emptied_slab_releases_a_large_buffer() {
        let mut slab = Slab::new();
        let keys: Vec<_> = (0..1000).map(|i| slab.insert(i)).collect();
        assert!(slab.capacity() >= 1000);
        for key in keys {
            slab.remove(key);
        }
        assert_eq!((slab.len(), slab.capacity()), (0, 0));
        assert_eq!(slab.insert(7), 0, "keys start again from 0");
    }
}
