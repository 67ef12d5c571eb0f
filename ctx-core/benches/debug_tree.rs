//! What the `debug-tree` feature costs a derivation: run once without and once with it,
//! `cargo bench -p ctx-core --bench debug_tree [--features debug-tree]`, and compare.
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ctx_core::{Context, ContextKey};

/// A value key (its value is never read: only the derivation is measured).
struct Key(#[allow(dead_code)] u64);
impl ContextKey for Key {
    const NAME: &'static str = "Key";
}

fn derive_and_drop(c: &mut Criterion) {
    let label = if cfg!(feature = "debug-tree") {
        "debug-tree on"
    } else {
        "debug-tree off"
    };
    let mut group = c.benchmark_group(format!("derive+drop ({label})"));
    let parent = Context::background().with_cancel();
    group.bench_function("with_cancel", |b| {
        b.iter(|| drop(black_box(parent.with_cancel())))
    });
    group.bench_function("with_value", |b| {
        b.iter(|| drop(black_box(parent.with_value(Key(1)))))
    });
    group.bench_function("with_timeout", |b| {
        b.iter(|| drop(black_box(parent.with_timeout(Duration::from_secs(60)))))
    });
    group.finish();
}

criterion_group!(benches, derive_and_drop);
criterion_main!(benches);
