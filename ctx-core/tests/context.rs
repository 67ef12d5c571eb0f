//! Behaviour of the context tree, following Go's `context` tests where they apply.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Cause, Context, ContextKey, Error};

/// Generous bound for "this should happen promptly" on a loaded 2-core machine.
const PROMPTLY: Duration = Duration::from_secs(10);

struct RequestId(u64);
impl ContextKey for RequestId {
    const NAME: &'static str = "RequestId";
}

struct User(&'static str);
impl ContextKey for User {
    const NAME: &'static str = "User";
}

#[test]
fn background_and_todo() {
    for (ctx, name) in [
        (Context::background(), "context.Background"),
        (Context::todo(), "context.TODO"),
    ] {
        assert!(!ctx.is_cancelled());
        assert_eq!(ctx.err(), None);
        assert_eq!(ctx.cause(), None);
        assert_eq!(ctx.deadline(), None);
        assert_eq!(ctx.checkpoint(), Ok(()));
        assert!(ctx.value::<RequestId>().is_none());
        assert_eq!(ctx.to_string(), name);
        assert_eq!(ctx.wait_timeout(Duration::from_millis(1)), None);
    }
    assert_eq!(Context::default().to_string(), "context.Background");
}

#[test]
fn display_follows_go() {
    let bg = Context::background();
    assert_eq!(
        bg.with_cancel().to_string(),
        "context.Background.WithCancel"
    );
    assert_eq!(
        Context::todo().with_value(RequestId(1)).to_string(),
        "context.TODO.WithValue(RequestId)"
    );
    assert_eq!(
        bg.without_cancel().to_string(),
        "context.Background.WithoutCancel"
    );
    let chain = bg.with_value(User("a")).with_cancel();
    assert_eq!(
        chain.with_cancel().to_string(),
        "context.Background.WithValue(User).WithCancel.WithCancel"
    );
    let timed = bg.with_timeout(Duration::from_secs(3600));
    let text = timed.to_string();
    assert!(
        text.starts_with("context.Background.WithDeadline("),
        "{text}"
    );
    assert!(text.contains(" +0000 UTC [59m59."), "{text}");
    assert!(text.ends_with("s])"), "{text}");
    // A later deadline under an earlier one is a plain cancel child, as in Go.
    assert!(
        timed
            .with_timeout(Duration::from_secs(7200))
            .to_string()
            .ends_with(".WithCancel")
    );
}

#[test]
fn parent_finishes_child() {
    let parent = Context::background().with_cancel();
    let cancel_child = parent.with_cancel();
    let timer_child = parent.with_timeout(Duration::from_secs(3600));
    let value_child = parent.with_value(RequestId(1));
    let grandchild = value_child.with_cancel();
    let detached = parent.without_cancel();
    for ctx in [&*cancel_child, &*timer_child, &value_child, &*grandchild] {
        assert_eq!(ctx.err(), None);
    }
    let cause = Cause::from("parent gone");
    parent.cancel_with(cause.clone());
    for ctx in [&*cancel_child, &*timer_child, &value_child, &*grandchild] {
        assert_eq!(ctx.err(), Some(Error::Cancelled), "{ctx}");
        assert_eq!(ctx.cause(), Some(cause.clone()), "{ctx}");
        assert_eq!(ctx.checkpoint(), Err(Error::Cancelled));
        assert_eq!(ctx.wait_timeout(Duration::ZERO), Some(Error::Cancelled));
    }
    assert_eq!(detached.err(), None);
    // Born cancelled: a child of a done parent.
    let late = cancel_child.with_cancel();
    assert_eq!(late.err(), Some(Error::Cancelled));
    assert_eq!(late.cause(), Some(cause));
}

#[test]
fn child_finishes_first() {
    let parent = Context::background().with_cancel();
    let child = parent.with_cancel();
    child.cancel();
    assert_eq!(parent.err(), None);
    parent.cancel();
}

#[test]
fn first_cancel_wins() {
    let scope = Context::background().with_cancel();
    let (ctx, handle) = scope.into_parts();
    let child = ctx.with_cancel();
    child
        .context()
        .clone()
        .with_cancel()
        .cancel_with("ignored: only cancels a grandchild");
    handle.cancel_with("first");
    assert_eq!(ctx.cause().unwrap().to_string(), "first");
    // Later cancels (through the child) change nothing on an already-done context.
    child.cancel_with("second");
    assert_eq!(ctx.cause().unwrap().to_string(), "first");
}

#[test]
fn cause_without_one_given_is_the_error() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    assert_eq!(ctx.cause(), None);
    scope.cancel();
    assert_eq!(ctx.cause(), Some(Cause::from(Error::Cancelled)));
    assert!(ctx.cause().unwrap() == Error::Cancelled);
}

