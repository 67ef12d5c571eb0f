//! A context parameter taken as `&mut Context`: a context is shared, never mutated.
use ctx_core::{Context, Error, cancellable};

#[cancellable]
fn work(ctx: &mut Context) -> Result<(), Error> {
    ctx.checkpoint()
}

fn main() {
    let mut ctx = Context::background();
    let _ = work(&mut ctx);
}
