//! The axum extractor for [`Context`] (feature `axum`).

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::Context;

/// Extracts the request's context (set by [`ContextLayer`](super::ContextLayer)); without
/// the layer, [`Context::current`].
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
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Context, Infallible> {
        Ok(parts
            .extensions
            .get::<Context>()
            .cloned()
            .unwrap_or_else(Context::current))
    }
}
