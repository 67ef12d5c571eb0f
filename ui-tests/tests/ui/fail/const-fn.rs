//! `#[cancellable]` on a `const fn`, which cannot derive a context at run time.
use ctx_core::{Error, cancellable};

#[cancellable]
const fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
