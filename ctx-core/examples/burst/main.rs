//! The memory burst of `DESIGN.md` ("Memory"), full size: 64 threads each hold 50,000 cancel
//! scopes (half with a deadline), drop them all and stay alive; prints the bytes the process
//! still holds afterwards (a counting global allocator), for ctx and for tokio-util's
//! `CancellationToken`.
//!
//! Run: `cargo run -p ctx-core --release --example burst [THREADS [SCOPES]]`.

mod measure;

#[global_allocator]
static GLOBAL: measure::Counting = measure::Counting;

fn main() {
    let mut args = std::env::args().skip(1).map(|arg| {
        arg.parse::<usize>()
            .expect("usage: burst [THREADS [SCOPES]]")
    });
    let threads = args.next().unwrap_or(64);
    let scopes = args.next().unwrap_or(50_000);
    let theirs = measure::tokio_util_burst(threads, scopes);
    let ours = measure::ctx_burst(threads, scopes);
    println!("{threads} threads x {scopes} scopes (half with a deadline), dropped, threads alive:");
    for (name, burst) in [("tokio-util CancellationToken", theirs), ("ctx", ours)] {
        println!(
            "  {name:<29} peak {:>8.1} MiB, retained {:>8.3} MiB ({} bytes)",
            measure::mib(burst.peak),
            measure::mib(burst.retained),
            burst.retained
        );
    }
    println!(
        "  ctx retains {:.3} MiB more than tokio-util (bound: 4 MiB)",
        measure::mib(ours.retained - theirs.retained)
    );
}
