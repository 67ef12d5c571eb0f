//! What `#[cancellable]` costs, against hand-written code.
//!
//! - **Loops**: a 100,000-iteration loop whose body takes about 50 ns (a chain of dependent
//!   multiply-rotate rounds that the optimizer cannot shorten), three ways: plain (no check
//!   at all), hand-written (`ctx.checkpoint()?` at the top of each iteration, the context
//!   fetched once), and `#[cancellable(checkpoints = "loops")]`. The same with a 1 ns body
//!   shows the checkpoint's fixed cost.
//! - **Awaits**: 1,000 `.await`s of a ready future, three ways: plain, hand-written
//!   (`ctx.run(f).await?`), and `#[cancellable(checkpoints = "awaits")]`.
//!
//! The `#[cancellable]` side also pays its one-time derivation (a `with_cancel` and an
//! `enter` or `scope`), which is noise at these sizes.
//!
//! Goals (issue 11): ≤ 5% overhead per loop iteration of a 50 ns body, ≤ 20 ns per `.await`.
//! After criterion's report, the bench states the overheads it measured against both
//! baselines (median of interleaved samples) and whether the goals hold. For the statement
//! alone (a filter that matches no benchmark): `cargo bench -p ctx-core --bench
//! macro_overhead -- statement`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ctx_core::{Context, Error, cancellable};

const ITERATIONS: u64 = 100_000;
const AWAITS: u64 = 1_000;
/// Dependent rounds of `mix` in the 50 ns body (about 1.5 ns each).
const ROUNDS: u32 = 32;

#[inline(always)]
fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ (h >> 7)
}

/// About 50 ns of work that depends on its input.
#[inline(always)]
fn body(h: u64, i: u64) -> u64 {
    let mut h = mix(h, black_box(i));
    for round in 0..ROUNDS {
        h = mix(h, u64::from(round));
    }
    h
}

// ---------------------------------------------------------------------------------------
// Loops with a 50 ns body.

fn loop_plain(n: u64) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        h = body(h, i);
    }
    Ok(h)
}

fn loop_hand_written(ctx: &Context, n: u64) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        ctx.checkpoint()?;
        h = body(h, i);
    }
    Ok(h)
}

#[cancellable(checkpoints = "loops")]
fn loop_cancellable(n: u64) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        h = body(h, i);
    }
    Ok(h)
}

// ---------------------------------------------------------------------------------------
// Loops with a 1 ns body: the checkpoint's fixed cost.

fn tight_plain(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(black_box(i));
    }
    Ok(sum)
}

fn tight_hand_written(ctx: &Context, n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        ctx.checkpoint()?;
        sum = sum.wrapping_add(black_box(i));
    }
    Ok(sum)
}

#[cancellable(checkpoints = "loops")]
fn tight_cancellable(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(black_box(i));
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------------------
// Awaits.

async fn awaits_plain(n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(std::future::ready(black_box(i)).await);
    }
    Ok(sum)
}

async fn awaits_hand_written(ctx: &Context, n: u64) -> Result<u64, Error> {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(ctx.run(std::future::ready(black_box(i))).await?);
    }
    Ok(sum)
}

