//! The shapes whose future must capture the parameters' lifetimes: reference arguments,
//! `&self` / `&mut self`, generics with where clauses, `impl Trait` arguments, elided
//! lifetimes in the return type, trait impls. On editions 2018 and 2021 these failed with
//! E0700 ("hidden type captures lifetime that does not appear in bounds") when the rewrite
//! relied on edition 2024's capture rules; the edition crates compile this file on each.
#![deny(warnings)]
#![allow(dead_code)]

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;

use ctx_core::{Context, Error, cancellable};

#[cancellable]
async fn duplicate<T, F>(ctx: &Context, v: &T, keep: F) -> Result<Vec<T>, Error>
where
    T: Clone + Send + Sync,
    F: Fn(&T) -> bool + Send,
{
    let _ = ctx;
    let copy = std::future::ready(v.clone()).await;
    Ok(if keep(v) {
        vec![copy, v.clone()]
    } else {
        Vec::new()
    })
}

struct Counter {
    hits: Vec<u32>,
}

impl Counter {
    #[cancellable]
    async fn bump(&mut self, ctx: &Context) -> Result<&mut Vec<u32>, Error> {
        ctx.checkpoint()?;
        self.hits.push(std::future::ready(1).await);
        Ok(&mut self.hits)
    }

    #[cancellable]
    async fn get(&self) -> Result<u32, Error> {
        Ok(std::future::ready(self.hits.len() as u32).await)
    }

    /// The elided lifetime of the return type is `&self`'s, as in the `async fn`.
    #[cancellable(timeout = "1s")]
    async fn first(&self, _name: &str) -> Result<&u32, Error> {
        std::future::ready(()).await;
        Ok(&self.hits[0])
    }

    #[allow(clippy::needless_arbitrary_self_type)]
    #[cancellable]
    async fn explicit<'a>(self: &'a Self, other: &'a [u32]) -> Result<usize, Error> {
        Ok(self.hits.len() + std::future::ready(other.len()).await)
    }

    #[cancellable]
    async fn pinned(self: Pin<&mut Self>) -> Result<usize, Error> {
        Ok(self.hits.len())
    }

    #[cancellable]
    async fn iter(&self) -> Result<impl Iterator<Item = u32> + '_, Error> {
        std::future::ready(()).await;
        Ok(self.hits.iter().copied())
    }
}

#[cancellable]
async fn written_out(
    name: Cow<'_, str>,
    show: &(dyn Display + Sync),
    boxed: Box<dyn Display + Send + '_>,
) -> Result<String, Error> {
    Ok(format!(
        "{}{}{}",
        std::future::ready(name).await,
        show,
        boxed
    ))
}

#[cancellable]
async fn impl_args(
    shown: impl Display + Send,
    items: &[impl Clone + Sync],
) -> Result<String, Error> {
    Ok(format!(
        "{}{}",
        std::future::ready(shown).await,
        items.len()
    ))
}

#[cancellable]
async fn higher_ranked(f: impl Fn(&str) -> &str + Send, g: fn(&u8) -> &u8) -> Result<u8, Error> {
    let _ = f("x");
    Ok(*g(&std::future::ready(1).await))
}

/// A trait that promises a `Send` future, as tower and axum traits do.
trait Service {
    fn call(
        &self,
        ctx: &Context,
        request: &str,
    ) -> impl Future<Output = Result<usize, Error>> + Send;
}

struct Echo;

impl Service for Echo {
    #[cancellable]
    async fn call(&self, ctx: &Context, request: &str) -> Result<usize, Error> {
        let _ = ctx;
        Ok(std::future::ready(request.len()).await)
    }
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let ctx = Context::background();
    let value = 3u8;
    let mut counter = Counter { hits: Vec::new() };
    assert_send(&duplicate(&ctx, &value, |v| *v > 1));
    assert_eq!(
        futures::executor::block_on(duplicate(&ctx, &value, |v| *v > 1)),
        Ok(vec![3, 3])
    );
    assert_send(&counter.bump(&ctx));
    assert_eq!(
        futures::executor::block_on(counter.bump(&ctx)).map(|hits| hits.len()),
        Ok(1)
    );
    assert_send(&counter.get());
    assert_eq!(futures::executor::block_on(counter.get()), Ok(1));
    assert_eq!(futures::executor::block_on(counter.first("x")), Ok(&1));
    assert_eq!(futures::executor::block_on(counter.explicit(&[1])), Ok(2));
    assert_eq!(
        futures::executor::block_on(Pin::new(&mut counter).pinned()),
        Ok(1)
    );
    assert_eq!(
        futures::executor::block_on(counter.iter()).map(Iterator::count),
        Ok(1)
    );
    let shown = String::from("b");
    assert_eq!(
        futures::executor::block_on(written_out(Cow::Borrowed("a"), &shown, Box::new(&shown))),
        Ok("abb".to_owned())
    );
    assert_eq!(
        futures::executor::block_on(impl_args(1, &[2, 3])),
        Ok("12".to_owned())
    );
    assert_eq!(
        futures::executor::block_on(higher_ranked(|s| s, |x| x)),
        Ok(1)
    );
    assert_send(&Echo.call(&ctx, "abc"));
    assert_eq!(futures::executor::block_on(Echo.call(&ctx, "abc")), Ok(3));
}
