//! What the code `#[cancellable]` generates does at run time, the same on every edition: the
//! edition crates (`ui-tests/edition2018`, `ui-tests/edition2021`) run this file too, and
//! `ctx-core/tests/macros.rs` holds the full set on 2024. Time bounds are generous: a test
//! waits seconds for what should take microseconds, and never relies on a race going one way.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Context, Error, cancellable};

/// Long enough that a test failing by timeout is a real failure, not a slow machine.
const PATIENCE: Duration = Duration::from_secs(10);

#[cancellable]
fn spin(ctx: &Context, iterations: &AtomicUsize, started: mpsc::Sender<()>) -> Result<(), Error> {
    let _ = ctx;
    started.send(()).unwrap();
    loop {
        iterations.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_sync_loop_stops_within_one_iteration_of_cancel() {
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    let iterations = Arc::new(AtomicUsize::new(0));
    let (started, is_started) = mpsc::channel();
    let worker = {
        let iterations = iterations.clone();
        thread::spawn(move || spin(&ctx, &iterations, started))
    };
    is_started.recv_timeout(PATIENCE).unwrap();
    thread::sleep(Duration::from_millis(20));
    let at_cancel = iterations.load(Ordering::SeqCst);
    cancel.cancel();
    assert_eq!(worker.join().unwrap(), Err(Error::Cancelled));
    // The iteration running at cancel may finish; the next one checks and returns.
    assert!(iterations.load(Ordering::SeqCst) <= at_cancel + 1);
}

struct DropFlag(Arc<Mutex<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = true;
    }
}

/// Never finishes by itself: only the deadline ends it. Holds what it is given until dropped.
struct Forever<T>(T);

impl<T> Future for Forever<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

#[cancellable(timeout = "30ms")]
async fn wait_forever(dropped: Arc<Mutex<bool>>) -> Result<(), Error> {
    Forever(DropFlag(dropped)).await;
    Ok(())
}

#[test]
fn a_pending_await_is_dropped_on_timeout() {
    let dropped = Arc::new(Mutex::new(false));
    let started = Instant::now();
    let result = futures::executor::block_on(wait_forever(dropped.clone()));
    assert_eq!(result, Err(Error::DeadlineExceeded));
    assert!(*dropped.lock().unwrap(), "the awaited future is dropped");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(30) && took < PATIENCE,
        "{:?}",
        took
    );
}

type Deadline = Option<Instant>;

#[cancellable(timeout = "1h")]
fn outer_sync() -> Result<(Deadline, Deadline), Error> {
    Ok((Context::current().deadline(), inner_sync()?))
}

#[cancellable(timeout = "2h")] // later than the outer one: the outer deadline stands
fn inner_sync() -> Result<Deadline, Error> {
    Ok(Context::current().deadline())
}

#[cancellable(timeout = "1h")]
async fn outer_async(ctx: &Context) -> Result<(Deadline, Deadline, Deadline), Error> {
    let mine = ctx.deadline();
    std::future::ready(()).await;
    let derived = inner_async().await?;
    let accepted = inner_accept(ctx).await?;
    Ok((mine, derived, accepted))
}

#[cancellable]
async fn inner_async() -> Result<Deadline, Error> {
    std::future::ready(()).await; // across a suspension point, too
    Ok(Context::current().deadline())
}

#[cancellable(timeout = "2h")]
async fn inner_accept(ctx: &Context) -> Result<Deadline, Error> {
    Ok(ctx.deadline())
}

#[test]
fn nested_functions_inherit_the_deadline() {
    let (outer, inner) = outer_sync().unwrap();
    assert!(outer.is_some());
    assert_eq!(inner, outer);
    assert_eq!(
        Context::current().deadline(),
        None,
        "restored after the call"
    );

    let (outer, derived, accepted) =
        futures::executor::block_on(outer_async(&Context::background())).unwrap();
    assert!(outer.is_some());
    assert_eq!(derived, outer);
    assert_eq!(accepted, outer);
}

#[test]
fn derive_mode_reads_the_parent_at_the_call_not_at_the_first_poll() {
    let scope = Context::background().with_timeout(Duration::from_secs(60));
    let future = scope.enter(inner_async); // created under `scope`...
    let seen = futures::executor::block_on(future).unwrap(); // ...polled outside it
    assert_eq!(seen, scope.deadline());
}

struct Store {
    rows: Vec<u32>,
}

impl Store {
    #[cancellable]
    async fn push(&mut self, ctx: &Context, row: u32) -> Result<&[u32], Error> {
        ctx.checkpoint()?;
        self.rows.push(std::future::ready(row).await);
        Ok(&self.rows)
    }

    #[cancellable]
    fn bump(&mut self) -> Result<&mut Vec<u32>, Error> {
        for row in &mut self.rows {
            *row += 1;
        }
        Ok(&mut self.rows)
    }
}

#[test]
fn methods_borrow_through_self() {
    let mut store = Store { rows: vec![1] };
    let ctx = Context::background();
    assert_eq!(
        futures::executor::block_on(store.push(&ctx, 2)),
        Ok(&[1, 2][..])
    );
    assert_eq!(store.bump().map(|rows| rows.clone()), Ok(vec![2, 3]));
}

#[cancellable]
async fn pending_body(seen: Arc<Mutex<Option<Context>>>) -> Result<(), Error> {
    *seen.lock().unwrap() = Some(Context::current());
    Forever(()).await;
    Ok(())
}

#[test]
fn the_child_is_cancelled_when_the_future_is_dropped() {
    let seen = Arc::new(Mutex::new(None));
    let mut future = Box::pin(pending_body(seen.clone()));
    let poll = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(Waker::noop()));
    assert!(poll.is_pending());
    let child = seen.lock().unwrap().take().expect("the body ran");
    assert!(!child.is_cancelled(), "alive while the future is");
    drop(future);
    assert_eq!(
        child.err(),
        Some(Error::Cancelled),
        "cancelled when it is dropped"
    );
}
