//! Behaviour of `#[cancellable]` and `#[derive(ContextKey)]`: what the generated code does at
//! run time (the ui-tests check what compiles). Time bounds are generous: a test waits up to
//! seconds for what should take microseconds, and never relies on a race going one way.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Context, ContextKey, Error, cancellable};

/// Long enough that a test failing by timeout is a real failure, not a slow machine.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Sync loops stop within one iteration of cancel.

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
fn sync_loop_stops_within_one_iteration_of_cancel() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    let iterations = Arc::new(AtomicUsize::new(0));
    let (started, is_started) = mpsc::channel();
    let worker = {
        let iterations = iterations.clone();
        thread::spawn(move || spin(&ctx, &iterations, started))
    };
    is_started.recv_timeout(PATIENCE).unwrap();
    thread::sleep(Duration::from_millis(20));
    let at_cancel = iterations.load(Ordering::SeqCst);
    scope.cancel();
    assert_eq!(worker.join().unwrap(), Err(Error::Cancelled));
    // The iteration running at cancel may finish; the next one checks and returns.
    assert!(iterations.load(Ordering::SeqCst) <= at_cancel + 1);
}

#[cancellable(checkpoints = "none")]
fn unchecked(ctx: &Context, rounds: u32) -> Result<u32, Error> {
    let _ = ctx;
    let mut n = 0;
    for _ in 0..rounds {
        n += 1;
    }
    Ok(n)
}

#[test]
fn checkpoints_none_inserts_nothing() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    assert_eq!(unchecked(&ctx, 3), Ok(3));
}

#[cancellable]
fn labeled(limit: u32) -> Result<u32, Error> {
    let mut rounds = 0;
    let found = 'outer: loop {
        for i in 0.. {
            rounds += 1;
            if i == limit {
                break 'outer i;
            }
        }
    };
    Ok(found + rounds)
}

#[test]
fn loops_with_labels_and_values_run_normally() {
    assert_eq!(labeled(3), Ok(3 + 4));
}

// ---------------------------------------------------------------------------------------
// A pending `.await` is dropped when the context ends.

struct DropFlag(Arc<Mutex<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = true;
    }
}

#[cancellable]
async fn wait_forever(ctx: &Context, dropped: Arc<Mutex<bool>>) -> Result<(), Error> {
    let _ = ctx;
    let flag = DropFlag(dropped);
    std::future::pending::<()>().await;
    drop(flag);
    Ok(())
}

#[test]
fn pending_await_is_dropped_when_the_context_ends() {
    let dropped = Arc::new(Mutex::new(false));
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        cancel.cancel();
    });
    let result = futures::executor::block_on(wait_forever(&ctx, dropped.clone()));
    canceller.join().unwrap();
    assert_eq!(result, Err(Error::Cancelled));
    assert!(*dropped.lock().unwrap(), "the body's locals are dropped");
}

// On tokio's paused clock with `test-util` (no real waiting; the deadline fires exactly
// when tokio's clock reaches it), on the real one without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn await_race_works_on_tokio_too() {
    #[cancellable(timeout = "30ms")]
    async fn sleepy() -> Result<(), Error> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
    let started = Instant::now();
    let on_tokio = tokio::time::Instant::now();
    assert_eq!(sleepy().await, Err(Error::DeadlineExceeded));
    assert!(started.elapsed() < PATIENCE);
    if cfg!(feature = "test-util") {
        assert_eq!(on_tokio.elapsed(), Duration::from_millis(30));
    }
}

// ---------------------------------------------------------------------------------------
// `timeout = "50ms"` ends a slow body with DeadlineExceeded.

