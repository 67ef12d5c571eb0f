//! A `#[cancellable]` function with no return type, so no way to report cancellation.
use ctx_core::cancellable;

#[cancellable]
fn work(items: &[u32]) {
    for _ in items {}
}

fn main() {
    work(&[]);
}
