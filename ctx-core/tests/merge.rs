//! `Context::merge`: a context that ends when either of two ends.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ctx_core::{Context, ContextKey, Error};

const PROMPTLY: Duration = Duration::from_secs(10);

struct User(&'static str);
impl ContextKey for User {
    const NAME: &'static str = "User";
}

struct Tenant(u32);
impl ContextKey for Tenant {
    const NAME: &'static str = "Tenant";
}

#[test]
fn either_parent_ends_it_with_its_error_and_cause() {
    for first_ends in [true, false] {
        let first = Context::background().with_cancel();
        let second = Context::background().with_cancel();
        let merged = first.merge(&second);
        let below = merged.with_value(Tenant(1)).with_cancel();
        assert_eq!(merged.err(), None);
        let (ended, other) = if first_ends {
            (first, second)
        } else {
            (second, first)
        };
        ended.cancel_with("went away");
        // Done before the cancel returned, descendants too, with the cause of the one that
        // ended first.
        assert_eq!(merged.err(), Some(Error::Cancelled));
        assert_eq!(below.err(), Some(Error::Cancelled));
        assert_eq!(merged.cause().unwrap().to_string(), "went away");
        assert_eq!(below.cause().unwrap().to_string(), "went away");
        // The second end changes nothing.
        other.cancel_with("too late");
        assert_eq!(merged.cause().unwrap().to_string(), "went away");
    }
}

#[test]
fn the_earlier_deadline_wins_and_fires() {
    let soon = Context::background().with_timeout(Duration::from_millis(20));
    let later = Context::background().with_timeout(Duration::from_secs(3600));
    for merged in [later.merge(&soon), soon.merge(&later)] {
        assert_eq!(merged.deadline(), soon.deadline());
        assert_eq!(merged.wait_timeout(PROMPTLY), Some(Error::DeadlineExceeded));
        assert!(Instant::now() >= soon.deadline().unwrap());
    }
    let never = Context::background();
    assert_eq!(never.merge(&later).deadline(), later.deadline());
    assert_eq!(later.merge(&never).deadline(), later.deadline());
    assert_eq!(never.merge(&Context::todo()).deadline(), None);
}

#[test]
fn values_come_from_self_then_other() {
    let first = Context::background().with_value(User("ann"));
    let second = Context::background()
        .with_value(User("bob"))
        .with_value(Tenant(7));
    let merged = first.merge(&second);
    assert_eq!(merged.value::<User>().unwrap().0, "ann");
    assert_eq!(merged.value::<Tenant>().unwrap().0, 7);
    let inner = merged.with_value(User("cyd"));
    assert_eq!(inner.value::<User>().unwrap().0, "cyd");
    assert_eq!(inner.value::<Tenant>().unwrap().0, 7);
    // Merges of merges search depth-first, self's side first.
    let third = Context::background().with_value(Tenant(9));
    let nested = third.merge(&merged);
    assert_eq!(nested.value::<Tenant>().unwrap().0, 9);
    assert_eq!(nested.value::<User>().unwrap().0, "ann");
}

#[test]
fn merging_with_an_ended_context_is_born_ended() {
    let first = Context::background().with_cancel();
    let gone = Context::background().with_cancel();
    let gone_ctx = gone.context().clone();
    gone.cancel_with("already gone");
    let merged = first.merge(&gone_ctx);
    assert_eq!(merged.err(), Some(Error::Cancelled));
    assert_eq!(merged.cause().unwrap().to_string(), "already gone");
    assert!(!first.is_cancelled());

    let ended_first = Context::background().with_timeout(Duration::ZERO);
    let merged = ended_first.merge(&Context::background().with_cancel());
    assert_eq!(merged.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn a_merge_ends_on_its_own_and_leaves_both_parents_live() {
    let first = Context::background().with_cancel();
    let second = Context::background().with_cancel();
    let merged = first.merge(&second);
    let ctx = merged.context().clone();
    merged.cancel();
    assert_eq!(ctx.err(), Some(Error::Cancelled));
    assert!(!first.is_cancelled());
    assert!(!second.is_cancelled());
    second.cancel(); // finds no registration left: nothing to do
    assert!(!first.is_cancelled());
}

#[test]
fn waiters_and_after_funcs_of_a_merge_run_when_the_second_parent_ends() {
    let first = Context::background().with_cancel();
    let (second, cancel_second) = Context::background().with_cancel().into_parts();
    let merged = first.merge(&second);
    let (tx, rx) = mpsc::channel();
    let _after = merged.after_func(move || tx.send("after").unwrap());
    let waiter = {
        let ctx = merged.context().clone();
        std::thread::spawn(move || ctx.wait())
    };
    cancel_second.cancel();
    assert_eq!(waiter.join().unwrap(), Error::Cancelled);
    assert_eq!(rx.recv_timeout(PROMPTLY), Ok("after"));
}

#[test]
fn merges_chain_and_cross_without_deadlock() {
    // a.merge(b) and b.merge(a) at once, cancelled from two threads: both end, no deadlock.
    for _ in 0..200 {
        let a = Context::background().with_cancel();
        let b = Context::background().with_cancel();
        let ab = a.merge(&b);
        let ba = b.merge(&a);
        let abba = ab.merge(&ba);
        let (a_ctx, b_ctx) = (a.context().clone(), b.context().clone());
        let t = std::thread::spawn(move || b.cancel());
        a.cancel();
        t.join().unwrap();
        assert!(ab.is_cancelled() && ba.is_cancelled() && abba.is_cancelled());
        assert!(a_ctx.is_cancelled() && b_ctx.is_cancelled());
    }
}

#[test]
fn display_shows_both_chains() {
    let first = Context::background().with_cancel();
    let second = Context::todo().with_value(User("ann"));
    assert_eq!(
        first.merge(&second).to_string(),
        "context.Background.WithCancel.Merge(context.TODO.WithValue(User))"
    );
}
