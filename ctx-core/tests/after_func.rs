//! After-funcs: one whose handle was dropped still runs when its sole scope ends, a stopped
//! one never does, and a blocked one delays no other (the after-func pool grows around it).

use std::sync::{Arc, Barrier, mpsc};

use ctx_core::Context;

mod support;

use support::{PROMPTLY, Tag};

// -----------------------------------------------------------------------------------------
// Defect 6: an after-func whose handle was dropped did not run when its scope, the sole
// remaining reference, was cancelled or dropped.

#[test]
fn an_after_func_with_a_dropped_handle_runs_when_its_sole_scope_ends() {
    type End = fn(ctx_core::CancelScope);
    let ends: [(&str, End); 3] = [
        ("cancel", |scope| scope.cancel()),
        ("drop", drop),
        ("handle drop", |scope| drop(scope.into_parts().1)),
    ];
    for (how, end) in ends {
        for through_value in [false, true] {
            let scope = Context::background().with_cancel();
            let (tx, rx) = mpsc::channel();
            let after = if through_value {
                scope
                    .with_value(Tag)
                    .after_func(move || tx.send(()).unwrap())
            } else {
                scope.after_func(move || tx.send(()).unwrap())
            };
            drop(after); // dropping does not stop it
            end(scope);
            assert_eq!(
                rx.recv_timeout(PROMPTLY),
                Ok(()),
                "after {how} (through a value child: {through_value}) the after-func never ran"
            );
        }
    }
}

#[test]
fn a_stopped_after_func_never_runs_when_its_sole_scope_ends() {
    let scope = Context::background().with_cancel();
    let after = scope.after_func(|| panic!("ran after a winning stop"));
    assert!(after.stop());
    drop(after);
    drop(scope);
    // A later one on a fresh scope runs: the pool is fine.
    let scope = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    drop(scope.after_func(move || tx.send(()).unwrap()));
    drop(scope);
    assert_eq!(rx.recv_timeout(PROMPTLY), Ok(()));
}

// -----------------------------------------------------------------------------------------
// After-funcs under load (defect 7): they run on a pool, so a burst starts no thread each,
// and a blocked one delays no other.

#[test]
fn a_blocked_after_func_delays_no_other() {
    let release = Arc::new(Barrier::new(5));
    let scopes: Vec<_> = (0..4)
        .map(|_| Context::background().with_cancel())
        .collect();
    let blocked: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let release = release.clone();
            scope.after_func(move || {
                release.wait();
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    let last = Context::background().with_cancel();
    let _after = last.after_func(move || tx.send(()).unwrap());
    drop(scopes); // four after-funcs block until all four run at once
    last.cancel();
    assert_eq!(
        rx.recv_timeout(PROMPTLY),
        Ok(()),
        "waited behind blocked after-funcs"
    );
    release.wait(); // all four were running at once, each on a worker of its own
    drop(blocked);
}
