//! `ctx.wait()` in an async `#[cancellable]` body blocks the thread until the context ends.
use ctx_core::{Context, Error, cancellable};

#[cancellable]
async fn until_shutdown(ctx: &Context) -> Result<(), Error> {
    let why = ctx.wait();
    Err(why)
}

fn main() {
    let _ = until_shutdown(&Context::background());
}
