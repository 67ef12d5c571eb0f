//! An unknown argument (a typo of `timeout`): "did you mean".
use ctx_core::{Error, cancellable};

#[cancellable(timeot = "1s")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
