//! Under `#[async_trait]`: the macro finds the `Box::pin(async move { .. })` body and runs it
//! under the child, keeping the boxed future `Send`.
#![deny(warnings)]
#![allow(dead_code)]

use async_trait::async_trait;
use ctx_core::{Context, Error, cancellable};

#[async_trait]
trait Repo {
    async fn get(&self, ctx: &Context, id: u32) -> Result<String, Error>;
    async fn count(&self) -> Result<usize, Error>;
}

struct Memory(Vec<String>);

#[async_trait]
impl Repo for Memory {
    #[cancellable(timeout = "5s")]
    async fn get(&self, ctx: &Context, id: u32) -> Result<String, Error> {
        ctx.checkpoint()?;
        let row = std::future::ready(self.0[id as usize].clone()).await;
        Ok(row)
    }

    #[cancellable]
    async fn count(&self) -> Result<usize, Error> {
        let mut n = 0;
        for _ in &self.0 {
            n += 1;
        }
        Ok(n)
    }
}

fn main() {
    let repo = Memory(vec!["a".into()]);
    let ctx = Context::background();
    assert_eq!(
        futures::executor::block_on(repo.get(&ctx, 0)),
        Ok("a".to_owned())
    );
    assert_eq!(futures::executor::block_on(repo.count()), Ok(1));
}
