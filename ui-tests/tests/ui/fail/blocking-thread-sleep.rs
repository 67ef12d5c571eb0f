//! `std::thread::sleep` in an async `#[cancellable]` body blocks the executor thread.
use std::thread;
use std::time::Duration;

use ctx_core::{Error, cancellable};

#[cancellable(timeout = "5s")]
async fn poll_jobs(rounds: u32) -> Result<u32, Error> {
    let mut seen = 0;
    for _ in 0..rounds {
        seen += std::future::ready(1).await;
        std::thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(100));
    Ok(seen)
}

fn main() {
    let _ = poll_jobs(3);
}
