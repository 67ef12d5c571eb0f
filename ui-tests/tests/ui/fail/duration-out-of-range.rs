//! A timeout longer than Go's longest duration (about 292 years).
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "3000000h")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
