//! Service-level costs, each row against what a tokio user would pick instead.
//!
//! - **`Group` vs `JoinSet`** (`service/group_spawn_join_10k`, `service/joinset_spawn_join_10k`):
//!   from inside a task on a 2-worker multi-thread runtime, spawn 10,000 trivial tasks and
//!   join them all, with ctx's [`Group`] (`spawn` + `wait`) and with `tokio::task::JoinSet`
//!   (`spawn` + `join_next` until empty). Goal: `Group` ≤ 1.1× `JoinSet`.
//! - **`with_timeout` vs `tokio::time::timeout`** (`service/with_timeout_100k`,
//!   `service/tokio_timeout_100k`, and `service/tokio_timeout_boxed_100k` for reference):
//!   100,000 one-minute timeouts armed, all alive at once, then disarmed by dropping them.
//!   See [`timeouts`] for what each side does. Goal: ours ≤ 1× tokio's (the in-place row).
//! - **A checkpoint in a hot loop** (`service/checkpoint_loop_1k/*`): 1,000 iterations of a
//!   small body (a few arithmetic operations on `black_box`'d data, a few ns) with no check
//!   (`plain`), with `ctx.checkpoint()?` each iteration (`checkpoint`), with `if
//!   ctx.is_cancelled()` (`is_cancelled`), and as a `#[cancellable]` fn, whose macro puts a
//!   checkpoint at the top of the loop body and derives a child context once per call
//!   (`cancellable`). Goal: ≤ 5% over `plain`.
//!
//! Memory: on glibc the bench first tells `malloc` to keep freed memory, as in `scaling`.
//! By default glibc returns the pages of 100,000 freed contexts to the OS at the end of
//! every iteration and the next one faults them in again, so the `with_timeout` row would
//! time the kernel's page faults as much as ctx (the in-place tokio row allocates nothing
//! and is not affected); a running service reuses its heap.
//!
//! After criterion's report, a statement gives each ratio and whether its goal holds: the
//! median of the paired ratios of interleaved rounds (each round runs every side in turn, so
//! a slow stretch of a shared machine hits them alike), with its quartiles. A goal is
//! "met" when the whole middle half of the ratios meets it, "NOT met" when none of it does,
//! and otherwise judged by the median, saying the spread crosses the goal. The timeouts
//! are measured on a fresh heap and again after the Group rows (with glibc, the order freed
//! nodes come back in, and so the cache misses of 100k of them, depends on the heap's
//! history), and also with 1,000 alive at once, where the nodes stay in cache.
//!
//! Run: `cargo bench -p ctx-core --features tokio --bench service` (a filter that matches no
//! benchmark, e.g. `-- statement`, prints the statement alone).

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{ctx_timeouts, keep_freed_memory, tokio_timeouts, tokio_timeouts_boxed};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ctx_core::{Context, Error, Group, cancellable};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const TASKS: usize = 10_000;
const TIMEOUTS: usize = 100_000;
const LOOP: usize = 1_000;

/// The runtime a service would run on this machine: multi-thread, 2 workers, timers on.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------
// Group vs JoinSet

/// Spawns `TASKS` trivial tasks into a [`Group`] and waits for them all. Runs inside a task,
/// as a request handler would (spawns go to the worker's local queue).
async fn group_spawn_join() {
    let group = Group::<Infallible>::new(Context::background());
    for i in 0..TASKS {
        group.spawn(async move {
            black_box(i);
            Ok(())
        });
    }
    group.wait().await.expect("no task fails");
}

