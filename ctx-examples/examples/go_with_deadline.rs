//! Go's `ExampleWithDeadline`: a deadline tells blocking work to give up.
//!
//! An operation waiting on something that may never come (a lock, a reply, a slot in a
//! queue) must give up when the request's deadline passes, or it holds the request open
//! forever. `done()` is a future, so it goes in `select!` exactly where Go puts
//! `<-ctx.Done()`. Go's "call cancel even though ctx will expire" needs no line here: the
//! scope cancels when it is dropped.

use std::time::{Duration, Instant};

use ctx_core::{Context, Error};

const SHORT_DURATION: Duration = Duration::from_millis(20);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let never_ready = std::future::pending::<()>();

    let deadline = Instant::now() + SHORT_DURATION;
    let ctx = Context::background().with_deadline(deadline);

    tokio::select! {
        () = never_ready => println!("ready"),
        err = ctx.done() => println!("{err}"),
    }

    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(Instant::now() >= deadline, "a deadline never fires early");
}
