//! Go parity: Go 1.23's own `context` benchmarks (`src/context/benchmark_test.go`), one
//! criterion benchmark per Go benchmark, read by `../shared/bench/go-parity`.
//!
//! Every Go benchmark `BenchmarkX/sub-N` has a benchmark here whose id is exactly `X/sub`,
//! timed as wall time per operation with the same work per operation. Where tokio-util's
//! `CancellationToken` can express the same work (cancel trees, checking, waiting) there is
//! also a `tokio_util/X/sub` row; it has no values and no deadlines, so the `DeepValue*` and
//! `WithTimeout` benchmarks have none.
//!
//! How Go maps onto ctx:
//!
//! - `Background()` → `Context::background()`.
//! - `ctx, cancel := WithCancel(p)` → `let scope = p.with_cancel()`, and `cancel()` →
//!   `scope.cancel()`; `into_parts()` where Go keeps using `ctx` after `cancel()`.
//! - `WithTimeout(root, time.Hour)` → `root.with_timeout(HOUR)`.
//! - `WithValue(ctx, k, v)` / `ctx.Value(k)` → `ctx.with_value(K(v))` / `ctx.value::<K>()`:
//!   keys are types, so Go's distinct `int` keys become one key type for the whole chain and
//!   the absent key `-1` a type that is nowhere in it.
//! - `ctx.Err()` → `ctx.err()`.
//! - `select { case <-ctx.Done(): default: }` → on a cancelled context (`CheckCanceled/Done`),
//!   `ctx.done().now_or_never()`: get the done signal and poll it once, which is ready
//!   without registering anything, as Go's receive from a closed channel; on a live one
//!   (`ContextCancelDone`), `ctx.is_cancelled()`, because a pending poll registers a waker
//!   and Go's `select`-with-`default` never does (see [`context_cancel_done`]). tokio-util:
//!   `token.cancelled().now_or_never()` and `token.is_cancelled()` likewise.
//! - `b.RunParallel` → [`run_parallel`]: one OS thread per core, the operations split
//!   between them, wall time over all operations.
//! - `go f(); wg.Wait()` → spawn a task on a current-thread tokio runtime and await it
//!   (see [`deep_value_new_go_routine`]).
//!
//! Go discards cancel funcs and leaves garbage to its collector, whose cost lands in its
//! ns/op; a `CancelScope` cancels when dropped, so here everything a benchmark creates is
//! dropped inside the timed operation (innermost first, as locals are), and that is timed too.

mod common;

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEEP_VALUE_DEPTHS, Missing, build_context_tree, build_token_tree, drop_token_tree, drop_tree,
    value_chain,
};
use criterion::{Criterion, criterion_group, criterion_main};
use ctx_core::{CancelScope, Context, ContextKey};
use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3600);

/// Threads for `RunParallel`: Go runs GOMAXPROCS goroutines, which defaults to the cores
/// this process may use.
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| thread::available_parallelism().map_or(1, usize::from))
}

/// Go's `b.RunParallel` for `iters` operations: [`threads`] threads share them, each with
/// its own `init()` state (Go's per-goroutine closure locals), and the result is the wall
/// time from the first thread starting to the last finishing. Divided by `iters` (criterion
/// does that), it is Go's ns/op for RunParallel: total wall time over the operations of all
/// goroutines together. Spawning and joining are not timed.
///
/// As Go's `pb.Next`, threads take operations from a shared counter in batches (about 1/64
/// of a thread's share, at most 10,000 as Go's grain), not a fixed half each: on a busy
/// 2-core machine a descheduled thread's work is picked up by the other instead of the wall
/// time waiting for it.
fn run_parallel<S>(
    iters: u64,
    init: impl Fn() -> S + Sync,
    op: impl Fn(&mut S) + Sync,
) -> Duration {
    let threads = threads();
    let grain = (iters / (threads as u64 * 64)).clamp(1, 10_000);
    let left = AtomicU64::new(iters);
    let start_line = Barrier::new(threads);
    let (init, op, left, start_line) = (&init, &op, &left, &start_line);
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut state = init();
                    start_line.wait();
                    let start = Instant::now();
                    loop {
                        let before = left
                            .fetch_update(Relaxed, Relaxed, |n| {
                                (n > 0).then(|| n.saturating_sub(grain))
                            })
                            .unwrap_or(0);
                        let batch = before.min(grain);
                        if batch == 0 {
                            break;
                        }
                        for _ in 0..batch {
                            op(&mut state);
                        }
                    }
                    let end = Instant::now();
                    black_box(state);
                    (start, end)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("benchmark thread panicked"))
            .collect()
    });
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end - start
}

// ---------------------------------------------------------------------------------------
// BenchmarkCommonParentCancel (RunParallel)
// ---------------------------------------------------------------------------------------

