//! `Context::default()` in three spellings inside a `#[cancellable]` body: each is a root.
use ctx_core::{Context, Error, cancellable};

#[cancellable]
fn spawn_all(parent: &Context) -> Result<usize, Error> {
    let a = Context::default();
    let b = <Context as Default>::default();
    let c: Context = Default::default();
    let _ = parent;
    Ok([a, b, c].len())
}

fn main() {
    let _ = spawn_all(&Context::background());
}
