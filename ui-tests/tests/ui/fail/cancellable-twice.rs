//! `#[cancellable]` given twice on one function.
use ctx_core::{Error, cancellable};

#[cancellable(timeout = "1s")]
#[cancellable(checkpoints = "loops")]
fn work(items: &[u32]) -> Result<u32, Error> {
    let mut sum = 0;
    for item in items {
        sum += item;
    }
    Ok(sum)
}

fn main() {
    let _ = work(&[1]);
}
