//! The live context tree, for looking at a running process (feature `debug-tree`).
//!
//! With the feature on, every derived context registers itself (a weak reference, in one of
//! a few sharded registries, so derivations on different threads rarely meet on a lock) and
//! unregisters when it is freed; [`snapshot`] renders the registered ones as an indented
//! tree. With the feature off none of this exists: no field, no registration, no cost.
//!
//! A snapshot shows, per context: its kind (`WithCancel`, `WithDeadline`, `WithValue(Key)`,
//! `WithoutCancel`, `Merge`), its age, its deadline's remaining time, whether it is done
//! (and why), the *names* of the value keys it sets (never the values: they may be secrets),
//! and where it was created.
//!
//! ```
//! use std::time::Duration;
//! use ctx_core::{Context, debug};
//!
//! let request = Context::background().with_timeout(Duration::from_secs(30));
//! let step = request.with_cancel();
//! let shown = debug::snapshot().to_string();
//! assert!(shown.contains("WithDeadline"), "{shown}");
//! assert!(shown.contains("WithCancel"), "{shown}");
//! # drop(step);
//! ```

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::tree::list::{Linked, Links, List};
use super::tree::{Link, Node, NodeRef, root_name};
use crate::sync::lock;

type ErasedNode = Node<dyn std::any::Any + Send + Sync>;

use super::tree::shard::SHARDS;

/// Each shard is an intrusive list of live nodes threaded through their `Registration`s, so
/// registering allocates nothing. Links are read and written only under the shard's lock,
/// and a node unlinks itself in `Drop` before any of its fields are dropped, so every node
/// in a list is valid memory while its shard is locked (as invariant 4 of the tree).
static REGISTRY: [Mutex<List<Registration>>; SHARDS] = [const { Mutex::new(List::EMPTY) }; SHARDS];

/// What a node keeps for the registry: when and where it was made, and its list links.
pub(in crate::context) struct Registration {
    born: Instant,
    created: &'static Location<'static>,
    shard: AtomicUsize,
    links: Links<Registration>,
    /// The node this registration is part of: set when it registers, before the node is
    /// shared, and read only under its shard's lock.
    node: UnsafeCell<Option<NonNull<ErasedNode>>>,
}

// SAFETY: `node` is written once before the node is shared and read only under the lock of
// the node's shard; it points at a `Sync` node.
unsafe impl Sync for Registration {}
// SAFETY: as above.
unsafe impl Send for Registration {}

// SAFETY: a registration's links are its own field, for its one shard's list.
unsafe impl Linked for Registration {
    fn links(&self) -> &Links<Registration> {
        &self.links
    }
}

impl Registration {
    pub(in crate::context) fn new(created: &'static Location<'static>) -> Registration {
        Registration {
            born: Instant::now(),
            created,
            shard: AtomicUsize::new(usize::MAX),
            links: Links::new(),
            node: UnsafeCell::new(None),
        }
    }
}

/// Registers a new node (called once, right after it is allocated, before it is shared).
pub(in crate::context) fn register(node: &Node<dyn std::any::Any + Send + Sync>) {
    let shard = super::tree::shard::mine();
    // SAFETY: the node is not shared yet: nothing else reads `node`.
    unsafe { *node.debug.node.get() = Some(NonNull::from(node)) };
    lock(&REGISTRY[shard]).push(&node.debug);
    node.debug.shard.store(shard, Relaxed);
}

/// Unregisters a node being freed (first thing in its `Drop`).
pub(in crate::context) fn unregister<V: ?Sized>(node: &Node<V>) {
    let shard = node.debug.shard.load(Relaxed);
    if shard == usize::MAX {
        return;
    }
    // SAFETY: registered in this shard's list, whose lock we take.
    unsafe { lock(&REGISTRY[shard]).remove(&node.debug) };
}

/// Every live context, as a tree; see the [module docs](self). `Display` renders it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    taken: Instant,
    roots: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    kind: String,
    age: Duration,
    deadline: Option<Instant>,
    state: Option<crate::Error>,
    created: &'static Location<'static>,
    children: Vec<Entry>,
}

