use ctx_core::cancellable;

#[cancellable]
struct Worker {
    id: u32,
}

fn main() {
    // The struct is still there: no follow-on errors.
    let _ = Worker { id: 1 };
}