#[cancellable(timeout = "50ms")]
fn slow_sync() -> Result<(), Error> {
    loop {
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn literal_timeout_ends_a_slow_sync_body() {
    let started = Instant::now();
    assert_eq!(slow_sync(), Err(Error::DeadlineExceeded));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(50), "{took:?}");
    assert!(took < PATIENCE, "{took:?}");
}

#[cancellable(timeout = "50ms")]
async fn slow_async() -> Result<(), Error> {
    std::future::pending::<()>().await; // never ends by itself
    Ok(())
}

#[test]
fn literal_timeout_ends_a_slow_async_body() {
    let started = Instant::now();
    assert_eq!(
        futures::executor::block_on(slow_async()),
        Err(Error::DeadlineExceeded)
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[cancellable(timeout = limit)]
fn expr_timeout(limit: Duration) -> Result<Option<Instant>, Error> {
    Ok(Context::current().deadline())
}

#[cancellable(deadline = at)]
fn expr_deadline(at: Instant) -> Result<Option<Instant>, Error> {
    Ok(Context::current().deadline())
}

#[test]
fn expression_timeouts_and_deadlines() {
    let before = Instant::now();
    let deadline = expr_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert!(deadline >= before + Duration::from_secs(60));
    assert!(deadline <= Instant::now() + Duration::from_secs(60));

    let at = Instant::now() + Duration::from_secs(30);
    assert_eq!(expr_deadline(at), Ok(Some(at)));
}

// ---------------------------------------------------------------------------------------
// Derive mode: nested functions see the outer deadline; plain `current()` calls too.

type Deadline = Option<Instant>;

#[cancellable(timeout = "1h")]
fn outer_sync() -> Result<(Deadline, Deadline, Deadline), Error> {
    let mine = Context::current().deadline();
    let (inner, plain) = inner_sync()?;
    Ok((mine, inner, plain))
}

#[cancellable(timeout = "2h")] // later than the outer one: the outer deadline stands
fn inner_sync() -> Result<(Deadline, Deadline), Error> {
    Ok((Context::current().deadline(), plain_deadline()))
}

fn plain_deadline() -> Option<Instant> {
    Context::current().deadline()
}

#[test]
fn nested_sync_functions_see_the_outer_deadline() {
    let (outer, inner, plain) = outer_sync().unwrap();
    assert!(outer.is_some());
    assert_eq!(inner, outer);
    assert_eq!(plain, outer);
    assert_eq!(
        Context::current().deadline(),
        None,
        "restored after the call"
    );
}

#[cancellable(timeout = "1h")]
async fn outer_async() -> Result<(Deadline, Deadline), Error> {
    let mine = Context::current().deadline();
    futures::future::ready(()).await;
    let inner = inner_async().await?;
    Ok((mine, inner))
}

#[cancellable]
async fn inner_async() -> Result<Option<Instant>, Error> {
    futures::future::ready(()).await; // across a suspension point, too
    Ok(Context::current().deadline())
}

#[test]
fn nested_async_functions_see_the_outer_deadline() {
    let (outer, inner) = futures::executor::block_on(outer_async()).unwrap();
    assert!(outer.is_some());
    assert_eq!(inner, outer);
}

#[test]
fn derive_mode_reads_the_parent_at_the_call_not_at_the_first_poll() {
    let scope = Context::background().with_timeout(Duration::from_secs(60));
    let future = scope.enter(inner_async); // created under `scope`...
    let seen = futures::executor::block_on(future).unwrap(); // ...polled outside it
    assert_eq!(seen, scope.deadline());
}

#[cancellable]
fn accept_mode(ctx: &Context) -> Result<(String, String), Error> {
    Ok((ctx.to_string(), Context::current().to_string()))
}

#[test]
fn the_context_parameter_names_the_child() {
    let parent = Context::todo();
    let (param, current) = accept_mode(&parent).unwrap();
    assert_eq!(param, "context.TODO.WithCancel");
    assert_eq!(current, param);
}

// ---------------------------------------------------------------------------------------
// The child is cancelled on every exit: return, early return, `?`, panic; and for async
// bodies on completion, and when the future is dropped.

static STASH: Mutex<Option<Context>> = Mutex::new(None);

fn stash_current() {
    *STASH.lock().unwrap() = Some(Context::current());
}

fn stashed() -> Context {
    STASH.lock().unwrap().take().expect("the body ran")
}

#[derive(Debug, PartialEq)]
enum AppError {
    Ctx(Error),
    Parse,
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        AppError::Ctx(err)
    }
}

#[cancellable]
fn exits(how: &str) -> Result<u32, AppError> {
    stash_current();
    match how {
        "early" => return Ok(1),
        "?" => Err(AppError::Parse)?,
        "panic" => panic!("boom"),
        _ => {}
    }
    Ok(0)
}

/// The tests that use `STASH` run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn the_child_is_cancelled_on_every_exit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for how in ["normal", "early", "?"] {
        let _ = exits(how);
        let child = stashed();
        assert!(child.is_cancelled(), "{how}: {child:?}");
        assert_eq!(child.err(), Some(Error::Cancelled));
    }
    assert_eq!(exits("?"), Err(AppError::Parse));
    let _ = stashed();

    let panicked = std::panic::catch_unwind(|| exits("panic"));
    assert!(panicked.is_err());
    assert!(stashed().is_cancelled(), "panic");
    assert!(!Context::current().is_cancelled(), "current() restored");
}

