//! Waiting costs: creating `done()` in a loop (as `select!` in a loop does), polling it
//! pending once (registration), and `run` on a ready future; plus deadline lateness (how late
//! the driver fires, p50/p99) with 10,000 deadlines pending, printed after the criterion runs.

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use ctx_core::Context;

fn done_in_a_loop(c: &mut Criterion) {
    let scope = Context::background().with_cancel();
    let mut cx = TaskContext::from_waker(Waker::noop());
    c.bench_function("done/create_drop", |b| {
        b.iter(|| drop(black_box(scope.done())))
    });
    c.bench_function("done/create_poll_pending_drop", |b| {
        b.iter(|| {
            let mut done = scope.done();
            let _ = black_box(std::future::Future::poll(
                std::pin::Pin::new(&mut done),
                &mut cx,
            ));
        })
    });
    c.bench_function("run/ready_future", |b| {
        b.iter(|| {
            let run = pin!(scope.run(std::future::ready(black_box(1))));
            black_box(std::future::Future::poll(run, &mut cx))
        })
    });
}

/// Arms `pending` hour-long deadlines, then measures how late 1,000 short deadlines
/// (1–20 ms) fire, as seen by a thread blocked in `wait()`.
fn lateness(pending: usize) -> (Duration, Duration, Duration) {
    let _armed: Vec<_> = (0..pending)
        .map(|_| Context::background().with_timeout(Duration::from_secs(3600)))
        .collect();
    let mut late = Vec::new();
    for i in 0..1_000u64 {
        let timeout = Duration::from_micros(1_000 + (i * 7919) % 19_000);
        let start = Instant::now();
        let scope = Context::background().with_timeout(timeout);
        scope.wait();
        late.push(start.elapsed().saturating_sub(timeout));
    }
    late.sort();
    (
        late[late.len() / 2],
        late[late.len() * 99 / 100],
        late[late.len() - 1],
    )
}

criterion_group!(benches, done_in_a_loop);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for pending in [0, 10_000] {
        let (p50, p99, max) = lateness(pending);
        println!("deadline lateness with {pending} pending: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    }
}
