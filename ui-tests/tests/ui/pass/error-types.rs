//! Any error type with `From<ctx_core::Error>` works, including through type aliases.
#![deny(warnings)]
#![allow(dead_code)]

use ctx_core::{Error, cancellable};

#[cancellable]
fn io() -> std::io::Result<()> {
    Ok(())
}

#[cancellable]
fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

#[derive(Debug)]
enum AppError {
    Cancelled(Error),
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        AppError::Cancelled(err)
    }
}

type AppResult<T> = Result<T, AppError>;

#[cancellable]
fn custom() -> AppResult<u8> {
    Ok(1)
}

fn main() {
    io().unwrap();
    boxed().unwrap();
    custom().unwrap();
}
