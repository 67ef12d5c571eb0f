//! `timer_stress`: timeouts re-armed the instant the last fired, and deadlines armed,
//! waited for, cancelled and dropped around their firing time (see `main.rs`).

#[allow(
    unused_imports,
    reason = "the test crate's shared imports, used in part"
)]
use super::*;

// ---------------------------------------------------------------------------------------------
// b) timer stress
// ---------------------------------------------------------------------------------------------

/// `err()` read before the clock: if the deadline's error shows, the clock must be past it.
fn check_not_early(fails: &Fails, what: &str, ctx: &Context, deadline: Instant) {
    let err = ctx.err();
    let now = Instant::now();
    if err == Some(Error::DeadlineExceeded) && now < deadline {
        fails.fail(
            "early",
            format!(
                "{what}: DeadlineExceeded {:?} before the deadline",
                deadline - now
            ),
        );
    }
}

/// Waits for a deadline nobody cancels; returns its lateness, or records why not.
fn wait_fire(
    fails: &Fails,
    what: &str,
    ctx: &Context,
    deadline: Instant,
    bound: Duration,
) -> Option<Duration> {
    let wait = deadline.saturating_duration_since(Instant::now()) + bound;
    let got = ctx.wait_timeout(wait);
    let now = Instant::now();
    match got {
        None => {
            let err = ctx.err();
            let note = if err.is_none() {
                "deadline never fired"
            } else {
                "deadline fired too late"
            };
            fails.fail(note, format!(
                "{what}: waited {wait:?} (until {bound:?} past the deadline); err() is now {err:?}"
            ));
            None
        }
        Some(Error::DeadlineExceeded) if now < deadline => {
            fails.fail(
                "early",
                format!("{what}: fired {:?} before its deadline", deadline - now),
            );
            None
        }
        Some(Error::DeadlineExceeded) => Some(now - deadline),
        Some(other) => {
            fails.fail("wrong error", format!(
                "{what}: ended with {other:?}, but nobody cancelled it (expected DeadlineExceeded)"
            ));
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Wait,
    Cancel,
    Drop,
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

fn armer(fails: &Fails, rng: &mut fastrand::Rng, end: Instant, bound: Duration) -> Vec<Duration> {
    let bg = Context::background();
    let mut lateness = Vec::new();
    while Instant::now() < end && !fails.any() {
        let mut parents = Vec::new();
        let mut batch: Vec<(Instant, CancelScope, Fate, &str)> = Vec::new();
        for _ in 0..rng.usize(1..=8) {
            let now = Instant::now();
            let micros = |rng: &mut fastrand::Rng| Duration::from_micros(rng.u64(0..=2_000));
            let fate = match rng.u8(..4) {
                0 | 1 => Fate::Wait,
                2 => Fate::Cancel,
                _ => Fate::Drop,
            };
            match rng.u8(..10) {
                0 => {
                    let at = now.checked_sub(micros(rng)).unwrap_or(now);
                    let scope = bg.with_deadline(at);
                    if scope.err() != Some(Error::DeadlineExceeded) {
                        fails.fail("past deadline not born expired", format!(
                            "with_deadline({:?} in the past) was not born expired: err() = {:?}",
                            now - at,
                            scope.err()
                        ));
                    }
                }
                1 | 2 => {
                    let (parent_at, own_at) = (now + micros(rng), now + micros(rng));
                    let parent = bg.with_deadline(parent_at);
                    let child = parent.with_deadline(own_at);
                    let expected = parent_at.min(own_at);
                    if child.deadline() != Some(expected) {
                        fails.fail("deadline", format!(
                            "with_deadline under a deadline parent: deadline {:?}, expected the earlier {expected:?}",
                            child.deadline()
                        ));
                    }
                    parents.push(parent); // kept (not cancelled) until the batch is over
                    batch.push((
                        expected,
                        child,
                        fate,
                        "with_deadline under a deadline parent",
                    ));
                }
                _ => {
                    let d = micros(rng);
                    let (scope, what) = if rng.bool() {
                        (bg.with_timeout(d), "with_timeout(0-2ms)")
                    } else {
                        (bg.with_deadline(now + d), "with_deadline(now + 0-2ms)")
                    };
                    match scope.deadline() {
                        Some(at) if at >= now + d => batch.push((at, scope, fate, what)),
                        other => fails.fail(
                            "deadline",
                            format!(
                                "{what}: deadline() = {other:?}, expected at least now + {d:?}"
                            ),
                        ),
                    }
                }
            }
        }
        batch.sort_by_key(|(at, ..)| *at);
        for (at, scope, fate, what) in batch {
            match fate {
                Fate::Wait => lateness.extend(wait_fire(fails, what, &scope, at, bound)),
                Fate::Cancel | Fate::Drop => {
                    let jitter = Duration::from_micros(rng.u64(0..=300));
                    sleep_until(if rng.bool() {
                        at.checked_sub(jitter).unwrap_or(at)
                    } else {
                        at + jitter
                    });
                    check_not_early(fails, what, &scope, at);
                    let ctx = scope.context().clone();
                    if fate == Fate::Cancel {
                        scope.cancel();
                    } else {
                        drop(scope);
                    }
                    if ctx.err().is_none() {
                        fails.fail(
                            "cancel returned, context live",
                            format!(
                                "{what}: cancel/drop of its scope returned, but it is not done"
                            ),
                        );
                    }
                    check_not_early(fails, what, &ctx, at);
                }
            }
        }
        drop(parents);
    }
    lateness
}

/// Re-arms a 30–200 µs timeout the instant the previous one fired.
fn rearmer(fails: &Fails, rng: &mut fastrand::Rng, end: Instant, bound: Duration) -> Vec<Duration> {
    let bg = Context::background();
    let mut lateness = Vec::new();
    while Instant::now() < end && !fails.any() {
        let scope = bg.with_timeout(Duration::from_micros(rng.u64(30..=200)));
        let Some(at) = scope.deadline() else {
            fails.fail("deadline", "with_timeout(30-200us) has no deadline");
            break;
        };
        match wait_fire(
            fails,
            "a 30-200us timeout re-armed as the last one fired",
            &scope,
            at,
            bound,
        ) {
            Some(late) => lateness.push(late),
            None => break,
        }
    }
    lateness
}

/// Re-arms a 30–200 µs timeout the very instant the last one fired: it spins on
/// `is_cancelled` (no park, no wake-up latency), then 0–2 µs more, so its arms land anywhere
/// in the driver's way back to sleep, where a lost wake-up hides. Run alone, so no other
/// deadline wakes the driver and covers a lost wake-up up.
fn spin_rearmer(
    fails: &Fails,
    rng: &mut fastrand::Rng,
    end: Instant,
    bound: Duration,
) -> Vec<Duration> {
    let bg = Context::background();
    let what = "a 30-200us timeout re-armed (spinning) the instant the last one fired";
    let mut lateness = Vec::new();
    let mut scope = bg.with_timeout(Duration::from_micros(rng.u64(30..=200)));
    while !fails.any() {
        let Some(at) = scope.deadline() else {
            fails.fail("deadline", "with_timeout(30-200us) has no deadline");
            break;
        };
        let give_up = at + bound;
        while !scope.is_cancelled() {
            if Instant::now() >= give_up {
                fails.fail(
                    "deadline never fired",
                    format!(
                        "{what}: not done {bound:?} after its deadline (spinning on is_cancelled)"
                    ),
                );
                return lateness;
            }
            std::hint::spin_loop();
        }
        let fired = Instant::now(); // read after the state: never early means fired >= at
        match scope.err() {
            Some(Error::DeadlineExceeded) if fired < at => fails.fail(
                "early",
                format!("{what}: fired {:?} before its deadline", at - fired),
            ),
            Some(Error::DeadlineExceeded) => lateness.push(fired - at),
            other => fails.fail(
                "wrong error",
                format!("{what}: ended with {other:?}, expected DeadlineExceeded"),
            ),
        }
        if fired >= end {
            break;
        }
        let spin = Duration::from_nanos(rng.u64(0..=2_000));
        while fired.elapsed() < spin {
            std::hint::spin_loop();
        }
        let next = bg.with_timeout(Duration::from_micros(rng.u64(30..=200)));
        drop(std::mem::replace(&mut scope, next)); // the old one goes after the arm
    }
    lateness
}

#[test]
fn timer_stress() {
    let seed = seed("timer_stress");
    let fails = Fails::new("timer_stress", seed);
    let bound = late_bound();
    let start = Instant::now();
    let half = start + budget() / 2;

    // Phase 1 (half the budget): a spinning re-armer alone. First, because then (in the usual
    // order of this binary's tests) no other test has deadlines armed in this process that
    // would wake the driver and cover a lost wake-up up. Each slice runs on a fresh thread:
    // the driver's bookkeeping may depend on which thread arms (per-thread timer shards, say),
    // and a lost wake-up on where the arm lands relative to the driver's scan.
    let mut spun = Vec::new();
    let slices = 16;
    for slice in 0..slices {
        let slice_end = start + (half - start) * (slice + 1) / slices;
        let mut rng = rng(seed, 0x5B1 + u64::from(slice));
        let fails = &fails;
        spun.extend(thread::scope(|s| {
            s.spawn(move || {
                let mut got = Vec::new();
                guarded(fails, "spinning re-armer", || {
                    got = spin_rearmer(fails, &mut rng, slice_end, bound)
                });
                got
            })
            .join()
            .unwrap_or_default()
        }));
        if fails.any() {
            break;
        }
    }

    // Phase 2: armers and a blocking re-armer.
    let end = start + budget();
    let armers = threads().max(2) - 1;
    let (waited, rearmed) = thread::scope(|s| {
        let fails = &fails;
        let handles: Vec<_> = (0..armers)
            .map(|t| {
                let mut rng = rng(seed, t as u64 + 1);
                s.spawn(move || {
                    let mut got = Vec::new();
                    guarded(fails, &format!("armer {t}"), || {
                        got = armer(fails, &mut rng, end, bound)
                    });
                    got
                })
            })
            .collect();
        let mut rng = rng(seed, 0xA11);
        let mut rearmed = Vec::new();
        guarded(fails, "re-armer", || {
            rearmed = rearmer(fails, &mut rng, end, bound)
        });
        let waited: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        (waited, rearmed)
    });
    eprintln!(
        "timer_stress: seed = {seed}: {armers} armers; lateness seen by waiters: {}; re-armed timeouts: {}; re-armed (spinning, alone): {}",
        percentiles(waited),
        percentiles(rearmed),
        percentiles(spun)
    );
    fails.assert_none();
}
