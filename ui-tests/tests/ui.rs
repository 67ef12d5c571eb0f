//! The trybuild suite: `ui/pass/*.rs` must compile (warning-free: each denies warnings),
//! `ui/fail/*.rs` must fail with exactly the `.stderr` beside it.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p ui-tests`, then read
//! each: the message must name the mistake and the fix, with no follow-on errors.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
