//! A plain `fn` returning `impl Future`: its body only builds the future; write `async fn`.
use std::future::Future;

use ctx_core::{Error, cancellable};

#[cancellable(timeout = "1s")]
fn fetch(id: u32) -> impl Future<Output = Result<u32, Error>> {
    async move { Ok(id) }
}

fn main() {
    let _ = fetch(1);
}
