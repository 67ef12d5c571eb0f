//! Per-request contexts over HTTP (feature `tower`, and `axum` for the extractor).
//!
//! A deadline set at the edge reaches every downstream call, and a client that goes away
//! stops the work it started:
//!
//! - on the server, [`ContextLayer`] gives each request a child of the server's root
//!   context, with the deadline of its `grpc-timeout` header (capped), cancelled when the
//!   client disconnects or the root is cancelled at shutdown;
//! - on the client, [`PropagateDeadlineLayer`] sends the remaining time of the caller's
//!   context as `grpc-timeout`, and drops the call when that context ends.

mod client;
#[cfg(feature = "axum")]
mod extract;
mod grpc_timeout;
mod server;

pub use client::{BoxError, DeadlineFuture, PropagateDeadline, PropagateDeadlineLayer};
pub use grpc_timeout::{GRPC_TIMEOUT, InvalidTimeout, format_grpc_timeout, parse_grpc_timeout};
pub use server::{ClientDisconnected, ContextLayer, ContextService, ResponseFuture};
