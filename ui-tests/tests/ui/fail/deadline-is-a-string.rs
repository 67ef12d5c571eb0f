//! `deadline = "5s"`: a duration string where an `Instant` goes.
use ctx_core::{Error, cancellable};

#[cancellable(deadline = "5s")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
