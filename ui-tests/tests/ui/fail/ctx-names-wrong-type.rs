//! `ctx = name` naming a parameter that is not a context.
use ctx_core::{Error, cancellable};

#[cancellable(ctx = id)]
fn work(id: u32) -> Result<u32, Error> {
    Ok(id)
}

fn main() {
    let _ = work(1);
}
