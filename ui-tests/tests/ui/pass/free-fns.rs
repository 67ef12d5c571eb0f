//! Free functions, sync and async, in accept and derive mode, with every argument.
#![deny(warnings)]
#![allow(dead_code)]
// The loops below are there for their shapes, not their sense.
#![allow(
    clippy::never_loop,
    clippy::while_let_on_iterator,
    clippy::let_unit_value
)]

use std::time::{Duration, Instant};

use ctx_core::{Context, Error, cancellable};

#[cancellable]
fn derive_mode(n: u32) -> Result<u32, Error> {
    Ok(n)
}

#[cancellable]
fn accept_ref(ctx: &Context, n: u32) -> Result<u32, Error> {
    let _: &Context = ctx;
    Ok(n)
}

#[cancellable]
fn accept_owned(mut ctx: Context) -> Result<Context, Error> {
    ctx = ctx.with_cancel().context().clone();
    Ok(ctx)
}

#[cancellable]
fn accept_qualified(parent: &ctx_core::Context) -> Result<(), Error> {
    parent.checkpoint()
}

#[cancellable(ctx = request)]
fn named(id: u64, request: &Context, other: &Context) -> Result<u64, Error> {
    let _ = (request, other);
    Ok(id)
}

#[cancellable(timeout = "1m30s")]
fn literal_timeout() -> Result<(), Error> {
    Ok(())
}

#[cancellable(timeout = "1.5h", checkpoints = "loops")]
fn fractional_timeout() -> Result<(), Error> {
    Ok(())
}

#[cancellable(timeout = Duration::from_millis(limit_ms))]
fn expr_timeout(limit_ms: u64) -> Result<(), Error> {
    Ok(())
}

#[cancellable(deadline = at, checkpoints = "awaits")]
fn expr_deadline(at: Instant) -> Result<(), Error> {
    Ok(())
}

#[cancellable(checkpoints = "none")]
fn no_checkpoints(items: &[u32]) -> Result<u32, Error> {
    let mut sum = 0;
    for item in items {
        sum += item;
    }
    Ok(sum)
}

#[cancellable(checkpoints = "all")]
fn every_loop(items: &[u32]) -> Result<u32, Error> {
    let mut sum = 0;
    'rows: for item in items {
        let mut i = 0;
        while i < *item {
            i += 1;
            if i == 3 {
                continue 'rows;
            }
        }
        let mut it = items.iter();
        while let Some(x) = it.next() {
            sum += x;
        }
        sum += loop {
            break 1;
        };
    }
    let closure = || loop {
        return 5; // a closure's own return: left alone
    };
    sum += closure();
    Ok(sum)
}

#[cancellable]
fn diverges(ctx: &Context) -> Result<(), Error> {
    loop {
        ctx.checkpoint()?;
    }
}

#[cancellable]
async fn async_derive(n: u32) -> Result<u32, Error> {
    let x = async { n }.await;
    Ok(x)
}

#[cancellable(timeout = "10s")]
async fn async_accept(
    ctx: &Context,
    name: String,
    (a, b): (u32, u32),
    _: u8,
) -> Result<String, Error> {
    let ready = std::future::ready(a + b).await;
    let _ = ctx.checkpoint()?;
    Ok(format!("{name}{ready}"))
}

#[cancellable]
async fn async_diverges(ctx: Context) -> Result<(), Error> {
    loop {
        ctx.done().await;
    }
}

mod reexport {
    pub use ctx_core as ctx;
}

#[cancellable(crate = "crate::reexport::ctx")]
fn through_a_reexport() -> Result<(), Error> {
    Ok(())
}

#[cancellable(crate = "::ctx_core")]
fn absolute_crate() -> Result<(), Error> {
    Ok(())
}

/// Generated bindings are hygienic: the body's names never meet them.
#[cancellable]
fn hygiene(__ctx_child: u32, __ctx_scope: u32) -> Result<u32, Error> {
    let __ctx_return = __ctx_child + __ctx_scope;
    for __ctx_err in 0..1 {
        let _ = __ctx_err;
    }
    Ok(__ctx_return)
}

#[cancellable]
async fn async_hygiene(__ctx_child: u32, __ctx_scope: u32) -> Result<u32, Error> {
    let __ctx_value = std::future::ready(__ctx_child).await;
    Ok(__ctx_value + __ctx_scope)
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let ctx = Context::background();
    assert_eq!(derive_mode(1), Ok(1));
    assert_eq!(hygiene(1, 2), Ok(3));
    assert_eq!(futures::executor::block_on(async_hygiene(1, 2)), Ok(3));
    assert_eq!(accept_ref(&ctx, 2), Ok(2));
    assert_send(&async_derive(1));
    assert_send(&async_accept(&ctx, String::new(), (1, 2), 0));
    assert_send(&async_diverges(ctx.clone()));
    assert_eq!(
        futures::executor::block_on(async_accept(&ctx, "n".into(), (1, 2), 0)),
        Ok("n3".to_owned())
    );
}
