//! Two context parameters and no `ctx = name` to say which is the parent.
use ctx_core::{Context, Error, cancellable};

#[cancellable]
fn work(request: &Context, server: &Context) -> Result<(), Error> {
    let _ = (request, server);
    Ok(())
}

fn main() {
    let ctx = Context::background();
    let _ = work(&ctx, &ctx);
}