#[test]
fn deadline_fires_without_any_runtime() {
    let start = Instant::now();
    let scope = Context::background().with_timeout(Duration::from_millis(20));
    assert_eq!(scope.err(), None);
    assert_eq!(scope.wait(), Error::DeadlineExceeded);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(scope.cause(), Some(Cause::from(Error::DeadlineExceeded)));
    assert!(scope.err().unwrap().is_timeout());
}

#[test]
fn deadline_in_the_past_is_born_exceeded() {
    let scope = Context::background().with_deadline(Instant::now() - Duration::from_secs(1));
    assert_eq!(scope.err(), Some(Error::DeadlineExceeded));
    let zero = Context::background().with_timeout_cause(Duration::ZERO, "no time");
    assert_eq!(zero.err(), Some(Error::DeadlineExceeded));
    assert_eq!(zero.cause().unwrap().to_string(), "no time");
}

/// A deadline child of a cancelled parent is born cancelled, with the parent's cause, even
/// when its own deadline is a nanosecond away and the driver could fire it while it is being
/// derived: the parent's end came first, so it wins (as in Go). None of them is left armed.
#[test]
fn a_deadline_child_of_a_done_parent_is_born_with_the_parents_error() {
    let (parent, cancel) = Context::background().with_cancel().into_parts();
    cancel.cancel_with("parent gone");
    for _ in 0..10_000 {
        let child = parent.with_timeout(Duration::from_nanos(1));
        assert_eq!(child.err(), Some(Error::Cancelled));
        assert_eq!(child.cause().unwrap().to_string(), "parent gone");
    }
    let child = parent.with_timeout(Duration::from_secs(3600));
    assert_eq!(child.err(), Some(Error::Cancelled));
}

