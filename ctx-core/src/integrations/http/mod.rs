//! Per-request contexts over HTTP (feature `tower`, and `axum` for the extractor).
//!
//! A deadline set at the edge reaches every downstream call, and a client that goes away
//! stops the work it started:
//!
//! - on the server, [`ContextLayer`] gives each request a child of the server's root
//!   context, with the deadline of its `grpc-timeout` header (capped), cancelled when the
//!   client disconnects or the root is cancelled at shutdown;
//! - on the client, [`PropagateDeadlineLayer`] sends the remaining time of the caller's
//!   context as `grpc-timeout`, and drops the call when that context ends;
//! - over gRPC (feature `tonic`), [`grpc::ServerLayer`] and [`grpc::ClientLayer`] do the
//!   same for tonic servers and channels, with gRPC's statuses (`DEADLINE_EXCEEDED` on
//!   expiry, mid-stream too);
//! - with reqwest (feature `reqwest`), [`DeadlineMiddleware`] gives each request its
//!   context's remaining time as its timeout, and drops it when the context ends.
//!
//! - under overload, [`AdmissionLayer`] (inside either server layer) lets at most `N`
//!   requests into the service and never starts one that cannot finish in time (see
//!   [`admission`]).
//!
//! A call that a context ended names itself in a [`HopError`] (what was called, on which
//! host, which side ran out), so a log says where the budget ran out.

pub mod admission;
pub mod baggage;
mod body;
mod client;
#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "tonic")]
pub mod grpc;
mod grpc_timeout;
mod hop;
mod request;
#[cfg(feature = "reqwest")]
mod reqwest;
mod respond;
mod retry;
mod server;
mod server_body;

#[cfg(feature = "reqwest")]
pub use self::reqwest::DeadlineMiddleware;
pub use admission::{
    AdmissionBody, AdmissionFuture, AdmissionLayer, AdmissionService, AdmissionStats,
};
pub use client::{BoxError, DeadlineFuture, PropagateDeadline, PropagateDeadlineLayer};
#[cfg(feature = "axum")]
pub use extract::MissingContext;
pub use grpc_timeout::{GRPC_TIMEOUT, InvalidTimeout, format_grpc_timeout, parse_grpc_timeout};
pub use hop::{HopError, Origin};
#[cfg(feature = "reqwest")]
pub use retry::RetryMiddleware;
#[cfg(feature = "tonic")]
pub use retry::{BufferBody, BufferBodyLayer};
pub use retry::{Failure, GRPC_PREVIOUS_RPC_ATTEMPTS, RetryBackoff, RetryBody, RetryPolicy};
pub use server::{ClientDisconnected, ContextLayer, ContextService, ResponseFuture};
pub use server_body::ContextBody;

/// The context a request runs under: its `Context` extension (where `ContextLayer` and
/// `grpc::ServerLayer` put it, or a client's caller did), else the ambient one.
fn context_of(extensions: &::http::Extensions) -> crate::Context {
    extensions
        .get::<crate::Context>()
        .cloned()
        .unwrap_or_else(crate::Context::current)
}

/// The reqwest-middleware (0.5) that [`DeadlineMiddleware`] implements, for naming its types
/// at exactly that version.
#[cfg(feature = "reqwest")]
pub use reqwest_middleware;
