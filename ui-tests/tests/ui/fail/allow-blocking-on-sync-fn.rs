//! `allow_blocking` on a sync function, where blocking is never reported: it allows nothing.
use std::time::Duration;

use ctx_core::{Error, cancellable};

#[cancellable(allow_blocking)]
fn nap() -> Result<(), Error> {
    std::thread::sleep(Duration::from_millis(1));
    Ok(())
}

fn main() {
    let _ = nap();
}
