//! What `#[cancellable]` costs: a 1,000,000-iteration loop with a checkpoint per iteration
//! against the same loop with no checks, and 1,000 `.await`s of a ready future raced against
//! the context against the same awaits unraced. The loop work is `black_box`ed so that the
//! baseline is not optimized away; the `#[cancellable]` side also pays its one-time
//! derivation (a `with_cancel` and an `enter`), which is noise at these sizes.
//!
//! Goals (issue 3): loop overhead ≤ 5%, per-await overhead ≤ 20 ns.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ctx_core::{Error, cancellable};

const ITERATIONS: u64 = 1_000_000;
const AWAITS: u64 = 1_000;

#[cancellable(checkpoints = "loops")]
fn loop_cancellable(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(black_box(i));
    }
    Ok(sum)
}

fn loop_plain(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(black_box(i));
    }
    Ok(sum)
}

/// A loop with a little more work per iteration (a few dependent multiply-adds, ~1-2 ns),
/// to show how the fixed per-iteration cost of the checkpoint amortizes.
#[cancellable(checkpoints = "loops")]
fn work_cancellable(n: u64) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        h = mix(h, black_box(i));
    }
    Ok(h)
}

fn work_plain(n: u64) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        h = mix(h, black_box(i));
    }
    Ok(h)
}

#[inline(always)]
fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ (h >> 7)
}

#[cancellable(checkpoints = "awaits")]
async fn awaits_raced(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(std::future::ready(black_box(i)).await);
    }
    Ok(sum)
}

async fn awaits_plain(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(std::future::ready(black_box(i)).await);
    }
    Ok(sum)
}

/// Polls a future that is ready on its first poll (every awaited future here is).
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut cx = TaskContext::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("every awaited future is ready"),
    }
}

fn loops(c: &mut Criterion) {
    let mut group = c.benchmark_group("macro_overhead/loop");
    group.throughput(Throughput::Elements(ITERATIONS));
    group.bench_function(BenchmarkId::new("plain", ITERATIONS), |b| {
        b.iter(|| loop_plain(black_box(ITERATIONS)))
    });
    group.bench_function(BenchmarkId::new("cancellable", ITERATIONS), |b| {
        b.iter(|| loop_cancellable(black_box(ITERATIONS)))
    });
    group.bench_function(BenchmarkId::new("plain_work", ITERATIONS), |b| {
        b.iter(|| work_plain(black_box(ITERATIONS)))
    });
    group.bench_function(BenchmarkId::new("cancellable_work", ITERATIONS), |b| {
        b.iter(|| work_cancellable(black_box(ITERATIONS)))
    });
    group.finish();
}

fn awaits(c: &mut Criterion) {
    let mut group = c.benchmark_group("macro_overhead/await");
    group.throughput(Throughput::Elements(AWAITS));
    group.bench_function(BenchmarkId::new("plain", AWAITS), |b| {
        b.iter(|| poll_once(awaits_plain(black_box(AWAITS))))
    });
    group.bench_function(BenchmarkId::new("raced", AWAITS), |b| {
        b.iter(|| poll_once(awaits_raced(black_box(AWAITS))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = loops, awaits
}
criterion_main!(benches);