/// Every context alive now, as an indented tree under its root (`context.Background` or
/// `context.TODO`). Takes each registry shard's lock in turn: meant for a debug endpoint,
/// not a hot path.
pub fn snapshot() -> Snapshot {
    let taken = Instant::now();
    // (node, parent) identities and what to show, read under each shard's lock.
    let mut seen: Vec<(usize, Option<usize>, Entry)> = Vec::new();
    for shard in &REGISTRY {
        let list = lock(shard);
        for registration in list.iter() {
            // SAFETY: in the list, under its lock: valid memory (see `REGISTRY`), and `node`
            // was set when it registered.
            let node = unsafe {
                (*registration.node.get())
                    .expect("set on registering")
                    .as_ref()
            };
            let parent = match &node.parent {
                Link::Node(parent) => Some(NodeRef::as_ptr(parent) as *const () as usize),
                _ => None,
            };
            seen.push((
                node as *const ErasedNode as *const () as usize,
                parent,
                entry_of(node, taken),
            ));
        }
    }
    seen.sort_by_key(|(_, _, entry)| std::cmp::Reverse(entry.age)); // oldest first
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, (_, parent, _)) in seen.iter().enumerate() {
        children.entry(*parent).or_default().push(i);
    }
    let ids: Vec<usize> = seen.iter().map(|(id, _, _)| *id).collect();
    let parents: Vec<Option<usize>> = seen.iter().map(|(_, parent, _)| *parent).collect();
    let live: std::collections::HashSet<usize> = ids.iter().copied().collect();
    let mut entries: Vec<Option<Entry>> = seen.into_iter().map(|(_, _, e)| Some(e)).collect();
    fn build(
        i: usize,
        ids: &[usize],
        entries: &mut [Option<Entry>],
        children: &HashMap<Option<usize>, Vec<usize>>,
    ) -> Entry {
        let mut entry = entries[i].take().expect("each node is built once");
        if let Some(kids) = children.get(&Some(ids[i])) {
            entry.children = kids
                .iter()
                .map(|&k| build(k, ids, entries, children))
                .collect();
        }
        entry
    }
    // A non-root node's parent is alive (it holds it), so it is in `seen`, unless it
    // registered after its shard was read: then it is shown as a root of its own.
    let roots: Vec<usize> = (0..ids.len())
        .filter(|&i| parents[i].is_none_or(|p| !live.contains(&p)))
        .collect();
    let roots = roots
        .into_iter()
        .map(|i| build(i, &ids, &mut entries, &children))
        .collect();
    Snapshot { taken, roots }
}

fn entry_of(node: &ErasedNode, taken: Instant) -> Entry {
    Entry {
        kind: kind_of(node),
        age: taken.saturating_duration_since(node.debug.born),
        deadline: node.core().and_then(|core| core.own_deadline()),
        state: node.core().and_then(|core| core.err()),
        created: node.debug.created,
        children: Vec::new(),
    }
}

fn kind_of(node: &ErasedNode) -> String {
    let root = match &node.parent {
        Link::Root(root) => format!("{}.", root_name(*root)),
        Link::Node(_) => String::new(),
    };
    format!("{root}{}", node.step().name())
}

impl Snapshot {
    /// How many live contexts it shows.
    pub fn len(&self) -> usize {
        fn count(entries: &[Entry]) -> usize {
            entries.iter().map(|e| 1 + count(&e.children)).sum()
        }
        count(&self.roots)
    }

    /// Whether no derived context was alive.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// One line per context, children indented under their parent:
///
/// ```text
/// context.Background.WithDeadline  age 1.2s  deadline in 28.8s  at src/main.rs:10:19
///   WithValue(RequestId)  age 1.2s  at src/main.rs:11:22
///     WithCancel  age 3ms  cancelled  at src/handler.rs:40:9
/// ```
impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn line(
            f: &mut fmt::Formatter<'_>,
            e: &Entry,
            depth: usize,
            taken: Instant,
        ) -> fmt::Result {
            write!(
                f,
                "{:indent$}{}  age {:?}",
                "",
                e.kind,
                e.age,
                indent = depth * 2
            )?;
            if let Some(at) = e.deadline {
                match at.checked_duration_since(taken) {
                    Some(left) => write!(f, "  deadline in {left:?}")?,
                    None => write!(f, "  deadline passed")?,
                }
            }
            match e.state {
                Some(crate::Error::Cancelled) => f.write_str("  cancelled")?,
                Some(crate::Error::DeadlineExceeded) => f.write_str("  deadline exceeded")?,
                _ => {}
            }
            writeln!(f, "  at {}", e.created)?;
            for child in &e.children {
                line(f, child, depth + 1, taken)?;
            }
            Ok(())
        }
        for root in &self.roots {
            line(f, root, 0, self.taken)?;
        }
        Ok(())
    }
}