#[cancellable]
async fn async_exits(fail: bool) -> Result<(), AppError> {
    stash_current();
    futures::future::ready(()).await;
    if fail {
        Err(AppError::Parse)?;
    }
    Ok(())
}

#[test]
fn async_child_is_cancelled_on_completion_and_on_drop() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for fail in [false, true] {
        let mut future = Box::pin(async_exits(fail));
        let _ = futures::executor::block_on(future.as_mut());
        assert!(stashed().is_cancelled(), "completed, fail = {fail}");
    }
}

#[cancellable]
async fn pending_body() -> Result<(), Error> {
    stash_current();
    std::future::pending::<()>().await;
    Ok(())
}

#[test]
fn async_child_is_cancelled_when_the_future_is_dropped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut future = Box::pin(pending_body());
    let waker = std::task::Waker::noop();
    let poll = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    assert!(poll.is_pending());
    let child = stashed();
    assert!(!child.is_cancelled(), "alive while the future is");
    drop(future);
    assert!(child.is_cancelled(), "cancelled when it is dropped");
}

#[cancellable]
fn cancelled_parent(ctx: &Context) -> Result<u32, AppError> {
    let mut n = 0;
    while n < 10 {
        n += 1;
    }
    let _ = ctx;
    Ok(n)
}

#[test]
fn error_types_are_converted_with_from() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    assert_eq!(cancelled_parent(&ctx), Err(AppError::Ctx(Error::Cancelled)));
}

#[cancellable]
fn io_error() -> std::io::Result<()> {
    loop {
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn io_results_work() {
    let scope = Context::background().with_timeout(Duration::from_millis(10));
    let err = scope.enter(io_error).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

// ---------------------------------------------------------------------------------------
// Methods, and futures that stay `Send`.

struct Service {
    calls: AtomicUsize,
}

impl Service {
    #[cancellable(timeout = "10s")]
    async fn handle(&self, ctx: Context, items: Vec<u32>) -> Result<u32, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut sum = 0;
        for item in items {
            sum += ctx.run(async move { item }).await?;
            tokio::task::yield_now().await;
        }
        Ok(sum)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_methods_keep_send_futures() {
    let service = Arc::new(Service {
        calls: AtomicUsize::new(0),
    });
    let task = {
        let service = service.clone();
        tokio::spawn(async move { service.handle(Context::background(), vec![1, 2, 3]).await })
    };
    assert_eq!(task.await.unwrap(), Ok(6));
    assert_eq!(service.calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// #[derive(ContextKey)]

#[derive(ContextKey, Debug, PartialEq)]
struct RequestId(u64);

#[derive(ContextKey, Debug, PartialEq)]
enum Tier {
    Free,
    Paid { seats: u32 },
}

#[derive(ContextKey, Debug, PartialEq)]
struct Tagged<T>(T);

#[test]
fn derived_keys() {
    let ctx = Context::background()
        .with_value(RequestId(7))
        .with_value(Tier::Paid { seats: 3 })
        .with_value(Tagged("x"));
    assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
    assert_eq!(RequestId::from_context(&ctx), Some(&RequestId(7)));
    assert_eq!(ctx.value::<Tier>(), Some(&Tier::Paid { seats: 3 }));
    assert_ne!(ctx.value::<Tier>(), Some(&Tier::Free));
    assert_eq!(ctx.value::<Tagged<&str>>(), Some(&Tagged("x")));
    assert_eq!(ctx.value::<Tagged<u8>>(), None);
    assert_eq!(RequestId::NAME, "RequestId");
    assert_eq!(
        ctx.to_string(),
        "context.Background.WithValue(RequestId).WithValue(Tier).WithValue(Tagged)"
    );
}
