//! `#[cancellable]` on a struct; the struct is still emitted (no follow-on errors).
use ctx_core::cancellable;

#[cancellable]
struct Worker {
    id: u32,
}

fn main() {
    // The struct is still there: no follow-on errors.
    let _ = Worker { id: 1 };
}
