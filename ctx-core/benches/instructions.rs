//! Exactly `ITERS` operations of one single-threaded go-parity row, for instruction counts
//! under callgrind: wall time on a busy 2-core machine swings from run to run, instructions
//! retired do not.
//!
//! ```text
//! instructions ROW ITERS     run ITERS operations of ROW, then exit
//! instructions list          print the row ids, one a line
//! ```
//!
//! Row ids are `go_parity.rs`'s criterion ids (`CancelTree/depth=10/Root=ClosedCanceler`,
//! `tokio_util/CancelTree/depth=10/Root=ClosedCanceler`, `CheckCanceled/Err`,
//! `DeepValueSameGoRoutine/depth=10`, …), and each operation is the same work as that
//! row's `b.iter` closure there (copied below; keep them in step), its result passed
//! through `black_box` as criterion does. One more pair is `service`'s: `Timeouts/alive=1000`
//! arms 1,000 `with_timeout`s and drops them (one operation), and its `tokio_util/` twin
//! does the same with what a tokio user picks instead, tokio's own `tokio::time::timeout`
//! in place (`common/mod.rs` holds both, for both benches). Setup (the cancelled context, the value chain)
//! happens once, before the loop, and process start-up and exit come on top, so a single
//! run's count is not the cost of an operation: `benches/paired --instructions` runs each
//! row at two iteration counts and divides the difference in instructions by the
//! difference in operations, which cancels everything but the per-operation work.
//!
//! With feature `tower`, two more rows price a request through the server layers in
//! process: `Layers/ContextLayer` is one request (with `grpc-timeout: 1S`) through
//! `ContextLayer` around a handler that answers at once, and
//! `Layers/ContextLayer+AdmissionLayer` the same with `AdmissionLayer` between them (a place
//! free: the admission path without waiting); their difference is what admission adds.
//!
//! Only single-threaded rows are here: the `RunParallel` ones measure contention, which an
//! instruction count under callgrind (it serialises threads) cannot see. Unknown arguments
//! starting with `--` (cargo passes `--bench`) are ignored.

mod common;

use std::hint::black_box;
use std::process::ExitCode;

use common::{
    DEEP_VALUE_DEPTHS, Missing, build_context_tree, build_token_tree, ctx_timeouts,
    drop_token_tree, drop_tree, tokio_timeouts, value_chain,
};
use ctx_core::Context;
use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;

// --------------------------------------------------------------------------------------

const DEPTHS: [usize; 4] = [1, 10, 100, 1000];
const ROOTS: [&str; 3] = ["Background", "OpenCanceler", "ClosedCanceler"];
/// Timeouts alive at once in the `Timeouts` rows (`service`'s 1k statement row).
const TIMEOUTS_ALIVE: usize = 1000;

/// Every row id, in go_parity.rs's order.
fn rows() -> Vec<String> {
    let mut rows = Vec::new();
    for prefix in ["", "tokio_util/"] {
        for depth in DEPTHS {
            for root in ROOTS {
                rows.push(format!("{prefix}CancelTree/depth={depth}/Root={root}"));
            }
        }
    }
    for prefix in ["", "tokio_util/"] {
        for check in ["Err", "Done"] {
            rows.push(format!("{prefix}CheckCanceled/{check}"));
        }
    }
    for depth in DEEP_VALUE_DEPTHS {
        rows.push(format!("DeepValueSameGoRoutine/depth={depth}"));
    }
    for prefix in ["", "tokio_util/"] {
        rows.push(format!("{prefix}Timeouts/alive={TIMEOUTS_ALIVE}"));
    }
    if cfg!(feature = "tower") {
        rows.push("Layers/ContextLayer".to_string());
        rows.push("Layers/ContextLayer+AdmissionLayer".to_string());
    }
    rows
}

/// One request through `ContextLayer` (and `AdmissionLayer` if `admission`) around a
/// handler that answers at once, as `layers.rs`'s in-process rows do, polled once.
#[cfg(feature = "tower")]
fn layers(admission: bool, iters: u64) {
    use ctx_core::http::{AdmissionLayer, ContextLayer};
    use tower::{Layer, Service, service_fn};

    let root = Context::background().with_cancel();
    let handler = service_fn(|_request: http::Request<String>| async {
        let deadline = Context::current().deadline().is_some();
        Ok::<_, std::convert::Infallible>(http::Response::new(deadline.to_string()))
    });
    let context = ContextLayer::new(&root).max_timeout(std::time::Duration::from_secs(30));
    let request = || {
        http::Request::get("/")
            .header("grpc-timeout", "1S")
            .body(String::new())
            .expect("a valid request")
    };
    if admission {
        let mut svc = context.layer(AdmissionLayer::new(64).layer(handler));
        iterate(iters, || svc.call(request()).now_or_never());
    } else {
        let mut svc = context.layer(handler);
        iterate(iters, || svc.call(request()).now_or_never());
    }
}

/// Criterion's `b.iter` for `iters` operations: the routine's result goes through
/// `black_box`.
fn iterate<T>(iters: u64, mut op: impl FnMut() -> T) {
    for _ in 0..iters {
        black_box(op());
    }
}

