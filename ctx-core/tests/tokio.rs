//! The `tokio` integration: `Group`, `spawn`, signals and processes.
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctx_core::{Context, ContextKey, Error, Group, process, signal};

#[derive(Debug, PartialEq)]
struct Boom(&'static str);
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}
impl std::error::Error for Boom {}

struct Tenant(u32);
impl ContextKey for Tenant {
    const NAME: &'static str = "Tenant";
}

const PROMPTLY: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_error_cancels_siblings_with_that_cause() {
    let group = Group::<Boom>::new(Context::background());
    let seen = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..3 {
        let seen = seen.clone();
        group.spawn(async move {
            let ctx = Context::current();
            let err = ctx.done().await;
            let cause = ctx.cause().unwrap();
            seen.lock().unwrap().push((
                err,
                ctx.err(),
                cause.is::<Error>(),
                cause.is::<Boom>(),
                cause.to_string(),
            ));
            Ok(())
        });
    }
    group.spawn(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(Boom("first"))
    });
    group.spawn(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(Boom("second, too late"))
    });
    let ctx = group.context().clone();
    assert_eq!(group.wait().await, Err(Boom("first")));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (err, now, plain_cancel, typed, text) in seen.iter() {
        assert_eq!((*err, *now), (Error::Cancelled, Some(Error::Cancelled)));
        assert!(
            !plain_cancel,
            "the cause is the task's failure, not a plain cancel"
        );
        assert!(
            !typed,
            "the cause is the error's text, not the error (Group docs)"
        );
        assert_eq!(text, "boom: first");
    }
    assert_eq!(ctx.err(), Some(Error::Cancelled));
    assert_eq!(ctx.cause().unwrap().to_string(), "boom: first");
}

/// Regression: `wait` used to spin until every clone of the cause was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_promptly_while_a_cause_is_held() {
    let group = Group::<Boom>::new(Context::background());
    let held = Arc::new(Mutex::new(None));
    let keep = held.clone();
    group.spawn(async move {
        let ctx = Context::current();
        ctx.done().await;
        *keep.lock().unwrap() = ctx.cause(); // kept past `wait`, by the test
        Ok(())
    });
    group.spawn(async { Err(Boom("held")) });
    let ctx = group.context().clone();
    let result = tokio::time::timeout(PROMPTLY, group.wait())
        .await
        .expect("wait returns while the cause is held");
    assert_eq!(result, Err(Boom("held")));
    let cause = held
        .lock()
        .unwrap()
        .clone()
        .expect("the task kept the cause");
    assert_eq!(cause.to_string(), "boom: held");
    assert!(!cause.is::<Boom>(), "the cause is a snapshot of the error");
    assert!(format!("{cause:?}").contains("Boom(\"held\")"), "{cause:?}");
    assert_eq!(ctx.cause().unwrap().to_string(), "boom: held");
    // Later, still the same text: the snapshot does not depend on the returned error.
    drop(result);
    assert_eq!(cause.to_string(), "boom: held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_promptly_while_a_task_that_outlived_the_group_holds_the_cause() {
    let group = Group::<Boom>::new(Context::background());
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (detached_tx, detached_rx) = tokio::sync::oneshot::channel();
    group.spawn(async move {
        let ctx = Context::current();
        let shielded = ctx.without_cancel();
        // Outlives the group: a detached task under a shielded context.
        let detached = tokio::spawn(shielded.scope(async move {
            ctx.done().await;
            let cause = ctx.cause().unwrap();
            let _ = held_tx.send((cause.to_string(), Context::current().is_cancelled()));
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(cause);
        }));
        let _ = detached_tx.send(detached);
        Ok(())
    });
    let detached = tokio::time::timeout(PROMPTLY, detached_rx)
        .await
        .unwrap()
        .unwrap();
    group.spawn(async { Err(Boom("outlived")) });
    let (text, shield_cancelled) = tokio::time::timeout(PROMPTLY, held_rx)
        .await
        .expect("the detached task holds the cause")
        .unwrap();
    assert_eq!(text, "boom: outlived");
    assert!(!shield_cancelled);
    let started = Instant::now();
    let result = tokio::time::timeout(PROMPTLY, group.wait())
        .await
        .expect("wait returns while the detached task holds the cause");
    assert_eq!(result, Err(Boom("outlived")));
    assert!(started.elapsed() < PROMPTLY);
    assert!(!detached.is_finished(), "the holder was still holding");
    detached.abort();
}

