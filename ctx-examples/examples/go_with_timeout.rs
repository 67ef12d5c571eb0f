//! Go's `ExampleWithTimeout`: a timeout tells blocking work to give up.
//!
//! The same as a deadline, counted from now: the usual way to bound one call in a service.
//! Where Go selects on the work and `ctx.Done()`, `Context::run` races them for you and,
//! when the timeout wins, drops the work on the spot, so nothing is left running. A plain
//! thread can do the same without a runtime: `wait` blocks until the context ends.

use std::thread;
use std::time::Duration;

use ctx_core::{Context, Error};

const SHORT_DURATION: Duration = Duration::from_millis(20);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let never_ready = std::future::pending::<()>();

    let ctx = Context::background().with_timeout(SHORT_DURATION);
    match ctx.run(never_ready).await {
        Ok(()) => println!("ready"),
        Err(err) => println!("{err}"), // prints "context deadline exceeded"
    }
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));

    // Blocking code on a thread: the deadline is fired by ctx's driver, no runtime needed.
    let ctx = Context::background().with_timeout(SHORT_DURATION);
    let worker = {
        let ctx = ctx.context().clone();
        thread::spawn(move || ctx.wait())
    };
    let err = worker.join().unwrap();
    println!("blocking thread: {err}");
    assert_eq!(err, Error::DeadlineExceeded);
}
