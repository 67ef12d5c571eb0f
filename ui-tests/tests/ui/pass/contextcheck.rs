//! What the context-chain and blocking checks let through: detaching on purpose (with
//! `without_cancel()` or `allow_detached`), roots outside the function's own code, blocking
//! in sync bodies and in closures, and `allow_blocking`.
#![deny(warnings)]
#![allow(dead_code)]

use std::time::Duration;

use ctx_core::{Context, Error, cancellable};

/// Detaching on purpose keeps the values and drops the deadline and cancellation.
#[cancellable(timeout = "1h")]
fn audit(ctx: &Context) -> Result<bool, Error> {
    let shielded = ctx.without_cancel();
    Ok(shielded.deadline().is_none() && ctx.deadline().is_some())
}

#[cancellable(allow_detached)]
fn background_job() -> Result<bool, Error> {
    let root = Context::background();
    let todo = Context::todo();
    Ok(!root.is_cancelled() && !todo.is_cancelled())
}

/// A nested function is another function: its roots are its own business.
#[cancellable]
fn with_helper() -> Result<bool, Error> {
    fn fresh() -> Context {
        Context::background()
    }
    Ok(fresh().deadline().is_none())
}

/// `Default::default()` of another type, and the function's own context, are fine.
#[cancellable]
fn defaults(ctx: Context) -> Result<u32, Error> {
    let n: u32 = Default::default();
    let current = Context::current();
    let _ = (ctx, current);
    Ok(n)
}

/// A sync body may block: its loops are checkpoints.
#[cancellable(timeout = "1s")]
fn sync_sleeps() -> Result<(), Error> {
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    Context::current().wait_timeout(Duration::from_millis(1));
    Ok(())
}

/// A closure in an async body may run on a blocking thread.
#[cancellable]
async fn offloads() -> Result<u32, Error> {
    let work = move || {
        std::thread::sleep(Duration::from_millis(1));
        7
    };
    let handle = std::thread::spawn(work);
    std::future::ready(()).await;
    Ok(handle.join().unwrap_or(0))
}

#[cancellable(allow_blocking)]
async fn blocks_on_purpose(ctx: &Context) -> Result<(), Error> {
    std::thread::sleep(Duration::from_millis(1));
    ctx.wait_timeout(Duration::from_millis(1));
    Ok(())
}

#[cancellable(allow_blocking, allow_detached)]
async fn both() -> Result<(), Error> {
    std::thread::sleep(Duration::from_millis(1));
    let _ = Context::background();
    Ok(())
}

fn main() {
    assert_eq!(audit(&Context::background()), Ok(true));
    assert_eq!(background_job(), Ok(true));
    assert_eq!(with_helper(), Ok(true));
    assert_eq!(defaults(Context::background()), Ok(0));
    assert_eq!(sync_sleeps(), Ok(()));
    assert_eq!(futures::executor::block_on(offloads()), Ok(7));
    assert_eq!(
        futures::executor::block_on(blocks_on_purpose(&Context::background())),
        Ok(())
    );
    assert_eq!(futures::executor::block_on(both()), Ok(()));
}
