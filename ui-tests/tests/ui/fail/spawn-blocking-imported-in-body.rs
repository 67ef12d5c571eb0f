//! `spawn_blocking` bound by a `use` in the body (the check reads the body's own imports), and
//! `task::spawn_blocking` inside a closure, which is this function's work too.
use ctx_core::{Error, cancellable};

#[cancellable]
async fn hash_all(files: Vec<String>) -> Result<usize, Error> {
    use tokio::task::spawn_blocking;
    let first = spawn_blocking(|| 1);
    let spawn_each = |file: String| tokio::task::spawn_blocking(move || file.len());
    let handles: Vec<_> = files.into_iter().map(spawn_each).collect();
    let _ = first.await;
    Ok(handles.len())
}

fn main() {
    let _ = hash_all(Vec::new());
}
