//! `ctx = name` with a name no parameter has (a typo): "did you mean".
use ctx_core::{Context, Error, cancellable};

#[cancellable(ctx = reqest)]
fn work(request: &Context, id: u32) -> Result<u32, Error> {
    let _ = request;
    Ok(id)
}

fn main() {
    let _ = work(&Context::background(), 1);
}
