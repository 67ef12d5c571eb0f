//! `checkpoints = loops` without the quotes its values take.
use ctx_core::{Error, cancellable};

#[cancellable(checkpoints = loops)]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
