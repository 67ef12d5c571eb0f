//! axum (feature `axum`): the [`Context`] extractor, and context errors as responses.

use std::convert::Infallible;
use std::fmt;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use super::respond::{CANCELLED_TEXT, DEADLINE_TEXT, text_response};
use super::{HopError, Origin};
use crate::{Context, Error};

/// Extracts the request's context, set by [`ContextLayer`](super::ContextLayer) (or
/// [`grpc::ServerLayer`](super::grpc::ServerLayer)). A request without one (the layer is
/// missing, or placed where it does not wrap this route) is rejected with
/// [`MissingContext`], a `500` that names the layer, rather than served under a context
/// with no deadline; extract `Option<Context>` to handle that case yourself (for instance
/// `ctx.unwrap_or_else(Context::current)`).
///
/// ```
/// use axum::{Router, routing::get};
/// use ctx_core::{Context, http::ContextLayer};
///
/// async fn handler(ctx: Context) -> String {
///     format!("deadline: {:?}", ctx.deadline())
/// }
///
/// let root = Context::background().with_cancel();
/// let app: Router = Router::new().route("/", get(handler)).layer(ContextLayer::new(&root));
/// # let _ = app;
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = MissingContext;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Context, MissingContext> {
        parts
            .extensions
            .get::<Context>()
            .cloned()
            .ok_or(MissingContext)
    }
}

/// `Option<Context>`: the request's context, or `None` when no layer gave it one.
///
/// ```
/// use axum::{Router, routing::get};
/// use ctx_core::Context;
///
/// async fn handler(ctx: Option<Context>) -> String {
///     let ctx = ctx.unwrap_or_else(Context::current); // the fallback, chosen explicitly
///     format!("deadline: {:?}", ctx.deadline())
/// }
///
/// let app: Router = Router::new().route("/", get(handler)); // no ContextLayer: `None`
/// # let _ = app;
/// ```
impl<S: Send + Sync> OptionalFromRequestParts<S> for Context {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Context>, Infallible> {
        Ok(parts.extensions.get::<Context>().cloned())
    }
}

/// The rejection of the [`Context`] extractor for a request that no layer gave a context:
/// answered `500 Internal Server Error` with a body that names the missing layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingContext;

impl fmt::Display for MissingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no request context: this route is not wrapped by ctx_core::http::ContextLayer \
             (add `.layer(ContextLayer::new(&root))` to the router, or extract \
             `Option<Context>`)",
        )
    }
}

impl std::error::Error for MissingContext {}

impl IntoResponse for MissingContext {
    fn into_response(self) -> Response {
        text_response(StatusCode::INTERNAL_SERVER_ERROR, &self.to_string())
    }
}

/// A handler can `?` a context error: [`Error::DeadlineExceeded`] answers
/// `504 Gateway Timeout`; [`Error::Cancelled`] answers `503 Service Unavailable` (a cancel
/// that reaches a running handler is a shutdown, or a client that went away and will read
/// nothing; 503 tells a client it may retry elsewhere). Fixed plain texts,
/// `context deadline exceeded` and `request cancelled`.
///
/// ```
/// use axum::response::IntoResponse;
/// use ctx_core::{Context, Error};
///
/// async fn handler(ctx: Context) -> Result<String, Error> {
///     ctx.checkpoint()?;
///     Ok("done".into())
/// }
///
/// assert_eq!(Error::DeadlineExceeded.into_response().status(), 504);
/// assert_eq!(Error::Cancelled.into_response().status(), 503);
/// ```
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::DeadlineExceeded => text_response(StatusCode::GATEWAY_TIMEOUT, DEADLINE_TEXT),
            _ => text_response(StatusCode::SERVICE_UNAVAILABLE, CANCELLED_TEXT),
        }
    }
}

/// A call to another hop that a context ended answers as its [`error`](HopError::error)
/// does (`504` for a deadline, here or downstream; `503` for a cancel), with a fixed text:
/// the hop's method and host stay in the server's logs, not in the answer.
///
/// ```
/// use axum::response::IntoResponse;
/// use ctx_core::{Error, http::{HopError, Origin}};
///
/// let hop = HopError::new(Error::DeadlineExceeded, Origin::Downstream, "GET /users", "10.0.0.7:80");
/// let response = hop.into_response();
/// assert_eq!(response.status(), 504);
/// ```
impl IntoResponse for HopError {
    fn into_response(self) -> Response {
        match (self.error(), self.origin()) {
            (Error::DeadlineExceeded, Origin::Downstream) => text_response(
                StatusCode::GATEWAY_TIMEOUT,
                "context deadline exceeded downstream",
            ),
            (err, _) => err.into_response(),
        }
    }
}
