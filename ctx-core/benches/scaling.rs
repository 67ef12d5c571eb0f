//! Cost per context as the tree grows: is deriving, cancelling and dropping a context as
//! cheap in a tree of a million as in a tree of ten?
//!
//! - **wide**: `n` children (`with_cancel`) of one cancellable parent, for n = 1, 10, 100,
//!   1k, 10k, 100k, 1M. Timed phases: derive all `n` (*derive*), cancel the parent, which
//!   cancels every child before it returns (*cancel*), then drop the children (*drop*).
//! - **deep**: a chain of depth `d` under a cancellable root, each link `with_cancel` of the
//!   one before, for the same sizes. Phases: derive the chain, cancel the root (the cancel
//!   reaches every link), drop the chain innermost first (as nested scopes drop).
//!
//! Every figure is nanoseconds per derived context (the parent or root is not counted): the
//! median over several samples of each phase, and the median of the samples' totals. Small
//! trees are too quick to time one at a time, so a sample builds `max(1, 10_000 / n)` trees
//! side by side and divides by all their contexts. Samples: 31 up to 10k, 9 at 100k, 5 at
//! 1M, after one untimed warm-up sample. The goal is a flat cost per context; the last
//! column is each size's total over the total at 1k. What a parent (or root) costs once,
//! its own cancel and the freeing of its node, which goes with its last child, is shared by
//! its `n` children: whole at n = 1, a tenth at 10, so those rows sit above the rest by
//! design; growth shows from 100 on.
//!
//! Memory: on glibc the bench first tells `malloc` to keep freed memory (no trimming, no
//! `mmap` for blocks under 32 MiB). By default glibc hands the pages of a freed
//! hundred-thousand-context tree back to the OS, the next sample faults them in again, and
//! the derive column measures page faults instead of ctx (3–4× at 100k and 1M in the
//! wide shape, whose front-to-back drop triggers the trim; the deep shape's innermost-first
//! drop does not). A long-running service reuses its heap, so warm pages are the case that
//! matters; the cost of first touch is printed once, under the wide table: the warm-up
//! sample of its largest size, which is the first to grow the heap that far.
//!
//! This is a plain `main`, not criterion: a million-context sample takes about a tenth of a
//! second and a few hundred MB, more than criterion's sampling is built for.
//!
//! Run: `cargo bench -p ctx-core --bench scaling` (a few seconds);
//! `cargo bench -p ctx-core --bench scaling -- --quick` stops at 10k (a smoke test). Other
//! arguments (cargo passes `--bench`) are ignored.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::keep_freed_memory;
use ctx_core::{CancelScope, Context};

const SIZES: [usize; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];
const QUICK_MAX: usize = 10_000;
/// The contexts a sample derives at least (so small trees are timed in batches).
const SAMPLE_CONTEXTS: usize = 10_000;

/// The time of each phase in one sample.
#[derive(Clone, Copy)]
struct Sample {
    derive: Duration,
    cancel: Duration,
    drop: Duration,
}

impl Sample {
    fn total(&self) -> Duration {
        self.derive + self.cancel + self.drop
    }
}

/// `batch` parents with `n` children each: derive, cancel the parents, drop the children.
fn wide(n: usize, batch: usize) -> Sample {
    let parents: Vec<CancelScope> = (0..batch)
        .map(|_| Context::background().with_cancel())
        .collect();
    let mut children: Vec<CancelScope> = Vec::with_capacity(n * batch);

    let started = Instant::now();
    for parent in &parents {
        for _ in 0..n {
            children.push(parent.with_cancel());
        }
    }
    let derived = Instant::now();
    for parent in parents {
        parent.cancel();
    }
    let cancelled = Instant::now();

    assert!(children.iter().step_by(n.max(1)).all(|c| c.is_cancelled()));
    let dropping = Instant::now();
    drop(black_box(children));
    let dropped = Instant::now();

    Sample {
        derive: derived - started,
        cancel: cancelled - derived,
        drop: dropped - dropping,
    }
}

/// `batch` roots with a chain of `d` links each: derive, cancel the roots, drop the chains
/// innermost first.
fn deep(d: usize, batch: usize) -> Sample {
    let roots: Vec<CancelScope> = (0..batch)
        .map(|_| Context::background().with_cancel())
        .collect();
    let mut chains: Vec<Vec<CancelScope>> = (0..batch).map(|_| Vec::with_capacity(d)).collect();

    let started = Instant::now();
    for (root, chain) in roots.iter().zip(&mut chains) {
        for _ in 0..d {
            let link = match chain.last() {
                Some(previous) => previous.with_cancel(),
                None => root.with_cancel(),
            };
            chain.push(link);
        }
    }
    let derived = Instant::now();
    for root in roots {
        root.cancel();
    }
    let cancelled = Instant::now();

    assert!(
        chains
            .iter()
            .all(|chain| chain.last().is_some_and(|c| c.is_cancelled()))
    );
    let dropping = Instant::now();
    for mut chain in chains {
        while let Some(link) = chain.pop() {
            drop(black_box(link));
        }
    }
    let dropped = Instant::now();

    Sample {
        derive: derived - started,
        cancel: cancelled - derived,
        drop: dropped - dropping,
    }
}

