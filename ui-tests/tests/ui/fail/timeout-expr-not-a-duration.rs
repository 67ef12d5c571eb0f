//! `timeout = <expr>` whose type is not `std::time::Duration` (a number of seconds).
use ctx_core::{Error, cancellable};

#[cancellable(timeout = limit_secs)]
fn work(limit_secs: u64) -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work(5);
}
