//! tokio's spawns in each spelling the check reads: a leading `::`, `tokio::task::spawn`,
//! `task::spawn` after `use tokio::task;`, a turbofish, and a spawn passed as a function.
use std::future::Future;

use ctx_core::{Error, cancellable};
use tokio::task;

#[cancellable]
async fn fan_out<F>(jobs: Vec<F>) -> Result<usize, Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let first = ::tokio::spawn(async {});
    let second = tokio::task::spawn(async {});
    let third = task::spawn(async {});
    let fourth = tokio::spawn::<_>(async {});
    let rest: Vec<_> = jobs.into_iter().map(tokio::spawn).collect();
    let _ = (first.await, second.await, third.await, fourth.await);
    Ok(rest.len())
}

fn main() {
    let _ = fan_out::<std::future::Ready<()>>(Vec::new());
}