fn cancel_tree(root: &str, depth: usize, iters: u64) {
    let mut chain = Vec::with_capacity(depth);
    match root {
        "Background" => iterate(iters, || {
            build_context_tree(&Context::background(), depth, &mut chain);
            drop_tree(&mut chain);
        }),
        "OpenCanceler" => iterate(iters, || {
            let root = Context::background().with_cancel();
            build_context_tree(&root, depth, &mut chain);
            root.cancel();
            drop_tree(&mut chain);
        }),
        _ => iterate(iters, || {
            let (ctx, cancel) = Context::background().with_cancel().into_parts();
            cancel.cancel();
            build_context_tree(&ctx, depth, &mut chain);
            drop_tree(&mut chain);
        }),
    }
}

fn token_cancel_tree(root: &str, depth: usize, iters: u64) {
    let mut chain = Vec::with_capacity(depth);
    match root {
        "Background" => iterate(iters, || {
            build_token_tree(None, depth, &mut chain);
            drop_token_tree(&mut chain);
        }),
        "OpenCanceler" => iterate(iters, || {
            let root = CancellationToken::new();
            build_token_tree(Some(&root), depth, &mut chain);
            root.cancel();
            drop_token_tree(&mut chain);
        }),
        _ => iterate(iters, || {
            let root = CancellationToken::new();
            root.cancel();
            build_token_tree(Some(&root), depth, &mut chain);
            drop_token_tree(&mut chain);
        }),
    }
}

fn check_canceled(check: &str, iters: u64) {
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    cancel.cancel();
    match check {
        "Err" => iterate(iters, || black_box(&ctx).err()),
        _ => iterate(iters, || black_box(&ctx).done().now_or_never()),
    }
}

fn token_check_canceled(check: &str, iters: u64) {
    let token = CancellationToken::new();
    token.cancel();
    match check {
        "Err" => iterate(iters, || black_box(&token).is_cancelled()),
        _ => iterate(iters, || black_box(&token).cancelled().now_or_never()),
    }
}

fn deep_value_same_go_routine(depth: usize, iters: u64) {
    let ctx = value_chain(depth);
    iterate(iters, || black_box(&ctx).value::<Missing>().is_none());
}

/// `service`'s timeouts, `alive` at once: one operation arms `alive` with `with_timeout`,
/// then drops them all.
fn timeouts(alive: usize, iters: u64) {
    let root = Context::background();
    let mut scopes = Vec::with_capacity(alive);
    iterate(iters, || ctx_timeouts(&root, &mut scopes, alive));
}

/// The same with what a tokio user picks instead: `tokio::time::timeout`, in place.
fn tokio_timeouts_row(alive: usize, iters: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let _entered = rt.enter();
    let mut timeouts = Vec::with_capacity(alive);
    iterate(iters, || tokio_timeouts(&mut timeouts, alive));
}

/// Runs `iters` operations of `row`; `false` if there is no such row.
fn run(row: &str, iters: u64) -> bool {
    if !rows().iter().any(|r| r == row) {
        return false;
    }
    let (tokio_util, row) = match row.strip_prefix("tokio_util/") {
        Some(rest) => (true, rest),
        None => (false, row),
    };
    let parts: Vec<&str> = row.split('/').collect();
    let number = |part: &str| -> usize {
        let digits = part.rsplit('=').next().unwrap_or_default();
        digits.parse().expect("listed rows have numeric depths")
    };
    match (parts.as_slice(), tokio_util) {
        (["CancelTree", depth, root], false) => {
            cancel_tree(root.trim_start_matches("Root="), number(depth), iters)
        }
        (["CancelTree", depth, root], true) => {
            token_cancel_tree(root.trim_start_matches("Root="), number(depth), iters)
        }
        (["CheckCanceled", check], false) => check_canceled(check, iters),
        (["CheckCanceled", check], true) => token_check_canceled(check, iters),
        (["DeepValueSameGoRoutine", depth], false) => {
            deep_value_same_go_routine(number(depth), iters)
        }
        (["Timeouts", alive], false) => timeouts(number(alive), iters),
        (["Timeouts", alive], true) => tokio_timeouts_row(number(alive), iters),
        #[cfg(feature = "tower")]
        (["Layers", stack], false) => layers(stack.contains("AdmissionLayer"), iters),
        _ => unreachable!("every listed row is handled"),
    }
    true
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [list] if list == "list" => {
            for row in rows() {
                println!("{row}");
            }
            ExitCode::SUCCESS
        }
        [row, iters] => {
            let Ok(iters) = iters.parse::<u64>() else {
                eprintln!("instructions: ITERS must be a whole number, got {iters:?}");
                return ExitCode::from(2);
            };
            if run(row, iters) {
                ExitCode::SUCCESS
            } else {
                eprintln!("instructions: no row {row:?} (`instructions list` prints them)");
                ExitCode::from(2)
            }
        }
        _ => {
            eprintln!("usage: instructions ROW ITERS | instructions list");
            ExitCode::from(2)
        }
    }
}
