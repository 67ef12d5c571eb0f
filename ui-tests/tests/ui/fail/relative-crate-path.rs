//! A relative `crate = "..."` path.
use ctx_core::{Error, cancellable};

pub mod reexport {
    pub use ctx_core as ctx;
}

#[cancellable(crate = "reexport::ctx")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