/// A waiter that polls after its context's deadline sees it ended, with `DeadlineExceeded`
/// and the deadline's cause, even when the driver thread is late to fire it (here it is held
/// up inside another deadline's walk, by a waker that blocks). Go's timers fire late under
/// load too; a poll that can see the deadline has passed need not wait for them.
#[test]
fn a_poll_after_the_deadline_sees_it_passed_however_late_the_driver_is() {
    use std::future::Future;
    use std::task::{Context as TaskContext, Poll, Wake, Waker};

    /// Blocks the thread that wakes it (the deadline driver) until released.
    struct Blocking(std::sync::Mutex<mpsc::Receiver<()>>, mpsc::Sender<()>);
    impl Wake for Blocking {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let _ = self.1.send(()); // "the driver is held up"
            let _ = self.0.lock().unwrap().recv_timeout(PROMPTLY);
        }
    }
    let (release, held) = mpsc::channel();
    let (holding, driver_held) = mpsc::channel();
    let blocking = Waker::from(Arc::new(Blocking(std::sync::Mutex::new(held), holding)));

    let started = Instant::now();
    // Generous gaps: the first poll must come before the first deadline, and the driver
    // must hold before the second, on a loaded machine too.
    let first = Context::background().with_timeout(Duration::from_millis(1_000));
    let mut first_done = first.done();
    assert!(
        Pin::new(&mut first_done)
            .poll(&mut TaskContext::from_waker(&blocking))
            .is_pending()
    );
    let second = Context::background().with_timeout_cause(Duration::from_millis(1_200), "too slow");
    // Another waiter of the second context, whose waker panics when woken: the poll below
    // runs the walk that wakes it, and must not take that panic (a waker's panic belongs to
    // whoever cancels; the driver, or a waiter standing in for it, drops it).
    struct Panicking;
    impl Wake for Panicking {
        fn wake(self: Arc<Self>) {
            panic!("a waker that panics (intentional)");
        }
    }
    let panicking = Waker::from(Arc::new(Panicking));
    let mut other_done = second.done();
    assert!(
        Pin::new(&mut other_done)
            .poll(&mut TaskContext::from_waker(&panicking))
            .is_pending()
    );
    driver_held
        .recv_timeout(PROMPTLY)
        .expect("the driver fires the first deadline");
    // The second deadline passes while the driver is held up in the first one's walk.
    thread::sleep(Duration::from_millis(1_500).saturating_sub(started.elapsed()));
    assert_eq!(
        second.err(),
        None,
        "the driver is held up: nothing fired it"
    );
    let mut second_done = second.done();
    let polled = Pin::new(&mut second_done).poll(&mut TaskContext::from_waker(Waker::noop()));
    assert_eq!(polled, Poll::Ready(Error::DeadlineExceeded));
    assert_eq!(second.err(), Some(Error::DeadlineExceeded));
    assert_eq!(second.cause().unwrap().to_string(), "too slow");
    // A blocking wait sees it too, and the held-up driver still fires the rest when freed.
    let third = Context::background().with_timeout(Duration::from_millis(1));
    release.send(()).unwrap();
    assert_eq!(third.wait(), Error::DeadlineExceeded);
    assert_eq!(first.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn earlier_parent_deadline_wins() {
    let parent = Context::background().with_timeout(Duration::from_millis(30));
    let child = parent.with_timeout_cause(Duration::from_secs(3600), "child's cause");
    assert_eq!(child.deadline(), parent.deadline());
    assert_eq!(child.wait(), Error::DeadlineExceeded);
    // The parent's deadline fired, so the child reports the parent's cause (none: the error).
    assert_eq!(child.cause(), Some(Cause::from(Error::DeadlineExceeded)));
}

#[test]
fn later_child_deadline_is_kept_when_earlier() {
    let parent = Context::background().with_timeout(Duration::from_secs(3600));
    let child = parent.with_timeout(Duration::from_secs(60));
    assert!(child.deadline().unwrap() < parent.deadline().unwrap());
    assert_eq!(child.with_value(RequestId(1)).deadline(), child.deadline());
    assert_eq!(child.without_cancel().deadline(), None);
}

#[test]
fn deadline_cause_when_it_fires_and_when_cancelled_first() {
    let fires = Context::background().with_timeout_cause(Duration::from_millis(5), "too slow");
    assert_eq!(fires.wait(), Error::DeadlineExceeded);
    assert_eq!(fires.cause().unwrap().to_string(), "too slow");

    let cancelled = Context::background().with_timeout_cause(Duration::from_secs(3600), "too slow");
    let ctx = cancelled.context().clone();
    cancelled.cancel();
    assert_eq!(ctx.err(), Some(Error::Cancelled));
    assert_eq!(ctx.cause(), Some(Cause::from(Error::Cancelled)));
}

#[test]
fn layered_timeouts_end_every_layer() {
    let root = Context::background().with_cancel();
    let mut layers = vec![root.with_timeout(Duration::from_millis(30))];
    for _ in 0..20 {
        let next = layers
            .last()
            .unwrap()
            .with_value(RequestId(0))
            .with_cancel();
        layers.push(next);
    }
    assert_eq!(layers.last().unwrap().wait(), Error::DeadlineExceeded);
    assert!(
        layers
            .iter()
            .all(|l| l.err() == Some(Error::DeadlineExceeded))
    );
    assert_eq!(root.err(), None);
}

#[test]
fn values_innermost_first() {
    let c0 = Context::background();
    let c1 = c0.with_value(RequestId(1));
    let c2 = c1.with_value(User("ann"));
    let c3 = c2.with_cancel().with_value(RequestId(3));
    let c4 = c3.without_cancel();
    assert!(c0.value::<RequestId>().is_none());
    assert_eq!(c1.value::<RequestId>().map(|v| v.0), Some(1));
    assert!(c1.value::<User>().is_none());
    assert_eq!(c2.value::<RequestId>().map(|v| v.0), Some(1));
    assert_eq!(c2.value::<User>().map(|v| v.0), Some("ann"));
    assert_eq!(c3.value::<RequestId>().map(|v| v.0), Some(3));
    assert_eq!(
        c4.value::<RequestId>().map(|v| v.0),
        Some(3),
        "without_cancel keeps values"
    );
    assert_eq!(RequestId::from_context(&c4).map(|v| v.0), Some(3));
}

#[test]
fn many_key_types_share_summary_bits_without_wrong_answers() {
    macro_rules! keys {
        ($($k:ident)*) => {
            $(struct $k(u32); impl ContextKey for $k { const NAME: &'static str = stringify!($k); })*
            let mut ctx = Context::background();
            let mut n = 0;
            $( n += 1; ctx = ctx.with_value($k(n)); )*
            let mut m = 0;
            $( m += 1; assert_eq!(ctx.value::<$k>().map(|v| v.0), Some(m)); )*
        };
    }
    keys!(K1 K2 K3 K4 K5 K6 K7 K8 K9 K10 K11 K12 K13 K14 K15 K16 K17 K18 K19 K20
          K21 K22 K23 K24 K25 K26 K27 K28 K29 K30 K31 K32 K33 K34 K35 K36 K37 K38 K39 K40
          K41 K42 K43 K44 K45 K46 K47 K48 K49 K50 K51 K52 K53 K54 K55 K56 K57 K58 K59 K60
          K61 K62 K63 K64 K65 K66 K67 K68 K69 K70);
    assert!(
        Context::background()
            .with_value(K1(0))
            .value::<K2>()
            .is_none()
    );
}

#[test]
fn without_cancel_is_a_shield() {
    let parent = Context::background()
        .with_timeout(Duration::from_millis(1))
        .with_value(User("u"));
    let shielded = parent.without_cancel();
    let below = shielded.with_cancel();
    parent.wait();
    assert_eq!(shielded.err(), None);
    assert_eq!(shielded.cause(), None);
    assert_eq!(shielded.deadline(), None);
    assert_eq!(below.err(), None);
    assert_eq!(shielded.value::<User>().map(|u| u.0), Some("u"));
    assert_eq!(shielded.wait_timeout(Duration::from_millis(5)), None);
}

#[test]
fn simultaneous_cancels_from_many_threads() {
    // A 4-ary tree, 4 levels deep; every node's canceller and the root's race.
    let root = Context::background().with_cancel();
    let mut handles = Vec::new();
    let mut all = Vec::new();
    let mut level = vec![root.context().clone()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for ctx in &level {
            for _ in 0..4 {
                let (child, handle) = ctx.with_cancel().into_parts();
                next.push(child.clone());
                all.push(child);
                handles.push(handle);
            }
        }
        level = next;
    }
    let (root_ctx, root_handle) = root.into_parts();
    let barrier = Barrier::new(5);
    thread::scope(|s| {
        let chunk = handles.len().div_ceil(4);
        let mut rest = handles;
        while !rest.is_empty() {
            let mine: Vec<_> = rest.drain(..chunk.min(rest.len())).collect();
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for handle in mine.into_iter().rev() {
                    handle.cancel();
                }
            });
        }
        barrier.wait();
        root_handle.cancel();
        // The root's cancel returned: every descendant is done by now.
        assert!(all.iter().all(Context::is_cancelled));
    });
    assert_eq!(root_ctx.err(), Some(Error::Cancelled));
}

#[test]
fn cancel_reaches_every_descendant_before_returning_even_racing_derivation() {
    for _ in 0..50 {
        let root = Context::background().with_cancel();
        let ctx = root.context().clone();
        let spawner = thread::spawn(move || {
            let mut born = Vec::new();
            for _ in 0..200 {
                born.push(ctx.with_cancel().with_value(RequestId(0)).with_cancel());
            }
            born
        });
        thread::sleep(Duration::from_micros(200));
        root.cancel();
        for scope in spawner.join().unwrap() {
            assert_eq!(scope.err(), Some(Error::Cancelled));
        }
    }
}

#[test]
fn wait_blocks_until_cancel_from_another_thread() {
    let (ctx, handle) = Context::background().with_cancel().into_parts();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let ctx = ctx.clone();
            thread::spawn(move || ctx.wait())
        })
        .collect();
    thread::sleep(Duration::from_millis(10));
    handle.cancel_with("stop");
    for w in waiters {
        assert_eq!(w.join().unwrap(), Error::Cancelled);
    }
}

