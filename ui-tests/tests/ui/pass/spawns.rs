//! What the spawn check lets through: `ctx_core::spawn` / `ctx_core::spawn_blocking` (the
//! task runs under the function's context), tokio's spawns with `allow_detached` (work meant
//! to outlive the call), tokio's spawns that carry a context by hand (`ctx.scope(fut)`,
//! `ctx.enter(f)`), in nested functions (other functions), and a bare `spawn` imported
//! outside the function (it may well be ctx_core's: the check cannot tell).
#![deny(warnings)]
#![allow(dead_code)]

use std::time::Duration;

use ctx_core::{Context, Error, cancellable, spawn_blocking};

/// The fix: the task sees the function's deadline.
#[cancellable(timeout = "1h")]
async fn carried() -> Result<(bool, bool), Error> {
    let task = ctx_core::spawn(async { Context::current().deadline().is_some() });
    let blocking = spawn_blocking(|| Context::current().deadline().is_some());
    Ok((task.await.unwrap_or(false), blocking.await.unwrap_or(false)))
}

/// A context carried by hand: what `ctx_core::spawn` does.
#[cancellable(timeout = "1h")]
async fn by_hand(ctx: &Context) -> Result<(bool, bool), Error> {
    let task = tokio::spawn(ctx.scope(async { Context::current().deadline().is_some() }));
    let ctx = ctx.clone();
    let blocking =
        tokio::task::spawn_blocking(move || ctx.enter(|| Context::current().deadline().is_some()));
    Ok((task.await.unwrap_or(false), blocking.await.unwrap_or(false)))
}

/// Work meant to outlive the call.
#[cancellable(timeout = "1h", allow_detached)]
async fn fire_and_forget() -> Result<bool, Error> {
    let task = tokio::spawn(async { Context::current().deadline().is_none() });
    let blocking = tokio::task::spawn_blocking(|| 1);
    let _ = blocking.await;
    Ok(task.await.unwrap_or(false))
}

/// A nested function is another function: its spawns are its own business.
#[cancellable]
async fn with_helper() -> Result<u32, Error> {
    fn start() -> tokio::task::JoinHandle<u32> {
        tokio::spawn(async { 7 })
    }
    Ok(start().await.unwrap_or(0))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(carried().await, Ok((true, true)));
        assert_eq!(fire_and_forget().await, Ok(true));
        assert_eq!(by_hand(&Context::background()).await, Ok((true, true)));
        assert_eq!(with_helper().await, Ok(7));
        tokio::time::sleep(Duration::from_millis(1)).await;
    });
}
