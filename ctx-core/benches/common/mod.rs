//! What several benches share: the chains of `go_parity`'s `CancelTree` and `DeepValue`
//! rows (also run by `instructions`, so both measure the same work), and the allocator setting of the benches
//! that build and free large trees (`scaling`, `service`).
//!
//! Each bench includes this as `mod common;` and uses what it needs. The timeout rows live
//! here too, so that `service` (wall time) and `instructions` (callgrind) measure the same work.
#![allow(dead_code, reason = "each bench uses a part")]

use std::future::{Future, Pending};
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context as TaskContext, Waker};
use std::time::Duration;

use ctx_core::{CancelScope, Context, ContextKey};
use tokio::time::Timeout;
use tokio_util::sync::CancellationToken;

/// Go's `buildContextTree`: a chain of `depth` cancellable contexts under `root`. Go drops
/// the cancel funcs and keeps each level alive through its child; here the scopes go into
/// `chain` (reused, so no allocation of its own) to keep them alive, because dropping a
/// scope cancels it.
pub fn build_context_tree(root: &Context, depth: usize, chain: &mut Vec<CancelScope>) {
    let mut next = root.with_cancel();
    for _ in 1..depth {
        let child = next.with_cancel();
        chain.push(next);
        next = child;
    }
    chain.push(next);
}

/// Drops the chain innermost first, as locals go out of scope.
pub fn drop_tree(chain: &mut Vec<CancelScope>) {
    while let Some(scope) = chain.pop() {
        drop(scope);
    }
}

/// tokio-util's `buildContextTree`. `WithCancel(Background())` is a root token; every level
/// is kept alive in `chain`, since a token whose handles are all dropped leaves the tree
/// (its children move up), which would flatten the chain Go builds.
pub fn build_token_tree(
    root: Option<&CancellationToken>,
    depth: usize,
    chain: &mut Vec<CancellationToken>,
) {
    chain.push(root.map_or_else(CancellationToken::new, CancellationToken::child_token));
    for _ in 1..depth {
        let child = chain.last().expect("just pushed").child_token();
        chain.push(child);
    }
}

/// Drops the token chain innermost first.
pub fn drop_token_tree(chain: &mut Vec<CancellationToken>) {
    while let Some(token) = chain.pop() {
        drop(token);
    }
}

/// Tells glibc's `malloc` to keep what is freed, so a bench that builds and frees large trees
/// times its own work, not the kernel faulting back pages glibc returned (a running service
/// reuses its heap). Call it first thing in `main`, before any other thread exists. False
/// where it is not glibc.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets allocator parameters; it is called before this
        // process's other threads exist (there are none), with documented parameters.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The key type of every level of the chain (Go: distinct `int` keys `0..depth`; in Rust
/// keys are types, and one type for the whole chain is the realistic shape). Note that the
/// miss is then answered by each node's summary of the key types above it, without a walk;
/// a chain of dozens of distinct key types (Go's shape, taken literally) fills the summary
/// and the lookup walks the chain as Go's does.
pub struct Depth(#[allow(dead_code)] usize);

impl ContextKey for Depth {
    const NAME: &'static str = "Depth";
}

/// A key type nowhere in the chain (Go: `ctx.Value(-1)`): a miss over the whole chain.
pub struct Missing;

impl ContextKey for Missing {
    const NAME: &'static str = "Missing";
}

/// The chain depths of Go's `DeepValue*` benchmarks.
pub const DEEP_VALUE_DEPTHS: [usize; 5] = [10, 20, 30, 50, 100];

/// A chain of `depth` value nodes, each with its own `Depth`.
pub fn value_chain(depth: usize) -> Context {
    (0..depth).fold(Context::background(), |ctx, i| ctx.with_value(Depth(i)))
}

// ---------------------------------------------------------------------------------------
// Timeouts: `service`'s with_timeout rows, and `instructions`' `Timeouts` rows

/// The timeout of every timeout row: long enough that none fires while measured.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What a user holds to time out an operation with tokio: a `Timeout` around it. The
/// operation itself is a future that never finishes, so only the timer is measured.
pub type TokioTimeout = Timeout<Pending<()>>;

/// ctx: `n` scopes `root.with_timeout(60 s)`, all alive at once in `scopes` (reused
/// between iterations, so its buffer is allocated once and not timed), then all dropped.
/// Each `with_timeout` reads the clock, allocates its node, and arms its deadline with ctx's
/// timer driver; each drop cancels the scope, which disarms the deadline and frees the node.
/// The driver thread never fires: nothing expires within the minute.
pub fn ctx_timeouts(root: &Context, scopes: &mut Vec<CancelScope>, n: usize) {
    for _ in 0..n {
        scopes.push(root.with_timeout(TIMEOUT));
    }
    black_box(&*scopes);
    scopes.clear();
}

/// tokio, in place: `n` `tokio::time::timeout(60 s, pending())`, all alive at once in
/// `timeouts` (reused, never reallocated while any element is pinned: its capacity is
/// reserved up front), each polled once with a no-op waker, which is when tokio reads the
/// clock and inserts the entry into its timer wheel; then all dropped, which removes each
/// entry from the wheel. tokio's timer entry lives inside the `Timeout`, so this side makes
/// no allocation per timeout, where ctx allocates a node: the strictest comparison.
/// Must run inside the runtime's context (`Runtime::enter`).
pub fn tokio_timeouts(timeouts: &mut Vec<TokioTimeout>, n: usize) {
    assert!(timeouts.is_empty() && timeouts.capacity() >= n);
    let mut cx = TaskContext::from_waker(Waker::noop());
    for _ in 0..n {
        timeouts.push(tokio::time::timeout(TIMEOUT, std::future::pending()));
        let last = timeouts.last_mut().expect("just pushed");
        // SAFETY: `last` is never moved again: the vector's capacity was reserved up front,
        // so later pushes do not reallocate, and `clear` drops every element in place.
        let pinned = unsafe { Pin::new_unchecked(last) };
        assert!(pinned.poll(&mut cx).is_pending());
    }
    black_box(&*timeouts);
    timeouts.clear();
}

/// tokio, boxed: the same, each `Timeout` in its own `Box::pin` (what code that keeps many
/// timeouts alive without unsafe pinning does, e.g. in a `FuturesUnordered` or one per task):
/// one allocation per timeout, as ctx's node.
pub fn tokio_timeouts_boxed(timeouts: &mut Vec<Pin<Box<TokioTimeout>>>, n: usize) {
    let mut cx = TaskContext::from_waker(Waker::noop());
    for _ in 0..n {
        let mut timeout = Box::pin(tokio::time::timeout(TIMEOUT, std::future::pending()));
        assert!(timeout.as_mut().poll(&mut cx).is_pending());
        timeouts.push(timeout);
    }
    black_box(&*timeouts);
    timeouts.clear();
}
