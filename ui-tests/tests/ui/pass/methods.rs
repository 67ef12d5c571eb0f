//! Inherent and trait-impl methods with every receiver; trait default methods; generics,
//! lifetimes, where clauses, `impl Trait` in arguments and return, `unsafe fn`.
#![deny(warnings)]
#![allow(dead_code)]

use std::fmt::Display;
use std::sync::Arc;

use ctx_core::{Context, Error, cancellable};

struct Store {
    rows: Vec<u32>,
}

impl Store {
    #[cancellable]
    fn by_value(self) -> Result<Vec<u32>, Error> {
        Ok(self.rows)
    }

    #[cancellable]
    fn by_ref(&self, ctx: &Context) -> Result<usize, Error> {
        let _ = ctx;
        Ok(self.rows.len())
    }

    #[cancellable(timeout = "1s")]
    fn by_mut(&mut self) -> Result<&mut Vec<u32>, Error> {
        for row in &mut self.rows {
            *row += 1;
        }
        Ok(&mut self.rows)
    }

    #[cancellable]
    fn by_arc(self: Arc<Self>) -> Result<usize, Error> {
        Ok(self.rows.len())
    }

    #[cancellable]
    async fn async_by_ref(&self) -> Result<u32, Error> {
        let first = std::future::ready(self.rows[0]).await;
        Ok(first)
    }

    #[cancellable]
    async fn async_by_mut(&mut self, ctx: &Context) -> Result<&mut Vec<u32>, Error> {
        ctx.checkpoint()?;
        self.rows.push(std::future::ready(1).await);
        Ok(&mut self.rows)
    }

    #[cancellable]
    async fn async_by_arc(self: Arc<Self>) -> Result<usize, Error> {
        Ok(self.rows.len())
    }

    #[cancellable]
    fn iter(&self) -> Result<impl Iterator<Item = u32> + '_, Error> {
        Ok(self.rows.iter().copied())
    }

    #[cancellable]
    async fn async_iter(&self) -> Result<impl Iterator<Item = u32> + '_, Error> {
        std::future::ready(()).await;
        Ok(self.rows.iter().copied())
    }
}

trait Handler {
    fn handle(&self, ctx: &Context, input: u32) -> Result<u32, Error>;
    async fn handle_async(&self, input: u32) -> Result<u32, Error>;

    #[cancellable]
    fn with_default(&self, input: u32) -> Result<u32, Error> {
        self.handle(&Context::current(), input)
    }

    #[cancellable(timeout = "1m")]
    async fn async_default(&self, input: u32) -> Result<u32, Error> {
        self.handle_async(input).await
    }
}

struct Doubler;

impl Handler for Doubler {
    #[cancellable]
    fn handle(&self, ctx: &Context, input: u32) -> Result<u32, Error> {
        ctx.checkpoint()?;
        Ok(input * 2)
    }

    #[cancellable]
    async fn handle_async(&self, input: u32) -> Result<u32, Error> {
        Ok(std::future::ready(input * 2).await)
    }
}

#[cancellable]
fn generic<'a, T, U: Clone>(
    items: &'a [T],
    extra: U,
    shown: impl Display,
) -> Result<Vec<&'a T>, Error>
where
    T: PartialEq<U>,
{
    let _ = shown.to_string();
    let mut found = Vec::new();
    for item in items {
        if *item == extra.clone() {
            found.push(item);
        }
    }
    Ok(found)
}

#[cancellable]
fn result_of_impl<T: Clone + 'static>(items: Vec<T>) -> Result<impl Iterator<Item = T>, Error> {
    Ok(items.into_iter())
}

#[cancellable]
async fn async_generic<T: Send + Clone>(items: &[T], ctx: &Context) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for item in items {
        out.push(ctx.run(std::future::ready(item.clone())).await?);
    }
    Ok(out)
}

#[cancellable]
async fn async_impl_args(shown: impl Display + Send) -> Result<String, Error> {
    Ok(std::future::ready(shown.to_string()).await)
}

/// # Safety
/// `ptr` must be valid.
#[cancellable]
unsafe fn read(ptr: *const u32) -> Result<u32, Error> {
    // SAFETY: the caller promises `ptr` is valid.
    Ok(unsafe { *ptr })
}

/// # Safety
/// `ptr` must be valid.
#[cancellable]
async unsafe fn read_async(ptr: *const u32) -> Result<u32, Error> {
    // SAFETY: the caller promises `ptr` is valid.
    Ok(unsafe { *ptr })
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let mut store = Store { rows: vec![1, 2] };
    assert_eq!(store.by_mut().unwrap(), &vec![2, 3]);
    assert_eq!(store.iter().unwrap().sum::<u32>(), 5);
    assert_send(&store.async_by_ref());
    assert_eq!(Doubler.with_default(2), Ok(4));
    assert_eq!(futures::executor::block_on(Doubler.async_default(3)), Ok(6));
    assert_eq!(result_of_impl(vec![1, 2]).unwrap().count(), 2);
    assert_eq!(generic(&[1, 2, 1], 1, "x").unwrap().len(), 2);
    let x = 7;
    // SAFETY: `&x` is valid.
    assert_eq!(unsafe { read(&x) }, Ok(7));
    assert_send(&async_generic(&[1], &Context::background()));
    let _ = read_async;
    assert_eq!(
        futures::executor::block_on(async_impl_args(1)),
        Ok("1".to_owned())
    );
}
