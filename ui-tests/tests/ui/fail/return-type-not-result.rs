//! A return type that is not a `Result`.
use ctx_core::cancellable;

#[cancellable]
fn count(items: &[u32]) -> usize {
    let mut n = 0;
    for _ in items {
        n += 1;
    }
    n
}

fn main() {
    let _ = count(&[]);
}