/// Go's `"key"` → `"value"`.
struct Key(&'static str);

impl ContextKey for Key {
    const NAME: &'static str = "Key";
}

/// Go's `for i := 0; i < 100; i++ { x /= x + 1 }` with `x == 0`. Go 1.23 folds the division
/// away (x provably stays 0) but keeps the 100-trip empty loop (`go tool objdump -s
/// BenchmarkCommonParentCancel.func1`: `INCQ AX; CMPQ AX, $0x64; JL`). LLVM would delete the
/// whole loop, so the same 100 trips are kept here with an opaque no-op.
#[inline(always)]
fn go_busy_loop() {
    for i in 0..100u32 {
        black_box(i);
    }
}

/// Per operation: derive a child of a shared cancellable parent, read a value through it,
/// cancel it; all goroutines contend on the shared parent.
fn common_parent_cancel(c: &mut Criterion) {
    let root = Context::background().with_value(Key("value"));
    let shared = root.with_cancel();
    c.bench_function("CommonParentCancel", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    let ctx = shared.with_cancel();
                    assert!(
                        matches!(ctx.value::<Key>(), Some(Key("value"))),
                        "should not be reached"
                    );
                    go_busy_loop();
                    ctx.cancel();
                    go_busy_loop();
                },
            )
        })
    });

    // tokio-util has no values: the same cancel-tree work without the lookup. Its cancel
    // leaves the child in the parent until the last handle drops, so drop it right away.
    let shared = CancellationToken::new();
    c.bench_function("tokio_util/CommonParentCancel", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    let child = shared.child_token();
                    go_busy_loop();
                    child.cancel();
                    drop(child);
                    go_busy_loop();
                },
            )
        })
    });
    drop(shared);
}

// ---------------------------------------------------------------------------------------
// BenchmarkWithTimeout/concurrency=N (RunParallel)
// ---------------------------------------------------------------------------------------

/// With `concurrency` hour-long timeouts armed (created on every core, as Go does per P),
/// each operation arms 10 more and cancels them in creation order.
fn with_timeout(c: &mut Criterion) {
    let mut group = c.benchmark_group("WithTimeout");
    let root = Context::background();
    let mut concurrency = 40;
    while concurrency <= 400_000 {
        let per_thread = concurrency / threads();
        let armed: Vec<Vec<CancelScope>> = thread::scope(|s| {
            let makers: Vec<_> = (0..threads())
                .map(|_| s.spawn(|| (0..per_thread).map(|_| root.with_timeout(HOUR)).collect()))
                .collect();
            makers
                .into_iter()
                .map(|m| m.join().expect("setup thread panicked"))
                .collect()
        });

        group.bench_function(format!("concurrency={concurrency}"), |b| {
            b.iter_custom(|iters| {
                run_parallel(
                    iters,
                    || Vec::<CancelScope>::with_capacity(10),
                    |wcf| {
                        for _ in 0..10 {
                            wcf.push(root.with_timeout(HOUR));
                        }
                        for scope in wcf.drain(..) {
                            scope.cancel();
                        }
                    },
                )
            })
        });

        // Go cancels them after the timer stops; so do we (dropping cancels).
        drop(armed);
        concurrency *= 100;
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// BenchmarkCancelTree/depth=D/Root=R
// ---------------------------------------------------------------------------------------

// `build_context_tree`, `drop_tree` and their tokio-util twins: `common/mod.rs`.

fn cancel_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelTree");
    for depth in [1, 10, 100, 1000] {
        let mut chain = Vec::with_capacity(depth);
        group.bench_function(format!("depth={depth}/Root=Background"), |b| {
            b.iter(|| {
                build_context_tree(&Context::background(), depth, &mut chain);
                drop_tree(&mut chain);
            })
        });
        // Cancelling the root walks the whole live chain, as Go's does.
        group.bench_function(format!("depth={depth}/Root=OpenCanceler"), |b| {
            b.iter(|| {
                let root = Context::background().with_cancel();
                build_context_tree(&root, depth, &mut chain);
                root.cancel();
                drop_tree(&mut chain);
            })
        });
        // Every level is born cancelled.
        group.bench_function(format!("depth={depth}/Root=ClosedCanceler"), |b| {
            b.iter(|| {
                let (ctx, cancel) = Context::background().with_cancel().into_parts();
                cancel.cancel();
                build_context_tree(&ctx, depth, &mut chain);
                drop_tree(&mut chain);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("tokio_util/CancelTree");
    for depth in [1, 10, 100, 1000] {
        let mut chain = Vec::with_capacity(depth);
        group.bench_function(format!("depth={depth}/Root=Background"), |b| {
            b.iter(|| {
                build_token_tree(None, depth, &mut chain);
                drop_token_tree(&mut chain);
            })
        });
        group.bench_function(format!("depth={depth}/Root=OpenCanceler"), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                build_token_tree(Some(&root), depth, &mut chain);
                root.cancel();
                drop_token_tree(&mut chain);
            })
        });
        group.bench_function(format!("depth={depth}/Root=ClosedCanceler"), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                root.cancel();
                build_token_tree(Some(&root), depth, &mut chain);
                drop_token_tree(&mut chain);
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// BenchmarkCheckCanceled/{Err,Done}
// ---------------------------------------------------------------------------------------

/// Checking a cancelled context: `Err()`, and a non-blocking receive from `Done()`. The
/// `Done` row creates the `Done` future and polls it once with a no-op waker; as the context
/// is cancelled, it is ready at once.
fn check_canceled(c: &mut Criterion) {
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    cancel.cancel();
    let mut group = c.benchmark_group("CheckCanceled");
    group.bench_function("Err", |b| b.iter(|| black_box(&ctx).err()));
    group.bench_function("Done", |b| b.iter(|| black_box(&ctx).done().now_or_never()));
    group.finish();

    let token = CancellationToken::new();
    token.cancel();
    let mut group = c.benchmark_group("tokio_util/CheckCanceled");
    group.bench_function("Err", |b| b.iter(|| black_box(&token).is_cancelled()));
    group.bench_function("Done", |b| {
        b.iter(|| black_box(&token).cancelled().now_or_never())
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// BenchmarkContextCancelDone (RunParallel)
// ---------------------------------------------------------------------------------------

/// A non-blocking receive from `Done()` of a shared, live context on every core at once
/// (Go added it when it made `Done()` lock-free, so that checking a shared context does
/// not contend). Go's `select`-with-`default` never registers the goroutine as a waiter;
/// polling a `Done` that is pending must register its waker (the `Future` contract), so the
/// faithful check of a live context is `is_cancelled()`, which is what `Done`'s poll tests
/// first. (`CheckCanceled/Done` polls a `Done`, because there the context is cancelled and
/// the poll is ready without registering.)
///
/// `extra/ContextCancelDone/done` (not a Go benchmark; `go-parity` ignores it) measures the
/// literal translation, `ctx.done().now_or_never()`, i.e. what a `select!` arm over
/// `ctx.done()` costs each round: a reference count and a waker registration on the shared
/// context, both contended.
fn context_cancel_done(c: &mut Criterion) {
    let scope = Context::background().with_cancel();
    c.bench_function("ContextCancelDone", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    black_box(black_box(&*scope).is_cancelled());
                },
            )
        })
    });
    c.bench_function("extra/ContextCancelDone/done", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    black_box(scope.done().now_or_never());
                },
            )
        })
    });
    drop(scope);

    // tokio-util's `is_cancelled` takes the token's lock.
    let token = CancellationToken::new();
    c.bench_function("tokio_util/ContextCancelDone", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    black_box(black_box(&token).is_cancelled());
                },
            )
        })
    });
}

