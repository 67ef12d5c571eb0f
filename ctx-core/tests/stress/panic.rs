//! `panic_stress`: wakers, after-funcs and values whose `Drop` panic, mixed with normal
//! ones, in a child process (see `main.rs`).

#[allow(
    unused_imports,
    reason = "the test crate's shared imports, used in part"
)]
use super::*;

// ---------------------------------------------------------------------------------------------
// c) panic stress
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "CTX_STRESS_PANIC_CHILD";
const MARK: &str = "ctx stress: intentional panic";

static INTENTIONAL_PANICS: AtomicUsize = AtomicUsize::new(0);

/// A value that counts its drops.
struct Tracked(Arc<AtomicUsize>);
impl ContextKey for Tracked {
    const NAME: &'static str = "Tracked";
}
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A value whose `Drop` panics (unless already unwinding, which would abort).
struct Bomb;
impl ContextKey for Bomb {
    const NAME: &'static str = "Bomb";
}
impl Drop for Bomb {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("{MARK}: a ContextKey value's Drop");
        }
    }
}

struct PanicWaker;
impl Wake for PanicWaker {
    fn wake(self: Arc<Self>) {
        panic!("{MARK}: Waker::wake");
    }
    fn wake_by_ref(self: &Arc<Self>) {
        panic!("{MARK}: Waker::wake_by_ref");
    }
}

/// Runs the body in a child process: its panics may kill the deadline driver (a defect this
/// test looks for), which would fail the other tests of this binary too, and only there may
/// the expected panics be silenced without touching another test's panic hook.
#[test]
fn panic_stress() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return panic_stress_child();
    }
    let seed = seed("panic_stress");
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([
            "panic::panic_stress",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("CTX_STRESS_SEED", seed.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("could not start the test binary as a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprint!("{stderr}"); // its seed and figures
    } else {
        eprintln!("panic_stress: the child's output:\n{stdout}{stderr}");
    }
    let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    assert!(
        out.status.success(),
        "panic_stress: seed = {seed}: the child process failed ({}); the end of its stderr:\n{}\n(rerun with CTX_STRESS_SEED={seed})",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    );
}

fn panic_stress_child() {
    let seed = seed("panic_stress (child)");
    let fails = Fails::new("panic_stress", seed);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if panic_message(info.payload()).contains(MARK) {
            INTENTIONAL_PANICS.fetch_add(1, SeqCst);
        } else {
            default_hook(info);
        }
    }));
    let end = Instant::now() + budget();
    let mut rounds = 0;
    let mut contexts = 0;
    loop {
        contexts += panic_round(seed, rounds, &fails);
        rounds += 1;
        if fails.any() || Instant::now() >= end {
            break;
        }
    }
    eprintln!(
        "panic_stress: seed = {seed}: {rounds} rounds, {contexts} contexts, {} intentional panics (silenced)",
        INTENTIONAL_PANICS.load(SeqCst)
    );
    fails.assert_none();
}

/// Cancels, drops or `cancel_with`s a scope inside `catch_unwind`: a user panic during the
/// cancel may come back out of it (after the cancel finished) or be swallowed; both are fine.
fn end_catching(scope: CancelScope, how: u8) {
    let _ = catch_unwind(AssertUnwindSafe(move || match how % 3 {
        0 => scope.cancel(),
        1 => scope.cancel_with("stress"),
        _ => drop(scope),
    }));
}

