//! Memory comes back (`DESIGN.md`, "Memory"): once a burst of contexts is over, the process
//! holds at most a few MiB more than tokio-util's `CancellationToken` would, whatever the
//! number of threads. The burst is smaller than the full one (`examples/burst`, which prints
//! its figures) but large enough that a per-thread cache or a driver table kept at its peak
//! would break the bound many times over.

#[path = "../examples/burst/measure.rs"]
mod measure;

#[global_allocator]
static GLOBAL: measure::Counting = measure::Counting;

/// The bound: at most this many bytes more than tokio-util keeps after the same burst.
const BOUND: isize = 4 << 20;

#[test]
fn a_burst_of_scopes_gives_its_memory_back() {
    // 16 threads × 25,000 scopes: about 50 MiB at the peak (more than the bound ×10), and
    // 200,000 deadlines armed and disarmed.
    let (threads, scopes) = (16, 25_000);
    let theirs = measure::tokio_util_burst(threads, scopes);
    let ours = measure::ctx_burst(threads, scopes);
    println!("tokio-util: {theirs:?}; ctx: {ours:?}");
    assert!(
        ours.peak > 10 * BOUND,
        "the burst is large enough to matter: {ours:?}"
    );
    assert!(
        ours.retained <= theirs.retained + BOUND,
        "ctx keeps {:.2} MiB after the burst, tokio-util {:.2} MiB",
        measure::mib(ours.retained),
        measure::mib(theirs.retained)
    );
    // A second burst, on new threads, finds the memory the first left: the process does not
    // grow by a burst's worth each time. (One test: the counter is process-wide.)
    let again = measure::ctx_burst(threads, scopes);
    assert!(
        again.retained <= theirs.retained + BOUND,
        "a second burst: {again:?}"
    );
}
