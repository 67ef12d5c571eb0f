//! `allow_detached = true`: the opt-outs are bare words.
use ctx_core::{Context, Error, cancellable};

#[cancellable(allow_detached = true)]
fn job() -> Result<bool, Error> {
    Ok(Context::background().is_cancelled())
}

fn main() {
    let _ = job();
}
