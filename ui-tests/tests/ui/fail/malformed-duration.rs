//! A timeout string with an unknown unit (`"1x"`).
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "1x")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    // The function is still there: no follow-on "cannot find function" error.
    let _ = work();
}
