use ctx_core::{Error, cancellable};

#[cancellable]
const fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
