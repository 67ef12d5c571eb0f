//! A zero timeout, which would cancel the function before it starts.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "0s")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
