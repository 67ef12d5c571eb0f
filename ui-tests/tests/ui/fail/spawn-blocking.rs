//! `tokio::task::spawn_blocking` in a `#[cancellable]` body (a sync one too): the closure runs
//! on the blocking pool without the function's context.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "2s")]
fn checksum(data: Vec<u8>) -> Result<(), Error> {
    let _task = tokio::task::spawn_blocking(move || data.iter().map(|b| u32::from(*b)).sum::<u32>());
    Ok(())
}

fn main() {
    let _ = checksum(vec![1, 2]);
}