// ---------------------------------------------------------------------------------------
// BenchmarkDeepValue{NewGoRoutine,SameGoRoutine}/depth=D
// ---------------------------------------------------------------------------------------

// `Depth`, `Missing`, `DEEP_VALUE_DEPTHS` and `value_chain`: `common/mod.rs`.

/// Go starts a goroutine per lookup and waits for it. The Rust analogue of a goroutine is a
/// task, not an OS thread (a thread per lookup would cost ~20 µs, a hand-off to a parked
/// worker thread several µs in futex wake-ups; Go's goroutine start and `wg.Wait` stay in
/// user space, ~0.3 µs): each operation spawns a task on a current-thread tokio runtime
/// and awaits it, as Go's new goroutine usually runs on the same P once `wg.Wait` parks the
/// spawner. The task owns a clone of the context (Go's closure captures it).
fn deep_value_new_go_routine(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("DeepValueNewGoRoutine");
    for depth in DEEP_VALUE_DEPTHS {
        let ctx = value_chain(depth);
        group.bench_function(format!("depth={depth}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            black_box(black_box(&ctx).value::<Missing>().is_none());
                        })
                        .await
                        .expect("lookup task panicked");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn deep_value_same_go_routine(c: &mut Criterion) {
    let mut group = c.benchmark_group("DeepValueSameGoRoutine");
    for depth in DEEP_VALUE_DEPTHS {
        let ctx = value_chain(depth);
        group.bench_function(format!("depth={depth}"), |b| {
            b.iter(|| black_box(&ctx).value::<Missing>().is_none())
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------

/// Modest sampling so that the whole suite (Go's 29 benchmarks, 45 rows with tokio-util)
/// runs in a few minutes on 2 cores; `go-parity` passes its own warm-up and measurement
/// times, which take precedence.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .nresamples(10_000)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

criterion_group! {
    name = go_parity;
    config = config();
    targets =
        common_parent_cancel,
        with_timeout,
        cancel_tree,
        check_canceled,
        context_cancel_done,
        deep_value_new_go_routine,
        deep_value_same_go_routine,
}
criterion_main!(go_parity);
