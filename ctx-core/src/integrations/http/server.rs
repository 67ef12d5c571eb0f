//! [`ContextLayer`]: a context per request, rooted in the server's context.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::baggage::BaggageKeys;
use super::request::{RequestContext, ServerConfig};
use crate::{CancelScope, Context, Scoped};

/// The cause of a request context cancelled because the client went away: the server
/// dropped the response future before it was ready (hyper does on disconnect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientDisconnected;

impl fmt::Display for ClientDisconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client disconnected before the response was ready")
    }
}

impl std::error::Error for ClientDisconnected {}

/// A tower layer that gives each request its own [`Context`]:
///
/// - a child of the server's root context, so cancelling the root (shutdown) cancels every
///   request in flight;
/// - with the deadline from the request's `grpc-timeout` header, capped by
///   [`max_timeout`](ContextLayer::max_timeout), or [`default_timeout`](ContextLayer::default_timeout)
///   when the header is absent; a malformed header is answered with `400 Bad Request` and
///   the reason, without calling the service;
/// - cancelled with [`ClientDisconnected`] as its cause if the response future is dropped
///   before it is ready, and cancelled when the response is ready (the handler is done);
/// - in the request's extensions, and [`Context::current`] on every poll of the service's
///   future (so `#[cancellable]` handlers derive from it with no plumbing).
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, http::ContextLayer};
///
/// let root = Context::background().with_cancel(); // cancel it to shut down
/// let layer = ContextLayer::new(&root)
///     .default_timeout(Duration::from_secs(10))
///     .max_timeout(Duration::from_secs(30));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ContextLayer {
    config: Arc<ServerConfig>,
}

impl ContextLayer {
    /// Request contexts will be children of `root` (a `&Context`, a `Context` or a
    /// `&CancelScope`).
    pub fn new(root: impl AsRef<Context>) -> ContextLayer {
        ContextLayer {
            config: Arc::new(ServerConfig::new(root.as_ref())),
        }
    }

    /// The timeout of a request that sends no `grpc-timeout` (none by default).
    pub fn default_timeout(mut self, timeout: Duration) -> ContextLayer {
        Arc::make_mut(&mut self.config).default_timeout = Some(timeout);
        self
    }

    /// The longest timeout a request may ask for; longer ones are cut to this.
    pub fn max_timeout(mut self, timeout: Duration) -> ContextLayer {
        Arc::make_mut(&mut self.config).max_timeout = Some(timeout);
        self
    }

    /// Accepts these keys from the request's W3C `baggage` header into its context (see
    /// [`baggage`](super::baggage)); every other entry is dropped, and the request's
    /// [`BaggageReport`](super::baggage::BaggageReport) extension says why. Without it the
    /// header is ignored: only trust baggage from callers you trust.
    pub fn trust_baggage(mut self, keys: BaggageKeys) -> ContextLayer {
        Arc::make_mut(&mut self.config).baggage = keys;
        self
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> ContextService<S> {
        ContextService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`ContextLayer`].
#[derive(Clone, Debug)]
pub struct ContextService<S> {
    inner: S,
    config: Arc<ServerConfig>,
}

impl<S, B, R> Service<Request<B>> for ContextService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: From<String>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let RequestContext { scope, ctx } = match self.config.begin(&mut request) {
            Ok(begun) => begun,
            Err(invalid) => {
                let mut response = Response::new(R::from(format!("{invalid}\n")));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                return ResponseFuture {
                    future: None,
                    scope: None,
                    rejected: Some(response),
                };
            }
        };
        let future = ctx.enter(|| self.inner.call(request));
        ResponseFuture {
            future: Some(ctx.scope(future)),
            scope: Some(scope),
            rejected: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ContextService`].
    pub struct ResponseFuture<F, R> {
        #[pin]
        future: Option<Scoped<F>>,
        scope: Option<CancelScope>,
        rejected: Option<Response<R>>,
    }

    impl<F, R> PinnedDrop for ResponseFuture<F, R> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(scope) = this.project().scope.take() {
                scope.cancel_with(crate::Cause::from_error(ClientDisconnected));
            }
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(response) = this.rejected.take() {
            return Poll::Ready(Ok(response));
        }
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("ResponseFuture polled after completion");
        };
        let output = std::task::ready!(future.poll(cx));
        this.future.set(None);
        drop(this.scope.take()); // the handler is done: its context ends (not a disconnect)
        Poll::Ready(output)
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