/// One round; returns how many contexts it made.
fn panic_round(seed: u64, round: u64, fails: &Fails) -> usize {
    let mut rng = rng(seed, round);
    let bound = late_bound().max(Duration::from_secs(5));
    let value_drops = Arc::new(AtomicUsize::new(0));
    let mut tracked = 0;
    let root = Context::background().with_cancel();
    // A short deadline right under the root: the driver fires it, waking whatever waits on
    // it and its subtree (panicking wakers included). Nothing else keeps it alive in the
    // driver, so a value's panicking `Drop` can never run on the driver thread.
    let short = root.with_timeout(Duration::from_micros(rng.u64(200..=2_000)));
    let short_at = short.deadline().expect("with_timeout has a deadline");
    let mut held: Vec<Context> = vec![root.context().clone(), short.context().clone()];
    let mut under_short: Vec<Context> = vec![short.context().clone()];
    let mut scopes: Vec<CancelScope> = Vec::new();
    let mut wakers: Vec<(Done, Arc<CountWaker>, String)> = Vec::new();
    let mut panic_dones: Vec<Done> = Vec::new();
    let mut afters: Vec<(Option<AfterFunc>, Arc<AtomicUsize>, String)> = Vec::new();
    let mut panic_afters: Vec<AfterFunc> = Vec::new();
    let panicky_short = rng.bool();

    for _ in 0..rng.usize(20..=60) {
        let below_short = rng.u8(..3) == 0;
        let parent = if below_short {
            under_short[rng.usize(..under_short.len())].clone()
        } else {
            held[rng.usize(..held.len())].clone()
        };
        let child = match rng.u8(..12) {
            0..=2 => {
                let scope = parent.with_cancel();
                let ctx = scope.context().clone();
                scopes.push(scope);
                Some(ctx)
            }
            3 => {
                let scope = parent.with_timeout(Duration::from_secs(3600));
                let ctx = scope.context().clone();
                scopes.push(scope);
                Some(ctx)
            }
            4 | 5 => {
                tracked += 1;
                Some(parent.with_value(Tracked(Arc::clone(&value_drops))))
            }
            6 => Some(parent.with_value(Bomb)),
            7 | 8 => {
                let waker = Arc::new(CountWaker::default());
                let mut done = parent.done();
                if poll_with(&mut done, &waker).is_pending() {
                    wakers.push((done, waker, parent.to_string()));
                }
                None
            }
            9 => {
                let mut done = parent.done();
                if poll_with(&mut done, &Arc::new(PanicWaker)).is_pending() {
                    panic_dones.push(done);
                }
                None
            }
            10 => {
                panic_afters.push(parent.after_func(|| panic!("{MARK}: an after_func")));
                None
            }
            _ => {
                let count = Arc::new(AtomicUsize::new(0));
                let counter = Arc::clone(&count);
                let after = parent.after_func(move || {
                    counter.fetch_add(1, SeqCst);
                });
                let keep = rng.u8(..4) != 0;
                afters.push((keep.then_some(after), count, parent.to_string()));
                None
            }
        };
        if let Some(child) = child {
            if below_short {
                under_short.push(child.clone());
            }
            held.push(child);
        }
    }
    if panicky_short {
        let on = &under_short[rng.usize(..under_short.len())];
        let mut done = on.done();
        if poll_with(&mut done, &Arc::new(PanicWaker)).is_pending() {
            panic_dones.push(done);
        }
    }

    // 1. The driver fires the short deadline.
    if !done_by(&short, short_at + bound) {
        fails.fail("short deadline did not fire", format!(
            "round {round}: the short deadline under the root did not fire within {bound:?} (panicking waker below it: {panicky_short})"
        ));
    }
    // 2. Some scopes are ended first, then the root (or it is dropped), then the rest.
    rng.shuffle(&mut scopes);
    let first = rng.usize(..=scopes.len());
    let rest = scopes.split_off(first);
    for scope in scopes {
        end_catching(scope, rng.u8(..));
    }
    let root_how = rng.u8(..);
    end_catching(root, root_how);
    for scope in rest {
        end_catching(scope, rng.u8(..));
    }
    end_catching(short, rng.u8(..));

    // 3. Everything is done, every plain waker woken, every plain after-func run once.
    for ctx in &held {
        if ctx.err().is_none() {
            fails.fail("context not done after the root ended", format!(
                "round {round}: after the root's cancel returned (or panicked), {ctx} is not done"
            ));
        }
    }
    for (_, waker, on) in &wakers {
        if waker.count() == 0 {
            fails.fail(
                "non-panicking waker not woken",
                format!("round {round}: a non-panicking waker on {on} was never woken"),
            );
        }
    }
    let counters: Vec<_> = afters.iter().map(|(_, n, _)| (&**n, 1)).collect();
    settle(&counters, Duration::from_secs(10));
    for (handle, count, on) in &afters {
        let ran = count.load(SeqCst);
        if ran != 1 {
            fails.fail("non-panicking after_func not run exactly once", format!(
                "round {round}: a non-panicking after_func on {on} ran {ran} time(s), expected 1 (AfterFunc kept: {}; waited up to 10 s)",
                handle.is_some()
            ));
        }
    }
    // 4. The deadline driver survived.
    let fresh = Context::background().with_timeout(Duration::from_millis(5));
    let fresh_at = fresh.deadline().expect("with_timeout has a deadline");
    if !done_by(&fresh, fresh_at + bound) {
        fails.fail("deadline driver died", format!(
            "round {round}: a fresh with_timeout(5ms) did not fire within {bound:?}: the deadline driver did not survive the panics"
        ));
    }
    // 5. Dropping every reference drops every value, whatever Drop panicked before.
    let contexts = held.len();
    drop((
        wakers,
        panic_dones,
        afters,
        panic_afters,
        under_short,
        fresh,
    ));
    for ctx in held {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(ctx)));
    }
    if !settle(&[(&value_drops, tracked)], Duration::from_secs(10)) {
        fails.fail("values not dropped", format!(
            "round {round}: all contexts were dropped, but only {} of {tracked} values were (waited 10 s)",
            value_drops.load(SeqCst)
        ));
    }
    contexts
}
