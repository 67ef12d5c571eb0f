//! `Context::todo()` in a closure of a `#[cancellable]` async body: derive mode's message.
use ctx_core::{Context, Error, cancellable};

#[cancellable]
async fn refresh(ids: Vec<u32>) -> Result<usize, Error> {
    let check = move |id: &u32| Context::todo().checkpoint().map(|()| *id);
    let ok = ids.iter().map(check).filter(Result::is_ok).count();
    Ok(std::future::ready(ok).await)
}

fn main() {
    let _ = refresh(vec![1]);
}
