//! The same argument given twice.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "1s", timeout = "2s")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