#[test]
fn wait_timeout_returns_none_then_the_error() {
    let scope = Context::background().with_cancel();
    assert_eq!(scope.wait_timeout(Duration::from_millis(5)), None);
    let ctx = scope.context().clone();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(5));
        scope.cancel();
    });
    assert_eq!(ctx.wait_timeout(PROMPTLY), Some(Error::Cancelled));
}

#[test]
fn after_func_runs_once_after_done() {
    let scope = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let after = scope.after_func(move || {
        tx.send(thread::current().name().map(str::to_owned))
            .unwrap()
    });
    assert!(
        rx.try_recv().is_err(),
        "must not run before the context is done"
    );
    scope.cancel();
    let ran_on = rx.recv_timeout(PROMPTLY).expect("after_func ran");
    assert_eq!(
        ran_on.as_deref(),
        Some("ctx-after-func"),
        "runs on its own thread"
    );
    assert!(!after.stop(), "too late to stop");
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "runs exactly once"
    );
}

#[test]
fn after_func_stopped_never_runs() {
    let scope = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let after = scope.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert!(after.stop());
    assert!(!after.stop());
    scope.cancel();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn after_func_on_done_context_runs_at_once_and_on_background_never() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let (tx, rx) = mpsc::channel();
    let after = ctx.after_func(move || tx.send(()).unwrap());
    rx.recv_timeout(PROMPTLY)
        .expect("ran although registered after done");
    assert!(!after.stop());

    let never = Context::background().after_func(|| panic!("background never ends"));
    assert!(never.stop());
    assert!(!never.stop());
}

