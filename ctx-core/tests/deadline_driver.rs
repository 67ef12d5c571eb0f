//! The deadline driver never misses an arm: a timeout armed the instant the previous one
//! fired still fires (invariant 8 of `tree/mod.rs`).

use std::time::{Duration, Instant};

use ctx_core::{Context, Error};

mod support;

use support::PROMPTLY;

// -----------------------------------------------------------------------------------------
// Defect 2: an arm that landed while the driver rescanned after a fire was neither seen by
// the rescan nor woke the driver.

#[test]
fn a_timeout_rearmed_the_instant_the_previous_fired_always_fires() {
    let mut timeouts = [30u64, 200, 75, 120, 45, 160].iter().cycle();
    let until = Instant::now() + Duration::from_secs(2);
    let mut fired = 0;
    while Instant::now() < until {
        let timeout = Duration::from_micros(*timeouts.next().unwrap());
        let scope = Context::background().with_timeout(timeout);
        assert_eq!(
            scope.wait_timeout(PROMPTLY),
            Some(Error::DeadlineExceeded),
            "a {timeout:?} deadline never fired (after {fired} that did)"
        );
        fired += 1;
    }
    assert!(fired > 100, "only {fired} deadlines in 2 s");
}
