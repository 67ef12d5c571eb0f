//! Which shard this thread uses, for every structure split per group of threads so that
//! threads working in parallel do not queue on one lock: the deadline driver's heaps, a
//! contended parent's spread of children lists, and the debug registry.
//!
//! Threads are dealt out in turn, once each, by one process-wide counter. Under loom the
//! thread-local and the counter are loom's (reset for each execution), so a model deals the
//! same shards every time and stays deterministic.

use std::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;

/// How many shards each sharded structure has: a power of two, so that a shard index fits
/// in the low bits of an encoded key (`timer.rs`). Two under loom, to keep models small
/// while still crossing shards.
pub(in crate::context) const SHARDS: usize = if cfg!(ctx_loom) { 2 } else { 8 };
const _: () = assert!(SHARDS.is_power_of_two());

/// This thread's shard, in `0..SHARDS`; shard 0 on a thread whose thread-locals are gone.
pub(in crate::context) fn mine() -> usize {
    crate::sync::thread_local! {
        #[allow(clippy::missing_const_for_thread_local, reason = "loom's thread_local! has no const form")]
        static MINE: Cell<usize> = Cell::new(usize::MAX);
    }
    // Deals threads out in turn; orders nothing.
    #[cfg(not(ctx_loom))]
    static DEALT: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);
    #[cfg(ctx_loom)]
    loom::lazy_static! {
        static ref DEALT: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);
    }
    MINE.try_with(|mine| {
        if mine.get() == usize::MAX {
            mine.set(DEALT.fetch_add(1, Relaxed) % SHARDS);
        }
        mine.get()
    })
    .unwrap_or(0)
}
