//! An unknown `checkpoints` value.
use ctx_core::{Error, cancellable};

#[cancellable(checkpoints = "loop")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
