//! The synchronization primitives the crate is built from, swapped for loom's under
//! `cfg(ctx_loom)` so the concurrency models in `tests/loom.rs` explore every interleaving,
//! and the crate's one poison-tolerant [`lock`].
//!
//! `Arc`/`Weak` stay std's in both builds: their reference counting is not what the models
//! check (and loom's `Arc` cannot be unsized), the locks and atomics around them are.

#[cfg(ctx_loom)]
pub(crate) use loom::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence},
};
#[cfg(ctx_loom)]
pub(crate) use loom::{thread, thread_local};

#[cfg(not(ctx_loom))]
pub(crate) use std::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence},
};
#[cfg(not(ctx_loom))]
pub(crate) use std::{thread, thread_local};

/// Locks `mutex`, ignoring poison: every critical section in this crate leaves the data
/// consistent before it runs anything that could panic (a user's waker).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
