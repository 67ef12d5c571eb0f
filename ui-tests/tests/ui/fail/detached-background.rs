//! `Context::background()` inside a `#[cancellable]` body: the caller's deadline is lost.
use ctx_core::{Context, Error, cancellable};

fn fetch(ctx: &Context, id: u32) -> Result<u32, Error> {
    ctx.checkpoint()?;
    Ok(id)
}

#[cancellable(timeout = "1s")]
fn lookup(ctx: &Context, id: u32) -> Result<u32, Error> {
    let _ = ctx;
    fetch(&ctx_core::Context::background(), id)
}

fn main() {
    let _ = lookup(&Context::background(), 1);
}
