//! Helpers shared by the tests of the tree's behaviour with user code: a counting waker that
//! may panic, polling a `Done` once, waiting (bounded) for a condition, a value key.
#![allow(dead_code, reason = "each test file uses a part of these")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Context, ContextKey, Error};

/// Generous bound for "this should happen promptly" on a loaded 2-core machine.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// A waker that counts its wakes, and panics on them if asked to.
pub struct Counting {
    wakes: AtomicUsize,
    panics: bool,
}

impl Counting {
    pub fn new(panics: bool) -> Arc<Counting> {
        Arc::new(Counting {
            wakes: AtomicUsize::new(0),
            panics,
        })
    }
    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if self.panics {
            panic!("a waker panics on purpose");
        }
    }
}

/// Polls `done` once with `waker`, which registers it (or replaces the registered one).
pub fn poll(done: &mut ctx_core::Done, waker: &Waker) -> std::task::Poll<Error> {
    std::future::Future::poll(
        std::pin::Pin::new(done),
        &mut TaskContext::from_waker(waker),
    )
}

/// Registers `waker` on `ctx`'s end by polling a `Done` once; keep the `Done`.
pub fn register(ctx: &Context, waker: &Arc<Counting>) -> ctx_core::Done {
    let mut done = ctx.done();
    assert!(poll(&mut done, &Waker::from(waker.clone())).is_pending());
    done
}

/// Waits (bounded) until `cond` holds.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + PROMPTLY;
    while !cond() {
        assert!(Instant::now() < until, "never happened: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A value key with nothing in it.
pub struct Tag;
impl ContextKey for Tag {
    const NAME: &'static str = "Tag";
}
