//! The memory burst of `DESIGN.md` ("Memory"): threads each hold many cancel scopes (half
//! with a deadline), drop them all and stay alive; what the process still holds afterwards
//! is measured by a counting global allocator (so the allocator's own caches do not count),
//! for ctx and for tokio-util's `CancellationToken` doing the same.
//!
//! Shared by the `burst` example (the full burst: 64 threads × 50,000 scopes) and
//! `tests/memory.rs` (a smaller one that still proves the bound).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A global allocator that counts the bytes allocated and not yet freed, process-wide.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes allocated and not freed, process-wide.
pub fn live() -> isize {
    LIVE.load(Relaxed)
}

/// What one burst left behind.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Bytes held while every scope was alive, over the baseline.
    pub peak: isize,
    /// Bytes still held once every scope was dropped (the threads still alive), over the
    /// baseline.
    pub retained: isize,
}

/// Runs the burst: `threads` threads each make `scopes` scopes with `make(i)`, hold them all,
/// drop them all, and stay alive while the bytes still held are measured.
pub fn burst<T, F>(threads: usize, scopes: usize, make: F) -> Burst
where
    F: Fn(usize) -> T + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let held = Arc::new(Barrier::new(threads + 1));
    let counted = Arc::new(Barrier::new(threads + 1));
    let dropped = Arc::new(Barrier::new(threads + 1));
    let exit = Arc::new(Barrier::new(threads + 1));
    let base = live();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (make, held, counted, dropped, exit) = (
                make.clone(),
                held.clone(),
                counted.clone(),
                dropped.clone(),
                exit.clone(),
            );
            std::thread::spawn(move || {
                let all: Vec<T> = (0..scopes).map(|i| make(i)).collect();
                held.wait();
                counted.wait(); // the peak is counted before any thread drops
                drop(all);
                dropped.wait();
                exit.wait(); // alive until the bytes are counted
            })
        })
        .collect();
    held.wait();
    let peak = live() - base;
    counted.wait();
    dropped.wait();
    // A deadline driver or after-func worker may still be releasing what it held: let it.
    std::thread::sleep(Duration::from_millis(200));
    let retained = live() - base;
    exit.wait();
    for worker in workers {
        worker.join().expect("a burst thread panicked");
    }
    Burst { peak, retained }
}

/// The burst with ctx: every other scope has a deadline (an hour away, so none fires).
pub fn ctx_burst(threads: usize, scopes: usize) -> Burst {
    let root = ctx_core::Context::background();
    // Warm up what a process keeps whatever the burst (the deadline driver, its thread).
    drop(root.with_timeout(Duration::from_secs(3600)));
    burst(threads, scopes, move |i| {
        if i % 2 == 0 {
            root.with_timeout(Duration::from_secs(3600))
        } else {
            root.with_cancel()
        }
    })
}

/// The same burst with tokio-util's `CancellationToken` (child tokens of one parent; the
/// deadline half as tokens too, with no timer: tokio-util has none without a runtime).
pub fn tokio_util_burst(threads: usize, scopes: usize) -> Burst {
    let root = tokio_util::sync::CancellationToken::new();
    burst(threads, scopes, move |_| root.child_token())
}

/// `bytes` in MiB, for reports.
pub fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
