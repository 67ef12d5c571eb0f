use ctx_core::{Error, cancellable};

#[cancellable(timeot = "1s")]
fn work() -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = work();
}
