//! Context errors as gRPC statuses, and back.

use std::sync::Arc;

use http::HeaderMap;
use tonic::{Code, Status};

use crate::http::HopError;
use crate::http::respond::{DEADLINE_TEXT, SHUTDOWN_TEXT, log_cause};
use crate::{Cause, Error};

/// Go's `status.FromContextError`: [`Error::DeadlineExceeded`] is `DEADLINE_EXCEEDED`,
/// [`Error::Cancelled`] is `CANCELLED`, so a handler can `?` a context error.
///
/// ```
/// use ctx_core::{Context, Error};
/// use tonic::{Code, Status};
///
/// async fn handler(ctx: &Context) -> Result<u32, Status> {
///     ctx.checkpoint()?;
///     Ok(7)
/// }
///
/// # futures::executor::block_on(async {
/// let scope = Context::background().with_cancel();
/// assert_eq!(handler(&scope).await.unwrap(), 7);
/// let ctx = scope.context().clone();
/// scope.cancel();
/// assert_eq!(handler(&ctx).await.unwrap_err().code(), Code::Cancelled);
/// assert_eq!(Status::from(Error::DeadlineExceeded).code(), Code::DeadlineExceeded);
/// # });
/// ```
impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::DeadlineExceeded => Status::deadline_exceeded(err.to_string()),
            _ => Status::cancelled(err.to_string()),
        }
    }
}

/// The [`HopError`] behind a status returned by a call through
/// [`ClientLayer`](super::ClientLayer): which call a context ended, or which callee answered
/// `DEADLINE_EXCEEDED`. `None` for any other status.
///
/// ```
/// use ctx_core::{Context, Error, http::{Origin, grpc::hop_error}};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // A call from a context that is already done fails at once, unsent.
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
/// let channel = tower::ServiceBuilder::new()
///     .layer(ctx_core::http::grpc::ClientLayer::new().authority("127.0.0.1:9"))
///     .service(channel);
/// let mut client = tonic::client::Grpc::new(channel);
/// let scope = Context::background().with_cancel();
/// let ctx = scope.context().clone();
/// scope.cancel();
/// let status = ctx
///     .scope(async {
///         client.ready().await.unwrap();
///         let path = "/ctx.relay.v1.Relay/Forward".parse().unwrap();
///         let codec = tonic_prost::ProstCodec::<(), ()>::default();
///         client.unary(tonic::Request::new(()), path, codec).await
///     })
///     .await
///     .unwrap_err();
/// assert_eq!(status.code(), tonic::Code::Cancelled);
/// let hop = hop_error(&status).unwrap();
/// assert_eq!((hop.error(), hop.origin()), (Error::Cancelled, Origin::Local));
/// assert_eq!(hop.method(), "/ctx.relay.v1.Relay/Forward");
/// assert_eq!(hop.authority(), "127.0.0.1:9");
/// # });
/// ```
pub fn hop_error(status: &Status) -> Option<&HopError> {
    std::error::Error::source(status)?.downcast_ref::<HopError>()
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The `grpc-status` in `headers`, if any (a trailers-only response, or trailers).
pub(super) fn grpc_status_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// What a server answers when an RPC's context ends before its handler: the deadline is
/// `DEADLINE_EXCEEDED`; a cancel that reaches a handler still running came from the server's
/// root (a shutdown), hence `UNAVAILABLE`, which clients may retry elsewhere. The message is
/// fixed: a cause's text (which may name internal hosts or credentials) stays on the server,
/// logged through `tracing` with that feature.
pub(super) fn server_status(err: Error, cause: Option<Cause>) -> Status {
    match err {
        Error::DeadlineExceeded => {
            log_cause("RPC deadline exceeded", cause.as_ref());
            Status::deadline_exceeded(DEADLINE_TEXT)
        }
        _ => {
            log_cause("RPC cancelled by the server", cause.as_ref());
            Status::unavailable(SHUTDOWN_TEXT)
        }
    }
}

/// A status for a call that a context ended (or that the callee said ran out of time),
/// with its [`HopError`] as the source.
pub(super) fn hop_status(hop: HopError, downstream: Option<&Status>) -> Status {
    let code = match hop.error() {
        Error::DeadlineExceeded => Code::DeadlineExceeded,
        _ => Code::Cancelled,
    };
    let message = match downstream {
        Some(status) if !status.message().is_empty() => format!("{hop}: {}", status.message()),
        _ => hop.to_string(),
    };
    let mut status = Status::new(code, message);
    status.set_source(Arc::new(hop));
    status
}
