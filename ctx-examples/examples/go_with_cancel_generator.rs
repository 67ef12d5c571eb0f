//! Go's `ExampleWithCancel`: a generator stopped by cancel, with no leak.
//!
//! A task that produces values for a consumer must stop when the consumer is done, or it
//! sits blocked on a full channel forever: a leaked task per request adds up in a service.
//! Go's generator selects on `ctx.Done()` around every send; here `Context::run` does that
//! for the whole producer, dropping it the moment the context ends. The consumer still holds
//! the channel when it cancels, so only the cancel can have stopped the generator, and
//! joining its task proves that it did.

use ctx_core::{Context, Error};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Sends 1, 2, 3, ... until `ctx` ends; the task's output says why it stopped.
fn generate(ctx: &Context) -> (mpsc::Receiver<u64>, JoinHandle<Result<(), Error>>) {
    let (tx, rx) = mpsc::channel(1);
    let ctx = ctx.clone();
    let task = tokio::spawn(async move {
        ctx.run(async move {
            for n in 1.. {
                if tx.send(n).await.is_err() {
                    return; // the consumer went away
                }
            }
        })
        .await
    });
    (rx, task)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let scope = Context::background().with_cancel();
    let (mut numbers, generator) = generate(&scope);

    while let Some(n) = numbers.recv().await {
        println!("{n}");
        if n == 5 {
            break;
        }
    }
    scope.cancel(); // Go's `defer cancel()`; letting `scope` drop does the same

    let stopped = generator.await.expect("the generator did not panic");
    println!("generator stopped: {}", stopped.unwrap_err());
    assert_eq!(stopped, Err(Error::Cancelled));
    drop(numbers); // still open until now: the cancel alone stopped the generator
}
