//! The core: the public handles ([`Context`], [`CancelScope`], [`CancelHandle`],
//! [`AfterFunc`], [`Done`], [`Run`], [`Scoped`]) and the errors and keys they speak, as thin
//! shells over [`tree`], which holds the whole algorithm.
//!
//! This module is the boundary the compiler keeps: the tree and the handles' internals are
//! `pub(in crate::context)`, so code outside it (the integrations in `crate::integrations`)
//! can only use what a user of the crate could.
//!
//! | file | holds |
//! | --- | --- |
//! | `handle.rs` | [`Context`]: derivation, queries, Go's `Display` |
//! | `scope.rs` | [`CancelScope`] and [`CancelHandle`] |
//! | `wait.rs` | [`Done`], [`Run`], blocking waits |
//! | `after.rs` | [`AfterFunc`] |
//! | `ambient.rs` | [`Context::current`], [`Scoped`] |
//! | `error.rs` | [`Error`], [`Cause`] |
//! | `key.rs` | [`ContextKey`] and the key summary behind fast misses |
//! | `go_format.rs` | Go's formatting of durations and times, for `Display` |
//! | `testing.rs` | feature `test-util`: `explore_cancellation` (the paused clock is `tree/clock.rs`) |
//! | `macro_support.rs` | what the macros' generated code calls (`ctx_core::__private`) |
//! | `tree/` | nodes, the children list, the cancel walk, drops, the deadline driver |

mod after;
mod ambient;
#[cfg(feature = "debug-tree")]
pub mod debug;
mod error;
mod go_format;
mod handle;
mod key;
pub(crate) mod macro_support;
mod scope;
#[cfg(feature = "test-util")]
pub mod testing;
mod tree;
mod wait;

pub use after::AfterFunc;
pub use ambient::Scoped;
pub use error::{Cause, Error};
pub use handle::Context;
pub use key::ContextKey;
pub use scope::{CancelHandle, CancelScope};
pub use wait::{Done, Run};

#[cfg(ctx_loom)]
pub(crate) fn stop_deadline_driver() {
    tree::timer::stop_driver();
}

#[cfg(ctx_loom)]
pub(crate) fn recycling() -> (usize, usize) {
    (tree::recycle::kept(), tree::recycle::budget_left())
}

#[cfg(ctx_loom)]
pub(crate) fn spread_children(ctx: &Context) {
    if let Some(core) = ctx.core() {
        tree::spread_now(core);
    }
}

#[cfg(test)]
mod unit_tests;