#[test]
fn a_slow_after_func_delays_nothing_else() {
    let scope = Context::background().with_cancel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let _slow = scope.after_func(move || {
        let _ = release_rx.recv_timeout(PROMPTLY);
    });
    let _fast = scope.after_func(move || tx.send(()).unwrap());
    let started = Instant::now();
    scope.cancel(); // returns although the slow one blocks
    rx.recv_timeout(PROMPTLY)
        .expect("the fast after_func ran while the slow one blocked");
    assert!(started.elapsed() < PROMPTLY);
    release_tx.send(()).unwrap();
}

#[test]
fn after_func_may_use_the_context_without_deadlock() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    let (tx, rx) = mpsc::channel();
    let _after = scope.after_func(move || {
        let child = ctx.with_cancel(); // would deadlock if f ran under the core's lock
        tx.send((ctx.err(), child.err())).unwrap();
    });
    scope.cancel();
    assert_eq!(
        rx.recv_timeout(PROMPTLY).unwrap(),
        (Some(Error::Cancelled), Some(Error::Cancelled))
    );
}

#[test]
fn after_func_on_value_child_follows_the_ancestor() {
    let scope = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let _after = scope
        .with_value(RequestId(1))
        .after_func(move || tx.send(()).unwrap());
    scope.cancel();
    rx.recv_timeout(PROMPTLY).unwrap();
}

#[test]
fn ambient_enter_nests_and_restores_on_panic() {
    assert_eq!(Context::current().to_string(), "context.Background");
    let outer = Context::background().with_value(User("outer"));
    let inner = Context::todo().with_value(User("inner"));
    outer.enter(|| {
        assert_eq!(
            Context::current().value::<User>().map(|u| u.0),
            Some("outer")
        );
        inner.enter(|| {
            assert_eq!(
                Context::current().value::<User>().map(|u| u.0),
                Some("inner")
            )
        });
        assert_eq!(
            Context::current().value::<User>().map(|u| u.0),
            Some("outer")
        );
        let panicked = std::panic::catch_unwind(|| inner.enter(|| panic!("boom")));
        assert!(panicked.is_err());
        assert_eq!(
            Context::current().value::<User>().map(|u| u.0),
            Some("outer")
        );
    });
    assert_eq!(Context::current().to_string(), "context.Background");
    thread::spawn(|| assert_eq!(Context::current().to_string(), "context.Background"))
        .join()
        .unwrap();
}

#[test]
fn ambient_scope_applies_on_every_poll_and_not_between() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context as Cx, Poll};

    /// Yields once, recording the ambient user on each poll.
    struct Probe(Vec<Option<&'static str>>);
    impl Future for Probe {
        type Output = Vec<Option<&'static str>>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<Self::Output> {
            let seen = Context::current().value::<User>().map(|u| u.0);
            self.0.push(seen);
            if self.0.len() < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut self.0))
            }
        }
    }
    let ctx = Context::background().with_value(User("scoped"));
    let mut fut = Box::pin(ctx.scope(Probe(Vec::new())));
    let waker = futures::task::noop_waker();
    let mut cx = Cx::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert!(
        Context::current().value::<User>().is_none(),
        "not leaked between polls"
    );
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let Poll::Ready(seen) = fut.as_mut().poll(&mut cx) else {
        panic!()
    };
    assert_eq!(seen, [Some("scoped"); 3]);
}

