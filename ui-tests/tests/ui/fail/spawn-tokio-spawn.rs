//! `tokio::spawn` in a `#[cancellable]` body: the task runs without the function's context.
use ctx_core::{Context, Error, cancellable};

#[cancellable(timeout = "2s")]
async fn refresh(ctx: &Context, ids: Vec<u32>) -> Result<usize, Error> {
    let n = ids.len();
    let task = tokio::spawn(async move { ids.into_iter().sum::<u32>() });
    let _ = ctx;
    let _ = task.await;
    Ok(n)
}

fn main() {
    let _ = refresh(&Context::background(), vec![1]);
}
