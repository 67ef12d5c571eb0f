//! `timeout = 30`: a number without a unit.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = 30)]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