/// The same with `JoinSet`: spawn `TASKS` trivial tasks, `join_next` until it is empty.
async fn joinset_spawn_join() {
    let mut set = JoinSet::new();
    for i in 0..TASKS {
        set.spawn(async move {
            black_box(i);
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("no task panics");
    }
}

/// Runs `job` once as a task on `rt` and waits for it.
fn in_task<F: Future<Output = ()> + Send + 'static>(rt: &Runtime, job: F) {
    rt.block_on(rt.spawn(job)).expect("the job task panicked");
}

fn group_vs_joinset(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("service");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("group_spawn_join_10k", |b| {
        b.iter(|| in_task(&rt, group_spawn_join()))
    });
    group.bench_function("joinset_spawn_join_10k", |b| {
        b.iter(|| in_task(&rt, joinset_spawn_join()))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// with_timeout vs tokio::time::timeout

fn timeouts(c: &mut Criterion) {
    let rt = runtime();
    let _entered = rt.enter(); // tokio's time driver for the tokio side
    let root = Context::background();
    let mut scopes = Vec::with_capacity(TIMEOUTS);
    let mut in_place = Vec::with_capacity(TIMEOUTS);
    let mut boxed = Vec::with_capacity(TIMEOUTS);
    let mut group = c.benchmark_group("service");
    group.throughput(Throughput::Elements(TIMEOUTS as u64));
    group.bench_function("with_timeout_100k", |b| {
        b.iter(|| ctx_timeouts(&root, &mut scopes, TIMEOUTS))
    });
    group.bench_function("tokio_timeout_100k", |b| {
        b.iter(|| tokio_timeouts(&mut in_place, TIMEOUTS))
    });
    group.bench_function("tokio_timeout_boxed_100k", |b| {
        b.iter(|| tokio_timeouts_boxed(&mut boxed, TIMEOUTS))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// A checkpoint in a hot loop

/// The data the loops read: opaque to the optimizer.
fn data() -> Vec<u64> {
    (0..64u64)
        .map(|i| black_box(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect()
}

/// The body: a few dependent arithmetic operations on one element (a few ns).
#[inline(always)]
fn step(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0xFF51_AFD7_ED55_8CCD).rotate_left(23) ^ (h >> 11)
}

/// Each loop is a function of its own (`inline(never)`), as a user's is: inlined into the
/// statement's closures, one side's code layout differed from the other's from build to
/// build (the same source measured +4% and +16%).
#[inline(never)]
fn loop_plain(data: &[u64], n: usize) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        h = step(h, data[i % data.len()]);
    }
    Ok(h)
}

#[inline(never)]
fn loop_checkpoint(ctx: &Context, data: &[u64], n: usize) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        ctx.checkpoint()?;
        h = step(h, data[i % data.len()]);
    }
    Ok(h)
}

#[inline(never)]
fn loop_is_cancelled(ctx: &Context, data: &[u64], n: usize) -> Result<u64, Error> {
    let mut h = 0u64;
    for i in 0..n {
        if ctx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        h = step(h, data[i % data.len()]);
    }
    Ok(h)
}

/// `loop_plain` with the macro: a child of `ctx` for the call, a checkpoint per iteration.
#[inline(never)]
#[cancellable(checkpoints = "loops")]
fn loop_cancellable(ctx: &Context, data: &[u64], n: usize) -> Result<u64, Error> {
    let _ = ctx; // the derived child; the checkpoints the macro inserts use it
    let mut h = 0u64;
    for i in 0..n {
        h = step(h, data[i % data.len()]);
    }
    Ok(h)
}

fn checkpoints(c: &mut Criterion) {
    let scope = Context::background().with_cancel();
    let ctx = scope.context();
    let data = data();
    let data = &data[..];
    let mut group = c.benchmark_group("service/checkpoint_loop_1k");
    group.throughput(Throughput::Elements(LOOP as u64));
    group.bench_function(BenchmarkId::from_parameter("plain"), |b| {
        b.iter(|| loop_plain(data, black_box(LOOP)))
    });
    group.bench_function(BenchmarkId::from_parameter("checkpoint"), |b| {
        b.iter(|| loop_checkpoint(ctx, data, black_box(LOOP)))
    });
    group.bench_function(BenchmarkId::from_parameter("is_cancelled"), |b| {
        b.iter(|| loop_is_cancelled(ctx, data, black_box(LOOP)))
    });
    group.bench_function(BenchmarkId::from_parameter("cancellable"), |b| {
        b.iter(|| loop_cancellable(ctx, data, black_box(LOOP)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = group_vs_joinset, timeouts, checkpoints
}

// ---------------------------------------------------------------------------------------
// The statement

/// The times of `samples` interleaved rounds of `runs` (each round runs each in turn), after
/// one warm-up round: so a slow stretch of a shared machine hits every side alike.
fn interleaved<const N: usize>(samples: usize, runs: [&mut dyn FnMut(); N]) -> [Vec<Duration>; N] {
    let mut runs = runs;
    let mut times = [(); N].map(|()| Vec::with_capacity(samples));
    for round in 0..=samples {
        for (which, run) in runs.iter_mut().enumerate() {
            let started = Instant::now();
            run();
            let took = started.elapsed();
            if round > 0 {
                times[which].push(took);
            }
        }
    }
    times
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The ratios `ours[i] / theirs[i]` of the rounds, paired: (first quartile, median, third
/// quartile). The median is the figure a goal is judged by; the quartiles are its spread.
fn paired(ours: &[Duration], theirs: &[Duration]) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: usize| ratios[(ratios.len() - 1) * q / 4];
    (at(1), at(2), at(3))
}

/// Whether the paired ratios `(q1, median, q3)` meet `goal` (at most), judged by the median
/// and saying where the middle half lies: on a noisy machine a median near the goal can
/// fall either side of it from one run to the next, and only a spread wholly on one side is
/// a firm answer.
fn verdict((q1, median, q3): (f64, f64, f64), goal: f64) -> &'static str {
    if q3 <= goal {
        "met"
    } else if median <= goal {
        "met by the median (the upper quartile is past it)"
    } else if q1 <= goal {
        "NOT met by the median (the lower quartile meets it)"
    } else {
        "NOT met"
    }
}

/// Arms and disarms `n` timeouts `reps` times on each side, in `samples` interleaved rounds;
/// prints ns per timeout and the paired ratios; returns the quartiles and median of the
/// ratios to tokio in place.
fn timeouts_statement(label: &str, n: usize, reps: usize, samples: usize) -> (f64, f64, f64) {
    let root = Context::background();
    let mut scopes = Vec::with_capacity(n);
    let mut in_place = Vec::with_capacity(n);
    let mut boxed = Vec::with_capacity(n);
    let [ours, theirs, theirs_boxed] = interleaved(
        samples,
        [
            &mut || (0..reps).for_each(|_| ctx_timeouts(&root, &mut scopes, n)),
            &mut || (0..reps).for_each(|_| tokio_timeouts(&mut in_place, n)),
            &mut || (0..reps).for_each(|_| tokio_timeouts_boxed(&mut boxed, n)),
        ],
    );
    let per = |times: &[Duration]| median(times).as_nanos() as f64 / (n * reps) as f64;
    let (q1, ratio, q3) = paired(&ours, &theirs);
    let (_, boxed_ratio, _) = paired(&ours, &theirs_boxed);
    println!(
        "  arm + disarm {label} timeouts: with_timeout {:.1} ns each, tokio::time::timeout \
         {:.1} ns ({:.1} ns boxed): {ratio:.3}x (quartiles {q1:.3}-{q3:.3}; {boxed_ratio:.3}x \
         vs boxed)",
        per(&ours),
        per(&theirs),
        per(&theirs_boxed),
    );
    (q1, ratio, q3)
}

fn statement(kept: bool) {
    println!(
        "\nservice: the statement (medians of paired ratios of interleaved rounds; allocator: \
         {})",
        if kept {
            "glibc, keeping freed memory"
        } else {
            "default"
        }
    );

    let rt = runtime();
    let entered = rt.enter(); // tokio's time driver, for the tokio side of the timeouts

    // The timeouts first, on a heap this process has barely used, and again below, once
    // the Group rows have churned it: with glibc, the order a node's memory comes back in
    // (and so how many cache misses a drop takes) depends on that history; tokio's in-place
    // timeouts allocate nothing and do not care.
    let fresh = timeouts_statement("100k", TIMEOUTS, 1, 21);
    let [ours, theirs] = interleaved(
        41,
        [&mut || in_task(&rt, group_spawn_join()), &mut || {
            in_task(&rt, joinset_spawn_join())
        }],
    );
    let (q1, ratio, q3) = paired(&ours, &theirs);
    println!(
        "  spawn + join 10k tasks: Group {:.2?}, JoinSet {:.2?}: {ratio:.3}x (quartiles \
         {q1:.3}-{q3:.3}); goal <= 1.1x: {}",
        median(&ours),
        median(&theirs),
        verdict((q1, ratio, q3), 1.1)
    );
    let churned = timeouts_statement("100k (heap churned)", TIMEOUTS, 1, 21);
    println!(
        "    goal <= 1x at 100k: fresh heap {}; churned heap {}",
        verdict(fresh, 1.0),
        verdict(churned, 1.0)
    );
    // The same work with 1,000 alive at once, 100 times over: what is left of the
    // difference once the nodes stay in cache.
    let cached = timeouts_statement("1k (x100)", 1_000, 100, 21);
    println!("    at 1k, against <= 1x: {}", verdict(cached, 1.0));
    drop(entered);
    drop(rt);

    let scope = Context::background().with_cancel();
    let ctx = scope.context();
    let data = data();
    let data = &data[..];
    // One sample: 100 loops of 1,000 iterations (a single loop is too short to time alone).
    let reps = |f: &dyn Fn() -> Result<u64, Error>| {
        for _ in 0..100 {
            let _ = black_box(f());
        }
    };
    let [plain, checkpoint, is_cancelled, macro_] = interleaved(
        101,
        [
            &mut || reps(&|| loop_plain(data, black_box(LOOP))),
            &mut || reps(&|| loop_checkpoint(ctx, data, black_box(LOOP))),
            &mut || reps(&|| loop_is_cancelled(ctx, data, black_box(LOOP))),
            &mut || reps(&|| loop_cancellable(ctx, data, black_box(LOOP))),
        ],
    );
    let per = |d: &[Duration]| median(d).as_nanos() as f64 / (100 * LOOP) as f64;
    let pct = |d: &[Duration]| (paired(d, &plain).1 - 1.0) * 100.0;
    // The quartiles of the worse of the two checks, as per cents over `plain`.
    let worse = if pct(&checkpoint) >= pct(&is_cancelled) {
        &checkpoint
    } else {
        &is_cancelled
    };
    let percent = |d: &[Duration]| {
        let (q1, m, q3) = paired(d, &plain);
        ((q1 - 1.0) * 100.0, (m - 1.0) * 100.0, (q3 - 1.0) * 100.0)
    };
    println!(
        "  1k-iteration loop, {:.2} ns body: checkpoint()? {:.2} ns/iter ({:+.1}%), \
         is_cancelled() {:.2} ({:+.1}%); goal <= 5%: {}",
        per(&plain),
        per(&checkpoint),
        pct(&checkpoint),
        per(&is_cancelled),
        pct(&is_cancelled),
        verdict(percent(worse), 5.0)
    );
    println!(
        "  the same as #[cancellable]: {:.2} ns/iter ({:+.1}%; about {:.0} ns per call over \
         the hand-written checkpoint: the call's with_cancel, enter and drop); goal <= 5%: {}",
        per(&macro_),
        pct(&macro_),
        (per(&macro_) - per(&checkpoint)) * LOOP as f64,
        verdict(percent(&macro_), 5.0)
    );
}

fn main() {
    let kept = keep_freed_memory();
    let listing = std::env::args().any(|arg| arg == "--list" || arg == "--test");
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !listing {
        statement(kept);
    }
}
