//! Dropping nodes: unlink first (invariant 4), run the after-funcs of a scope that ended
//! unobserved, and free chains of any depth without recursion, whatever user `Drop`s do.

use std::cell::{Cell, RefCell};

use super::core::OnEnd;
use super::{Kind, Link, Node, Panic, catch, children, resume, timer};

impl<V: ?Sized> Drop for Node<V> {
    #[inline]
    fn drop(&mut self) {
        if let Kind::Cancel(core) = &mut self.kind {
            if core.has_own_deadline() {
                timer::disarm(core);
            }
            children::unlink(core); // invariant 4: before any field is dropped
            // A live cancel node is freed only when its `CancelHandle` found itself the sole
            // reference and skipped the cancel (nothing could observe it). Its after-funcs
            // still count as observers: Go runs them once the context is done, and it is
            // done now. `&mut self`: no lock needed, no one else can reach this core.
            let live = !core.is_done();
            if let Some(cold) = core.cold_mut()
                && live
                && cold.on_end.has_slots()
            {
                for entry in cold.on_end.take_all() {
                    if let OnEnd::AfterFunc(f) = entry {
                        super::dispatch_after_func(f);
                    }
                }
            }
        }
        #[cfg(feature = "debug-tree")]
        super::super::debug::unregister(self);
        drop_parent_iteratively(std::mem::take(&mut self.parent));
    }
}

thread_local! {
    /// Whether this thread is draining parents (the outermost node drop is).
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    /// The parent handed over by a nested drop; a chain only ever has one pending.
    static NEXT: Cell<Option<Link>> = const { Cell::new(None) };
    /// Parents found while dropping a node's other fields (a value holding a context).
    static OVERFLOW: RefCell<Vec<Link>> = const { RefCell::new(Vec::new()) };
}

/// Drops a parent chain without recursing once per level.
///
/// Dropping the last reference to a node drops its parent, which may drop its parent in
/// turn: a million-deep chain would overflow the stack. Instead the outermost drop on a
/// thread drains a queue; nested drops hand their parent to it and return at once.
///
/// A value's `Drop` may panic: each drop in the queue is caught, the queue is drained to the
/// end (nothing leaks), the thread's draining flag is reset, and then the first panic
/// resumes, so later drops on this thread work as before.
#[inline]
fn drop_parent_iteratively(parent: Link) {
    if cfg!(ctx_loom) || !parent.is_sole_reference() {
        // Not the last reference (a plain decrement; should it become the last meanwhile,
        // its drop starts a queue of its own), or loom, whose threads share one OS thread.
        return;
    }
    drain(parent);
}

/// The last reference to `parent`: free it, and the chain it ends, on this thread's queue.
#[cold]
#[inline(never)]
fn drain(parent: Link) {
    let Ok(nested) = DRAINING.try_with(|draining| draining.replace(true)) else {
        return drop(parent); // thread teardown: fall back to plain recursion
    };
    if nested {
        // Should the queue be gone (thread teardown), `parent` drops here.
        let _ = NEXT.try_with(move |next| {
            if let Some(earlier) = next.replace(Some(parent)) {
                let _ = OVERFLOW.try_with(move |overflow| overflow.borrow_mut().push(earlier));
            }
        });
        return;
    }
    let mut panic: Option<Panic> = None;
    let mut next = Some(parent);
    while let Some(link) = next {
        catch(&mut panic, move || drop(link));
        next = NEXT.try_with(Cell::take).ok().flatten().or_else(|| {
            OVERFLOW
                .try_with(|overflow| overflow.borrow_mut().pop())
                .ok()
                .flatten()
        });
    }
    let _ = DRAINING.try_with(|draining| draining.set(false));
    resume(panic);
}
