//! A negative timeout.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "-1s")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
