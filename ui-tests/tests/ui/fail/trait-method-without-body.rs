//! `#[cancellable]` on a trait method declaration without a body.
use ctx_core::{Error, cancellable};

trait Job {
    #[cancellable]
    fn run(&self) -> Result<(), Error>;
}

fn main() {}
