//! `timeout` and `deadline` given together: keep one.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "1s", deadline = std::time::Instant::now())]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