fn samples_for(n: usize) -> usize {
    match n {
        0..=10_000 => 31,
        10_001..=100_000 => 9,
        _ => 5,
    }
}

/// Nanoseconds per context of each phase and of the total, medians over the samples.
struct Row {
    n: usize,
    samples: usize,
    batch: usize,
    /// The untimed warm-up sample's derive phase (fresh pages, if the heap grew).
    warm_up_derive: f64,
    derive: f64,
    cancel: f64,
    drop: f64,
    total: f64,
}

fn measure(n: usize, shape: fn(usize, usize) -> Sample) -> Row {
    let batch = (SAMPLE_CONTEXTS / n).max(1);
    let samples = samples_for(n);
    let warm_up = shape(n, batch); // the allocator's pages, the caches
    let taken: Vec<Sample> = (0..samples).map(|_| shape(n, batch)).collect();
    let contexts = (n * batch) as f64;
    let median = |phase: fn(&Sample) -> Duration| {
        let mut ns: Vec<f64> = taken
            .iter()
            .map(|s| phase(s).as_nanos() as f64 / contexts)
            .collect();
        ns.sort_by(f64::total_cmp);
        ns[ns.len() / 2]
    };
    Row {
        n,
        samples,
        batch,
        warm_up_derive: warm_up.derive.as_nanos() as f64 / contexts,
        derive: median(|s| s.derive),
        cancel: median(|s| s.cancel),
        drop: median(|s| s.drop),
        total: median(Sample::total),
    }
}

fn size(n: usize) -> String {
    match n {
        1_000_000.. if n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        1_000.. if n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        _ => n.to_string(),
    }
}

fn table(title: &str, what: &str, sizes: &[usize], shape: fn(usize, usize) -> Sample) -> Vec<Row> {
    let rows: Vec<Row> = sizes.iter().map(|&n| measure(n, shape)).collect();
    let base = rows.iter().find(|r| r.n == 1_000).map(|r| r.total);
    println!("\n### {title}\n");
    println!(
        "| {what} | samples × trees | derive ns/ctx | cancel ns/ctx | drop ns/ctx | total ns/ctx | total vs 1k |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ratio = base.map_or("–".to_string(), |b| format!("{:.2}×", r.total / b));
        println!(
            "| {} | {} × {} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio} |",
            size(r.n),
            r.samples,
            r.batch,
            r.derive,
            r.cancel,
            r.drop,
            r.total
        );
    }
    rows
}

fn main() {
    // Anything else (`--bench` from cargo, a filter) is not ours: ignored.
    let quick = std::env::args().skip(1).any(|arg| arg == "--quick");
    let sizes: Vec<usize> = SIZES
        .into_iter()
        .filter(|&n| !quick || n <= QUICK_MAX)
        .collect();

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let profile = if cfg!(debug_assertions) {
        "debug assertions on (not an optimized build: figures are not meaningful)"
    } else {
        "optimized, debug assertions off"
    };
    let kept = keep_freed_memory();
    println!("## scaling: cost per context as the tree grows\n");
    println!("cores: {cores}; build: {profile}; single thread");
    println!(
        "allocator: {}",
        if kept {
            "glibc, told to keep freed memory (warm pages)"
        } else {
            "default (freed memory may go back to the OS: large sizes may time page faults)"
        }
    );
    println!(
        "figures: ns per derived context, medians over samples (each phase's median; the \
         total is the median of the samples' totals)"
    );
    if quick {
        println!("--quick: sizes up to {}", size(QUICK_MAX));
    }

    let rows = table("wide: n children of one parent", "n", &sizes, wide);
    if let Some(largest) = rows.last().filter(|r| r.n > SAMPLE_CONTEXTS) {
        println!(
            "\nfirst touch: the untimed warm-up of n = {} derived at {:.1} ns/ctx (pages new to \
             the heap; {:.1} warm)",
            size(largest.n),
            largest.warm_up_derive,
            largest.derive
        );
    }
    let _ = table(
        "deep: a chain of depth d, dropped innermost first",
        "d",
        &sizes,
        deep,
    );
}
