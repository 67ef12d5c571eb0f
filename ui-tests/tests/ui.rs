//! The trybuild suite: `ui/pass/*.rs` must compile (warning-free: each denies warnings),
//! `ui/fail/*.rs` must fail with exactly the `.stderr` beside it.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p ui-tests`, then read
//! each: the message must name the mistake and the fix, with no follow-on errors.
//! Each fail case opens with a `//!` line saying what the misuse is.
//!
//! This suite compiles on edition 2024 (the workspace's). The crates `edition2018/` and
//! `edition2021/` beside it compile every `ui/pass/*.rs` on their edition as a test whose
//! `main` runs, and run `behaviour.rs` there too, so each shape is proven on every edition.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