/// An error whose `Display` panics.
#[derive(Debug, PartialEq)]
struct Unprintable(u32);
impl std::fmt::Display for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Display of Unprintable({})", self.0)
    }
}
impl std::error::Error for Unprintable {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_whose_display_panics_still_fails_the_group() {
    let group = Group::<Unprintable>::new(Context::background());
    let sibling = Arc::new(Mutex::new(None));
    let saw = sibling.clone();
    group.spawn(async move {
        let ctx = Context::current();
        let err = ctx.done().await;
        *saw.lock().unwrap() = Some((err, ctx.cause().unwrap().to_string()));
        Ok(())
    });
    group.spawn(async { Err(Unprintable(7)) });
    let ctx = group.context().clone();
    // `wait` runs in its own task so that a panic escaping it would show as a JoinError.
    let joined = tokio::time::timeout(PROMPTLY, tokio::spawn(group.wait()))
        .await
        .expect("wait returns promptly");
    let result = joined.expect("no panic escapes wait");
    assert_eq!(result, Err(Unprintable(7)));
    let fallback = "a task of the group failed (its error's Display panicked)";
    assert_eq!(
        *sibling.lock().unwrap(),
        Some((Error::Cancelled, fallback.to_string())),
        "the group cancelled its context"
    );
    assert_eq!(ctx.err(), Some(Error::Cancelled));
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.to_string(), fallback);
    assert!(!cause.is::<Error>());
    assert!(format!("{cause:?}").contains("Unprintable(7)"), "{cause:?}");
}

/// `E` needs no bound beyond `std::error::Error + Send + Sync + 'static`: not `Clone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_work_as_the_group_error() {
    let group = Group::<std::io::Error>::new(Context::background());
    let held = Arc::new(Mutex::new(None));
    let keep = held.clone();
    group.spawn(async move {
        let ctx = Context::current();
        ctx.done().await;
        *keep.lock().unwrap() = ctx.cause();
        Ok(())
    });
    group.spawn(async {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such backend",
        ))
    });
    let err = tokio::time::timeout(PROMPTLY, group.wait())
        .await
        .expect("wait returns promptly")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(err.to_string(), "no such backend");
    let cause = held.lock().unwrap().clone().unwrap();
    assert_eq!(cause.to_string(), "no such backend");
}

