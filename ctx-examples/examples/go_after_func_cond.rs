//! Go's `ExampleAfterFunc_cond`: a condition-variable wait that stops when a context ends.
//!
//! A `Condvar` wait knows nothing about contexts, so a request blocked on one (waiting for
//! a pool slot, a batch to fill, a leader to be elected) would outlive its deadline.
//! `after_func` bridges the two: when the context ends it wakes the waiters, and each one
//! checks whether its own context is the one that ended. The after-func takes the mutex
//! before notifying, so the wake-up cannot slip in between the check and the wait.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use ctx_core::{Context, Error};

/// A condition: `ready` under a mutex, and the condvar that announces changes to it.
#[derive(Default)]
struct Cond {
    ready: Mutex<bool>,
    changed: Condvar,
}

/// Waits until `cond` is ready or `ctx` ends, whichever comes first.
fn wait_on_cond(ctx: &Context, cond: &Arc<Cond>) -> Result<(), Error> {
    let waker = Arc::clone(cond);
    let wake_on_done = ctx.after_func(move || {
        // Holding the mutex here means the waiter is either before its check of `ctx`
        // (and will see it done) or inside `wait` (and gets this notification).
        let _ready = waker.ready.lock().unwrap();
        // Several waiters share the condvar, so wake them all; each checks its own ctx.
        waker.changed.notify_all();
    });

    let mut ready = cond.ready.lock().unwrap();
    let result = loop {
        if *ready {
            break Ok(());
        }
        if let Some(err) = ctx.err() {
            break Err(err);
        }
        ready = cond.changed.wait(ready).unwrap();
    };
    drop(ready);
    wake_on_done.stop(); // Go's `defer stopf()`: the wake-up is not needed any more
    result
}

fn main() {
    let cond = Arc::new(Cond::default());

    // Four waiters on a condition that never becomes true: each one's timeout ends its wait.
    let results: Vec<_> = thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let ctx = Context::background().with_timeout(Duration::from_millis(20));
                    let result = wait_on_cond(&ctx, &cond);
                    println!("{}", result.unwrap_err());
                    result
                })
            })
            .collect();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(results, vec![Err(Error::DeadlineExceeded); 4]);

    // A waiter whose condition comes true in time returns Ok.
    let ctx = Context::background().with_timeout(Duration::from_secs(10));
    let result = thread::scope(|s| {
        let waiter = s.spawn(|| wait_on_cond(&ctx, &cond));
        thread::sleep(Duration::from_millis(5));
        *cond.ready.lock().unwrap() = true;
        cond.changed.notify_all();
        waiter.join().unwrap()
    });
    println!("condition met: {result:?}");
    assert_eq!(result, Ok(()));
}