#[cancellable(checkpoints = "awaits")]
async fn awaits_cancellable(n: u64) -> Result<u64, Error> {
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

// ---------------------------------------------------------------------------------------
// criterion

fn loops(c: &mut Criterion) {
    let scope = Context::background().with_cancel();
    let ctx = scope.context();
    let mut group = c.benchmark_group("macro_overhead/loop_50ns");
    group.throughput(Throughput::Elements(ITERATIONS));
    let n = ITERATIONS;
    group.bench_function(BenchmarkId::new("plain", n), |b| {
        b.iter(|| loop_plain(black_box(n)))
    });
    group.bench_function(BenchmarkId::new("hand_written", n), |b| {
        b.iter(|| loop_hand_written(ctx, black_box(n)))
    });
    group.bench_function(BenchmarkId::new("cancellable", n), |b| {
        b.iter(|| loop_cancellable(black_box(n)))
    });
    group.finish();

    let mut group = c.benchmark_group("macro_overhead/loop_1ns");
    let n = ITERATIONS * 10;
    group.throughput(Throughput::Elements(n));
    group.bench_function(BenchmarkId::new("plain", n), |b| {
        b.iter(|| tight_plain(black_box(n)))
    });
    group.bench_function(BenchmarkId::new("hand_written", n), |b| {
        b.iter(|| tight_hand_written(ctx, black_box(n)))
    });
    group.bench_function(BenchmarkId::new("cancellable", n), |b| {
        b.iter(|| tight_cancellable(black_box(n)))
    });
    group.finish();
}

fn awaits(c: &mut Criterion) {
    let scope = Context::background().with_cancel();
    let ctx = scope.context();
    let mut group = c.benchmark_group("macro_overhead/await");
    group.throughput(Throughput::Elements(AWAITS));
    group.bench_function(BenchmarkId::new("plain", AWAITS), |b| {
        b.iter(|| poll_once(awaits_plain(black_box(AWAITS))))
    });
    group.bench_function(BenchmarkId::new("hand_written", AWAITS), |b| {
        b.iter(|| poll_once(awaits_hand_written(ctx, black_box(AWAITS))))
    });
    group.bench_function(BenchmarkId::new("cancellable", AWAITS), |b| {
        b.iter(|| poll_once(awaits_cancellable(black_box(AWAITS))))
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

// ---------------------------------------------------------------------------------------
// The statement of overheads.

/// Nanoseconds per unit of the median of `SAMPLES` runs of each of `runs`, interleaved (so a
/// slow stretch of a noisy machine hits all of them alike).
fn medians<const N: usize>(units: u64, runs: [&dyn Fn(); N]) -> [f64; N] {
    const SAMPLES: usize = 31;
    let mut samples = [[0f64; SAMPLES]; N];
    for round in 0..=SAMPLES {
        for (which, run) in runs.iter().enumerate() {
            let started = Instant::now();
            run();
            let took = started.elapsed().as_nanos() as f64 / units as f64;
            if round > 0 {
                samples[which][round - 1] = took; // round 0 warms up
            }
        }
    }
    samples.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[SAMPLES / 2]
    })
}

fn summary() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context();
    let n = ITERATIONS;
    let [plain, hand, macro_] = medians(
        n,
        [
            &|| {
                let _ = black_box(loop_plain(black_box(n)));
            },
            &|| {
                let _ = black_box(loop_hand_written(ctx, black_box(n)));
            },
            &|| {
                let _ = black_box(loop_cancellable(black_box(n)));
            },
        ],
    );
    let pct = |x: f64, base: f64| (x - base) / base * 100.0;
    println!("\nmacro_overhead: the statement (median of 31 interleaved samples)");
    println!(
        "  loop with a {plain:.0} ns body: plain {plain:.2} ns/iter, hand-written checkpoint {hand:.2} \
         ({:+.2}%), #[cancellable] {macro_:.2} ({:+.2}% vs plain, {:+.2}% vs hand-written); \
         goal <= 5%: {}",
        pct(hand, plain),
        pct(macro_, plain),
        pct(macro_, hand),
        if pct(macro_, plain) <= 5.0 {
            "met"
        } else {
            "NOT met"
        },
    );
    let n = ITERATIONS * 10;
    let [plain, hand, macro_] = medians(
        n,
        [
            &|| {
                let _ = black_box(tight_plain(black_box(n)));
            },
            &|| {
                let _ = black_box(tight_hand_written(ctx, black_box(n)));
            },
            &|| {
                let _ = black_box(tight_cancellable(black_box(n)));
            },
        ],
    );
    println!(
        "  loop with a 1 ns body: plain {plain:.2} ns/iter, hand-written {hand:.2} ({:+.2} ns), \
         #[cancellable] {macro_:.2} ({:+.2} ns)",
        hand - plain,
        macro_ - plain,
    );
    let [plain, hand, macro_] = medians(
        AWAITS,
        [
            &|| {
                let _ = black_box(poll_once(awaits_plain(black_box(AWAITS))));
            },
            &|| {
                let _ = black_box(poll_once(awaits_hand_written(ctx, black_box(AWAITS))));
            },
            &|| {
                let _ = black_box(poll_once(awaits_cancellable(black_box(AWAITS))));
            },
        ],
    );
    println!(
        "  await of a ready future: plain {plain:.2} ns, hand-written ctx.run {hand:.2} \
         ({:+.2} ns), #[cancellable] {macro_:.2} ({:+.2} ns vs plain, {:+.2} ns vs \
         hand-written); goal <= 20 ns: {}",
        hand - plain,
        macro_ - plain,
        macro_ - hand,
        if macro_ - plain <= 20.0 {
            "met"
        } else {
            "NOT met"
        },
    );
}

fn main() {
    let listing = std::env::args().any(|arg| arg == "--list" || arg == "--test");
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !listing {
        summary();
    }
}
