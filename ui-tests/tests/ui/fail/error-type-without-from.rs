//! An error type without `From<ctx_core::Error>`.
use ctx_core::cancellable;

#[derive(Debug)]
enum AppError {
    NotFound,
}

#[cancellable]
async fn find(ids: Vec<u32>) -> Result<u32, AppError> {
    for id in ids {
        if id == 7 {
            return Ok(id);
        }
    }
    Err(AppError::NotFound)
}

fn main() {
    let _ = find(vec![]);
}