#[test]
fn nested_scopes_on_a_thread_pool_executor() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let outer = Context::background().with_value(User("outer"));
    let inner = Context::background().with_value(User("inner"));
    let (tx, rx) = mpsc::channel();
    rt.spawn(outer.clone().scope(async move {
        let a = Context::current().value::<User>().map(|u| u.0);
        let b = inner
            .scope(async { Context::current().value::<User>().map(|u| u.0) })
            .await;
        let c = Context::current().value::<User>().map(|u| u.0);
        tx.send((a, b, c)).unwrap();
    }));
    assert_eq!(
        rx.recv_timeout(PROMPTLY).unwrap(),
        (Some("outer"), Some("inner"), Some("outer"))
    );
}

#[test]
fn done_future_resolves_and_is_static_send_unpin() {
    fn assert_traits<T: Send + Unpin + 'static>(_: &T) {}
    let (ctx, handle) = Context::background().with_cancel().into_parts();
    let done = ctx.done();
    assert_traits(&done);
    let waiter = thread::spawn(move || futures::executor::block_on(done));
    thread::sleep(Duration::from_millis(5));
    handle.cancel();
    assert_eq!(waiter.join().unwrap(), Error::Cancelled);
    assert_eq!(futures::executor::block_on(ctx.done()), Error::Cancelled);
}

#[test]
fn done_in_select_with_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let scope = Context::background().with_timeout(Duration::from_millis(20));
        let mut ticks = 0;
        let err = loop {
            tokio::select! {
                err = scope.done() => break err,
                _ = tokio::time::sleep(Duration::from_millis(1)) => ticks += 1,
            }
        };
        assert_eq!(err, Error::DeadlineExceeded);
        assert!(ticks > 0);
    });
}

#[test]
fn dropped_done_futures_do_not_accumulate() {
    let scope = Context::background().with_cancel();
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    for _ in 0..10_000 {
        let mut done = scope.done();
        assert!(std::pin::Pin::new(&mut done).poll(&mut cx).is_pending());
    }
    // Nothing observable leaks; the cancel below wakes nobody and still finishes.
    scope.cancel();
    use std::future::Future;
}

#[test]
fn run_drops_the_pending_future_when_the_context_ends() {
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = Flag(dropped.clone());
    let scope = Context::background().with_timeout(Duration::from_millis(20));
    let result = futures::executor::block_on(scope.run(async move {
        let _flag = flag;
        std::future::pending::<()>().await
    }));
    assert_eq!(result, Err(Error::DeadlineExceeded));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        futures::executor::block_on(Context::background().run(async { 5 })),
        Ok(5)
    );
}

