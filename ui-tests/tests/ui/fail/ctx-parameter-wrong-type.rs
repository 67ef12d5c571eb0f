//! A parameter named `ctx` whose type is not a context.
use ctx_core::{Error, cancellable};

struct Request;

#[cancellable]
fn work(ctx: &Request) -> Result<(), Error> {
    let _ = ctx;
    Ok(())
}

fn main() {
    let _ = work(&Request);
}