#[tokio::test]
async fn wait_returns_only_after_the_slowest_task() {
    let group = Group::<Boom>::new(Context::background());
    let finished = Arc::new(AtomicUsize::new(0));
    for ms in [1u64, 30, 60] {
        let finished = finished.clone();
        group.spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    let finished_b = finished.clone();
    group.spawn_blocking(move |_ctx| {
        std::thread::sleep(Duration::from_millis(80));
        finished_b.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    assert_eq!(group.wait().await, Ok(()));
    assert_eq!(finished.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn tasks_start_without_waiting_for_wait() {
    let group = Group::<Boom>::new(Context::background());
    let (tx, rx) = tokio::sync::oneshot::channel();
    group.spawn(async move {
        let _ = tx.send(());
        Ok(())
    });
    tokio::time::timeout(PROMPTLY, rx)
        .await
        .expect("task ran before wait")
        .unwrap();
    group.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_group_cancels_and_aborts_every_task() {
    let running = Arc::new(AtomicUsize::new(0));
    struct Running(Arc<AtomicUsize>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let group = Group::<Boom>::new(Context::background());
    let ctx = group.context().clone();
    for _ in 0..5 {
        let running = running.clone();
        group.spawn(async move {
            running.fetch_add(1, Ordering::SeqCst);
            let _guard = Running(running);
            std::future::pending::<()>().await; // ignores the context: must be aborted
            Ok(())
        });
    }
    let start = Instant::now();
    while running.load(Ordering::SeqCst) < 5 && start.elapsed() < PROMPTLY {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(group);
    assert!(ctx.is_cancelled());
    let start = Instant::now();
    while running.load(Ordering::SeqCst) > 0 && start.elapsed() < PROMPTLY {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        running.load(Ordering::SeqCst),
        0,
        "no task outlives its group"
    );
}

/// A value holding a probe: the probe's count falls back to 1 when the chain holding the
/// value is freed.
struct Held(#[allow(dead_code)] Arc<()>);
impl ContextKey for Held {
    const NAME: &'static str = "Held";
}

/// Waits (a generous while) until nothing but the test holds `probe`; true if so.
async fn until_freed(probe: &Arc<()>) -> bool {
    let start = Instant::now();
    while Arc::strong_count(probe) > 1 && start.elapsed() < PROMPTLY {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Arc::strong_count(probe) == 1
}

/// Every task hands its reference to the group's state back to `wait` (which drops it): when
/// the group has waited, or has been dropped with tasks finished, unfinished, failed, panicked
/// or waiting for a slot, nothing of it is left, down to the parent the group kept alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_leaves_nothing_behind_waited_or_dropped() {
    // Waited: every kind of ending, under a limit too.
    for limit in [None, Some(2)] {
        let probe = Arc::new(());
        let group = Group::<Boom>::new(Context::background().with_value(Held(probe.clone())));
        if let Some(n) = limit {
            group.set_limit(n);
        }
        for i in 0..50 {
            group.spawn(async move {
                tokio::task::yield_now().await;
                if i == 7 {
                    return Err(Boom("seven"));
                }
                Ok(())
            });
        }
        assert_eq!(group.wait().await, Err(Boom("seven")));
        assert!(until_freed(&probe).await, "waited, limit {limit:?}");
    }

    // Dropped before `wait`: some tasks finished, some pending forever, some waiting for a
    // slot.
    let probe = Arc::new(());
    let group = Group::<Boom>::new(Context::background().with_value(Held(probe.clone())));
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let finished = finished.clone();
        group.spawn(async move {
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    let start = Instant::now();
    while finished.load(Ordering::SeqCst) < 10 && start.elapsed() < PROMPTLY {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    group.set_limit(1);
    for _ in 0..5 {
        group.spawn(std::future::pending());
    }
    drop(group);
    assert!(until_freed(&probe).await, "dropped");

    // A panicking task drops its reference where it unwinds.
    let probe = Arc::new(());
    let group = Group::<Boom>::new(Context::background().with_value(Held(probe.clone())));
    group.spawn(async { panic!("boom") });
    let waited = tokio::spawn(group.wait()).await;
    assert!(waited.is_err_and(|join| join.is_panic()));
    assert!(until_freed(&probe).await, "panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_never_exceeded() {
    let group = Group::<Boom>::new(Context::background());
    group.set_limit(3);
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for i in 0..30 {
        let (now2, now3) = (now.clone(), now.clone());
        let (now, peak) = (now.clone(), peak.clone());
        let body = move || {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
        };
        if i % 3 == 0 {
            group.spawn_blocking(move |_| {
                body();
                std::thread::sleep(Duration::from_millis(3));
                now2.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            });
        } else {
            group.spawn(async move {
                body();
                tokio::time::sleep(Duration::from_millis(3)).await;
                now3.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            });
        }
    }
    group.wait().await.unwrap();
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "tasks did run concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_cancels_the_group_and_wait_resumes_it() {
    let group = Group::<Boom>::new(Context::background());
    let sibling_saw = Arc::new(Mutex::new(None));
    let saw = sibling_saw.clone();
    group.spawn(async move {
        let err = Context::current().done().await;
        *saw.lock().unwrap() = Some(err);
        Ok(())
    });
    group.spawn(async { panic!("task exploded") });
    let joined = tokio::spawn(group.wait()).await;
    let panic = joined.expect_err("wait resumes the panic").into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"task exploded"));
    assert_eq!(
        *sibling_saw.lock().unwrap(),
        Some(Error::Cancelled),
        "siblings were cancelled and joined first"
    );
}

#[tokio::test]
async fn tasks_run_with_the_group_context_as_current() {
    let parent = Context::background().with_value(Tenant(5));
    let group = Group::<Boom>::new(&parent);
    let expected = group.context().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tx2 = tx.clone();
    group.spawn(async move {
        let _ = tx.send((
            Context::current().to_string(),
            Context::current().value::<Tenant>().map(|t| t.0),
        ));
        Ok(())
    });
    group.spawn_blocking(move |ctx| {
        let _ = tx2.send((
            Context::current().to_string(),
            ctx.value::<Tenant>().map(|t| t.0),
        ));
        Ok(())
    });
    group.wait().await.unwrap();
    for _ in 0..2 {
        assert_eq!(rx.recv().await.unwrap(), (expected.clone(), Some(5)));
    }
}

#[tokio::test]
async fn parent_cancel_reaches_group_tasks() {
    let parent = Context::background().with_cancel();
    let group = Group::<Boom>::new(&parent);
    group.spawn(async {
        let err = Context::current().done().await;
        assert_eq!(err, Error::Cancelled);
        Ok(())
    });
    parent.cancel();
    assert_eq!(
        tokio::time::timeout(PROMPTLY, group.wait()).await.unwrap(),
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_carries_the_ambient_context_and_leaks_it_nowhere() {
    let ctx = Context::background().with_value(Tenant(42));
    let handle = ctx.enter(|| {
        ctx_core::spawn(async {
            let mut seen = Vec::new();
            for _ in 0..5 {
                seen.push(Context::current().value::<Tenant>().map(|t| t.0));
                tokio::task::yield_now().await; // may resume on the other worker
            }
            seen
        })
    });
    assert_eq!(handle.await.unwrap(), [Some(42); 5]);
    // The workers' own current context is untouched.
    let plain = tokio::spawn(async { Context::current().value::<Tenant>().is_none() });
    assert!(plain.await.unwrap());
    let blocking = ctx
        .enter(|| ctx_core::spawn_blocking(|| Context::current().value::<Tenant>().map(|t| t.0)));
    assert_eq!(blocking.await.unwrap(), Some(42));
    let plain = tokio::task::spawn_blocking(|| Context::current().value::<Tenant>().is_none());
    assert!(plain.await.unwrap());
}

#[tokio::test]
async fn signal_cancels_with_a_cause_naming_it() {
    use tokio::signal::unix::SignalKind;
    let parent = Context::background().with_value(Tenant(1));
    let scope = signal::notify(&parent, &[SignalKind::user_defined1()]).unwrap();
    assert!(!scope.is_cancelled());
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let err = tokio::time::timeout(PROMPTLY, scope.done())
        .await
        .expect("cancelled by the signal");
    assert_eq!(err, Error::Cancelled);
    let cause = scope.cause().unwrap();
    assert_eq!(cause.to_string(), "received SIGUSR1");
    assert_eq!(
        cause.downcast_ref::<signal::SignalReceived>(),
        Some(&signal::SignalReceived(SignalKind::user_defined1()))
    );
    assert_eq!(scope.value::<Tenant>().map(|t| t.0), Some(1));
}

#[tokio::test]
async fn signal_scope_dropped_stops_listening() {
    use tokio::signal::unix::SignalKind;
    let scope = signal::notify(Context::background(), &[SignalKind::user_defined2()]).unwrap();
    let ctx = scope.context().clone();
    drop(scope);
    assert_eq!(ctx.err(), Some(Error::Cancelled));
    assert_eq!(ctx.cause(), Some(Error::Cancelled.into()));
}

#[tokio::test]
async fn process_runs_to_completion() {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
    let out = process::output(&Context::background(), &mut cmd, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(3));
}

fn is_reaped(pid: i32) -> bool {
    // SAFETY: waitpid on a pid with WNOHANG has no memory-safety preconditions.
    let rc = unsafe { libc_waitpid(pid) };
    // -1 with ECHILD: not our child any more (reaped). A zombie would return `pid`.
    rc == -1 && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

unsafe extern "C" {
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
}

unsafe fn libc_waitpid(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; WNOHANG = 1.
    unsafe { waitpid(pid, &mut status, 1) }
}

/// The parts of a `ProcessError::Stopped`; any other error fails the test.
fn stopped(err: process::ProcessError) -> (Error, bool, std::process::Output) {
    match err {
        process::ProcessError::Stopped {
            err,
            killed,
            output,
        } => (err, killed, output),
        other => panic!("expected a stopped command: {other}"),
    }
}

#[tokio::test]
async fn process_that_stops_on_sigterm() {
    let ctx = Context::background().with_timeout(Duration::from_millis(300));
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "echo $$; echo started; exec sleep 30"]);
    let err = process::output(&ctx, &mut cmd, Duration::from_secs(5))
        .await
        .unwrap_err();
    let (err, killed, output) = stopped(err);
    assert_eq!(err, Error::DeadlineExceeded);
    assert!(!killed, "sleep dies on SIGTERM");
    let text = String::from_utf8(output.stdout).unwrap();
    let pid: i32 = text.lines().next().unwrap().parse().unwrap();
    assert!(text.contains("started"));
    assert!(is_reaped(pid), "no zombie left");
}

#[tokio::test]
async fn process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let ctx = Context::background().with_timeout(Duration::from_millis(200));
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "trap '' TERM; echo $$; while :; do sleep 0.05; done"]);
    let started = Instant::now();
    let err = process::output(&ctx, &mut cmd, Duration::from_millis(300))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let (err, killed, output) = stopped(err);
    assert_eq!(err, Error::DeadlineExceeded);
    assert!(killed, "SIGKILL was needed");
    assert!(
        elapsed >= Duration::from_millis(500),
        "waited the grace period: {elapsed:?}"
    );
    assert!(elapsed < PROMPTLY);
    let pid: i32 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(is_reaped(pid), "no zombie left");
}

#[tokio::test]
async fn process_on_a_done_context_never_starts() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let mut cmd = tokio::process::Command::new("touch");
    let marker = std::env::temp_dir().join(format!("ctx-never-{}", std::process::id()));
    cmd.arg(&marker);
    let err = process::output(&ctx, &mut cmd, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.context_error(), Some(Error::Cancelled));
    assert!(!marker.exists());
}

#[tokio::test]
async fn process_that_cannot_start_is_an_io_error() {
    let mut cmd = tokio::process::Command::new("/nonexistent/ctx-no-such-binary");
    let err = process::output(&Context::background(), &mut cmd, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, process::ProcessError::Io(_)), "{err}");
}
