//! Go's `context` package, Rust-native: cancellation trees, deadlines and request-scoped
//! values, with RAII cancel and typed keys.
//!
//! A [`Context`] is a node in a tree rooted at [`Context::background`]. Deriving a child
//! ([`with_cancel`](Context::with_cancel), [`with_timeout`](Context::with_timeout),
//! [`with_deadline`](Context::with_deadline)) gives a [`CancelScope`]: the child context plus
//! the right to cancel it, exercised on drop at the latest. Cancelling a node cancels its
//! whole subtree before `cancel` returns; deadlines fire on their own, with or without an
//! async runtime. Values ride along with [`with_value`](Context::with_value), keyed by type.
//!
//! ```
//! # #[cfg(feature = "macros")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, ContextKey, Error};
//!
//! #[derive(ContextKey)]
//! struct RequestId(u64);
//!
//! fn handle(ctx: &Context) -> Result<u64, Error> {
//!     let mut steps = 0;
//!     while steps < 1_000 {
//!         ctx.checkpoint()?; // one atomic load
//!         steps += 1;
//!     }
//!     Ok(ctx.value::<RequestId>().map_or(0, |id| id.0) + steps)
//! }
//!
//! let root = Context::background().with_value(RequestId(7));
//! let request = root.with_timeout(Duration::from_secs(1));
//! assert_eq!(handle(&request), Ok(1_007));
//!
//! request.cancel(); // or just let it drop
//! # }
//! # #[cfg(not(feature = "macros"))] fn main() {}
//! ```
//!
//! # Compared with Go
//!
//! Semantics follow Go 1.21+'s `context` (propagation, first cancel wins, earlier parent
//! deadline wins, `Cause`, `WithoutCancel`, `AfterFunc`). Where Rust does better, ctx does:
//! cancel is RAII (no `lostcancel`), a dropped child leaves no trace in its parent, keys are
//! types, and [`Context::run`] drops a future when its context ends.
//!
//! # Cost
//!
//! [`Context::is_cancelled`] and [`Context::checkpoint`] are one atomic load. Each
//! derivation is one heap allocation; `background()` and `todo()` none; cancel allocates
//! nothing (but a queue slot per [`AfterFunc`]). Cancel and drop use no recursion, so chains of
//! any depth are safe.

#![warn(missing_docs)]

mod context;
mod integrations;
mod sync;

pub use context::{
    AfterFunc, CancelHandle, CancelScope, Cause, Context, ContextKey, Done, Error, Run, Scoped,
};

#[cfg(feature = "tower")]
pub use integrations::http;
#[cfg(feature = "tokio")]
pub use integrations::tokio::{Group, process, signal, spawn, spawn_blocking};

#[cfg(feature = "macros")]
pub use ctx_macros::{ContextKey, cancellable};

/// What the macros' generated code calls; not public API (see `context/macro_support.rs`).
#[doc(hidden)]
pub mod __private {
    pub use crate::context::macro_support::*;
}

/// Stops the deadline driver thread, so a loom model can end with every thread finished.
#[cfg(ctx_loom)]
#[doc(hidden)]
pub fn __stop_deadline_driver() {
    context::stop_deadline_driver();
}