#[test]
fn run_on_a_done_context_never_polls() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let polled = Arc::new(AtomicUsize::new(0));
    let p = polled.clone();
    let result = futures::executor::block_on(ctx.run(async move {
        p.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(result, Err(Error::Cancelled));
    assert_eq!(polled.load(Ordering::SeqCst), 0);
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Context>();
    send_sync::<ctx_core::CancelScope>();
    send_sync::<ctx_core::CancelHandle>();
    send_sync::<ctx_core::AfterFunc>();
    send_sync::<ctx_core::Done>();
    send_sync::<Cause>();
    send_sync::<Error>();
    fn is_static<T: 'static>() {}
    is_static::<Context>();
}

#[test]
fn a_million_deep_chain_builds_cancels_and_drops_without_overflow() {
    // A small stack, so any recursion per level would overflow.
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let root = Context::background().with_cancel();
            let mut chain = root.context().clone();
            let mut handles = Vec::with_capacity(500_000);
            for i in 0..1_000_000 {
                chain = if i % 2 == 0 {
                    let (ctx, handle) = chain.with_cancel().into_parts();
                    handles.push(handle);
                    ctx
                } else {
                    chain.with_value(RequestId(i))
                };
            }
            assert!(!chain.is_cancelled());
            assert_eq!(chain.value::<RequestId>().map(|id| id.0), Some(999_999));
            root.cancel();
            assert_eq!(chain.err(), Some(Error::Cancelled));
            drop(handles);
            drop(chain); // the whole chain goes with this last reference
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
}

#[test]
fn a_million_deep_live_chain_drops_without_overflow() {
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut chain = Context::background();
            for _ in 0..1_000_000 {
                chain = chain.with_timeout(Duration::from_secs(3600)).into_parts().0;
            }
            drop(chain);
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
}

#[test]
fn stopping_an_after_func_that_owns_a_canceller_does_not_deadlock() {
    //! Regression: `stop` dropped the removed closure under the core's lock; the closure's
    //! `CancelHandle` then cancelled a child, which locks the same core to unlink itself.
    let parent = Context::background().with_cancel();
    let (child, handle) = parent.with_cancel().into_parts();
    let after = parent.after_func(move || handle.cancel());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(after.stop()).unwrap());
    assert_eq!(rx.recv_timeout(PROMPTLY), Ok(true), "stop returned");
    assert_eq!(
        child.err(),
        Some(Error::Cancelled),
        "dropping the closure dropped its CancelHandle"
    );
}

/// A waker that owns a child's `CancelHandle`: dropping its last clone cancels the child,
/// which locks the parent core to unlink itself.
struct CancelOnDrop(std::sync::Mutex<Option<ctx_core::CancelHandle>>);

impl std::task::Wake for CancelOnDrop {
    fn wake(self: Arc<Self>) {}
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.lock().unwrap().take() {
            handle.cancel();
        }
    }
}

/// A parent, its child, and a waker whose drop cancels the child.
fn waker_owning_child() -> (ctx_core::CancelScope, Context, std::task::Waker) {
    let parent = Context::background().with_cancel();
    let (child, handle) = parent.with_cancel().into_parts();
    let waker = std::task::Waker::from(Arc::new(CancelOnDrop(std::sync::Mutex::new(Some(handle)))));
    (parent, child, waker)
}

#[test]
fn a_waker_whose_drop_cancels_the_same_context_does_not_deadlock() {
    use std::future::Future;
    let (parent, child, waker) = waker_owning_child();
    let (tx, rx) = mpsc::channel();
    let ctx = parent.context().clone();
    thread::spawn(move || {
        let mut done = ctx.done();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::pin::Pin::new(&mut done).poll(&mut cx).is_pending());
        drop(waker); // the registered clone is now the last owner
        drop(done); // deregisters: drops that clone, whose drop cancels the child
        tx.send(()).unwrap();
    });
    rx.recv_timeout(PROMPTLY).expect("no deadlock");
    assert!(child.is_cancelled());
    drop(parent);
}

#[test]
fn waking_on_cancel_drops_no_waker_under_the_lock() {
    use std::future::Future;
    // Cancelling the parent wakes the registered waker; had that dropped it under the
    // parent's lock, the child's cancel (which unlinks from the parent) would deadlock.
    let (parent, child, waker) = waker_owning_child();
    let mut done = parent.done();
    assert!(
        std::pin::Pin::new(&mut done)
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    drop(waker);
    let (tx, rx) = mpsc::channel();
    let (ctx, cancel) = parent.into_parts();
    thread::spawn(move || {
        cancel.cancel();
        drop(done); // now the last waker goes, outside any lock
        tx.send(()).unwrap();
    });
    rx.recv_timeout(PROMPTLY).expect("no deadlock");
    assert!(ctx.is_cancelled() && child.is_cancelled());
}

#[test]
fn deadlines_armed_on_many_threads_all_fire_on_time() {
    // Each thread arms into its own timer shard; the driver must watch them all, and wake
    // early for a deadline earlier than the one it sleeps towards.
    let far = Context::background().with_timeout(Duration::from_secs(3600));
    let started = Instant::now();
    let waiters: Vec<_> = (0..16u64)
        .map(|i| {
            thread::spawn(move || {
                let scope = Context::background().with_timeout(Duration::from_millis(10 + i * 3));
                (scope.wait(), scope.deadline().unwrap())
            })
        })
        .collect();
    for waiter in waiters {
        let (err, deadline) = waiter.join().unwrap();
        assert_eq!(err, Error::DeadlineExceeded);
        assert!(Instant::now() >= deadline, "never early");
    }
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(far.err(), None);
}
