//! `deadline = <expr>` whose type is not `std::time::Instant` (a `SystemTime`).
use std::time::{Duration, SystemTime};

use ctx_core::{Error, cancellable};

#[cancellable(deadline = SystemTime::now() + Duration::from_secs(5))]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
