//! [`ContextLayer`]: a context per request, rooted in the server's context.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::baggage::BaggageKeys;
use super::request::{Refused, RequestContext, RequestScope, ServerConfig};
use super::respond::{
    DEADLINE_TEXT, GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE, SHUTDOWN_TEXT, deadline_response,
    grpc_trailers_only, is_grpc, log_cause, text_response, unavailable_response,
};
use super::server_body::ContextBody;
use crate::{Cause, Context, Done, Scoped};

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
///   [`max_timeout`](ContextLayer::max_timeout) (or, when that is unset, by
///   [`default_timeout`](ContextLayer::default_timeout)), or `default_timeout` when the
///   header is absent; a malformed header is answered with `400 Bad Request`
///   (`text/plain; charset=utf-8`) and the reason, without calling the service;
/// - **no budget, no call**: a request that arrives with no time left (`grpc-timeout: 0n`,
///   a root whose deadline passed) is answered `504 Gateway Timeout`, and one that arrives
///   while the root is cancelled (shutdown) `503 Service Unavailable`, without calling the
///   service;
/// - **enforced**: when the deadline passes before the handler answers, its future is
///   dropped and the client gets `504 Gateway Timeout`, as tower-http's `TimeoutLayer` and
///   [`grpc::ServerLayer`](super::grpc::ServerLayer) do; [`finish_handlers`](ContextLayer::finish_handlers)
///   opts out for handlers that must run to their end. A cancel of the root (a shutdown)
///   does not drop handlers: they see their context cancelled and answer as they see fit,
///   and a graceful server waits for them. The layer's own answers have fixed texts
///   (`context deadline exceeded`, `server shutting down`): a cancel cause's own text never
///   reaches the client (with feature `tracing` it is logged);
/// - alive until the response **body** ends: the body is polled with the request's context as
///   [`Context::current`], a body still streaming at the deadline is cut with an error (never
///   a clean end of stream), and the context is cancelled with [`ClientDisconnected`] as its
///   cause if the response (future or body) is dropped before its end (the client went
///   away);
/// - in the request's extensions, and [`Context::current`] on every poll of the service's
///   future (so `#[cancellable]` handlers derive from it with no plumbing), with the values
///   of [`with_values`](ContextLayer::with_values).
///
/// The response body is a [`ContextBody`] around the service's.
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
    finish_handlers: bool,
}

impl ContextLayer {
    /// Request contexts will be children of `root` (a `&Context`, a `Context` or a
    /// `&CancelScope`).
    ///
    /// The line that calls `new` is where a request's deadline and a client's disconnect
    /// are reported to have ended its context ([`Cause::location`]).
    #[track_caller]
    pub fn new(root: impl AsRef<Context>) -> ContextLayer {
        ContextLayer {
            config: Arc::new(ServerConfig::new(root.as_ref(), Location::caller())),
            finish_handlers: false,
        }
    }

    /// The timeout of a request that sends no `grpc-timeout` (none by default).
    ///
    /// Also the longest budget a request may ask for, unless
    /// [`max_timeout`](ContextLayer::max_timeout) sets another: a server never grants more
    /// than its limit, so a client cannot stretch a 5 s default with `grpc-timeout: 99999999H`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctx_core::{Context, http::{ContextLayer, GRPC_TIMEOUT}};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # futures::executor::block_on(async {
    /// let root = Context::background().with_cancel();
    /// let server = ContextLayer::new(&root).default_timeout(Duration::from_secs(5)).layer(
    ///     service_fn(|_: http::Request<String>| async {
    ///         let deadline = Context::current().deadline().unwrap();
    ///         let budget = deadline - std::time::Instant::now();
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(budget.as_secs().to_string()))
    ///     }),
    /// );
    /// let asked = http::Request::builder().header(GRPC_TIMEOUT, "99999999H").body(String::new());
    /// let response = server.oneshot(asked.unwrap()).await.unwrap();
    /// let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
    /// assert_eq!(body.to_bytes(), "4"); // capped at the 5 s default
    /// # });
    /// ```
    pub fn default_timeout(mut self, timeout: Duration) -> ContextLayer {
        Arc::make_mut(&mut self.config).default_timeout = Some(timeout);
        self
    }

    /// The longest budget a request may ask for; longer ones are cut to this. Without it,
    /// [`default_timeout`](ContextLayer::default_timeout) is the cap (and with neither,
    /// requests get what they ask for).
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

    /// Adds per-request values: `values(request, ctx)` returns the request's context with
    /// them (`ctx.with_value(..)`), and that context is both the request's extension (the
    /// axum [`Context`] extractor, `request.extensions()`) and [`Context::current`] in its
    /// handler, so one line replaces a middleware that must remember to update both. Called
    /// once per request before the service; several calls apply in order. A panic in
    /// `values` unwinds out of the service's `call`, and the request's context is cancelled
    /// on the way (nothing is left half-made).
    ///
    /// ```
    /// use ctx_core::{Context, ContextKey, http::ContextLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// #[derive(ContextKey, Clone)]
    /// struct RequestId(String);
    ///
    /// # futures::executor::block_on(async {
    /// let root = Context::background().with_cancel();
    /// let layer = ContextLayer::new(&root).with_values(|request, ctx| {
    ///     let id = request.headers.get("x-request-id").and_then(|v| v.to_str().ok());
    ///     ctx.with_value(RequestId(id.unwrap_or("-").to_owned()))
    /// });
    /// let server = layer.layer(service_fn(|request: http::Request<String>| async move {
    ///     let ambient = Context::current().value::<RequestId>().unwrap().0.clone();
    ///     let extension = request.extensions().get::<Context>().unwrap();
    ///     assert_eq!(extension.value::<RequestId>().unwrap().0, ambient);
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(ambient))
    /// }));
    /// let request = http::Request::builder().header("x-request-id", "r-7").body(String::new());
    /// let response = server.oneshot(request.unwrap()).await.unwrap();
    /// let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
    /// assert_eq!(body.to_bytes(), "r-7");
    /// # });
    /// ```
    pub fn with_values(
        mut self,
        values: impl Fn(&Parts, Context) -> Context + Send + Sync + 'static,
    ) -> ContextLayer {
        Arc::make_mut(&mut self.config)
            .values
            .0
            .push(Arc::new(values));
        self
    }

    /// With `true`, a handler still running at its deadline is not dropped: it runs to its
    /// end (its context is done, so the calls it makes under it fail at once) and its answer
    /// is sent, body included, however late. For handlers that must finish what they
    /// started (a write that must not be torn); the default (`false`) answers `504` at the
    /// deadline and drops the handler's future and body.
    pub fn finish_handlers(mut self, finish: bool) -> ContextLayer {
        self.finish_handlers = finish;
        self
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> ContextService<S> {
        ContextService {
            inner,
            config: self.config.clone(),
            finish_handlers: self.finish_handlers,
        }
    }
}

/// The service made by [`ContextLayer`].
#[derive(Clone, Debug)]
pub struct ContextService<S> {
    inner: S,
    config: Arc<ServerConfig>,
    finish_handlers: bool,
}

impl<S, B, R> Service<Request<B>> for ContextService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: From<String>,
{
    type Response = Response<ContextBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = is_grpc(&request);
        let (request, RequestContext { scope, ctx }) = match self.config.begin(request) {
            Ok(begun) => begun,
            Err(Refused::Malformed(invalid)) => {
                let response = text_response(StatusCode::BAD_REQUEST, &invalid.to_string());
                return ResponseFuture::answered(response);
            }
            Err(Refused::NoBudget(err, cause)) => {
                return ResponseFuture::answered(ended_response(err, cause.as_ref(), grpc));
            }
        };
        let future = ctx.scope(ctx.enter(|| self.inner.call(request)));
        let enforce = !self.finish_handlers;
        ResponseFuture {
            // The deadline is watched unless handlers are left to finish (or there is none).
            deadline: (enforce && ctx.deadline().is_some()).then(|| ctx.done()),
            race_body: enforce,
            future: Some(future),
            scope: Some(scope),
            answered: None,
            grpc,
        }
    }
}

/// What a client is told when its request's context ended before its answer: `504` for the
/// deadline; a cancel that reaches a handler still running came from the server's root (a
/// shutdown), hence `503`. A gRPC request (served through this layer, as tonic routes inside
/// an axum router are) gets the same as a trailers-only `DEADLINE_EXCEEDED` or `UNAVAILABLE`.
/// Fixed texts; the cause is logged.
fn ended_response<R: From<String>>(
    err: crate::Error,
    cause: Option<&Cause>,
    grpc: bool,
) -> Response<R> {
    match (err, grpc) {
        (crate::Error::DeadlineExceeded, _) => log_cause("request deadline exceeded", cause),
        _ => log_cause("request cancelled by the server", cause),
    }
    match (err, grpc) {
        (crate::Error::DeadlineExceeded, false) => deadline_response(),
        (crate::Error::DeadlineExceeded, true) => {
            grpc_trailers_only(GRPC_DEADLINE_EXCEEDED, DEADLINE_TEXT)
        }
        (_, false) => unavailable_response(SHUTDOWN_TEXT),
        (_, true) => grpc_trailers_only(GRPC_UNAVAILABLE, SHUTDOWN_TEXT),
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ContextService`]: the handler, dropped if the request's
    /// deadline passes first (unless [`ContextLayer::finish_handlers`]), or the answer the
    /// layer gave without calling it.
    pub struct ResponseFuture<F, R> {
        #[pin]
        future: Option<Scoped<F>>,
        // Watches the request's context for its deadline; `None` with `finish_handlers`, or
        // once the context was cancelled otherwise (a shutdown: the handler sees it and
        // answers as it sees fit, as a graceful server expects).
        deadline: Option<Done>,
        // Whether the body is raced against the context (not with `finish_handlers`).
        race_body: bool,
        scope: Option<RequestScope>,
        answered: Option<Response<R>>,
        grpc: bool,
    }

    impl<F, R> PinnedDrop for ResponseFuture<F, R> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(scope) = this.project().scope.take() {
                scope.disconnected();
            }
        }
    }
}

impl<F, R> ResponseFuture<F, R> {
    fn answered(response: Response<R>) -> ResponseFuture<F, R> {
        ResponseFuture {
            future: None,
            deadline: None,
            race_body: false,
            scope: None,
            answered: Some(response),
            grpc: false,
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: From<String>,
{
    type Output = Result<Response<ContextBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(response) = this.answered.take() {
            return Poll::Ready(Ok(response.map(ContextBody::plain)));
        }
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("ResponseFuture polled after completion");
        };
        if let Poll::Ready(output) = future.poll(cx) {
            this.future.set(None);
            let scope = this
                .scope
                .take()
                .expect("a scope until the response is ready");
            // A body still streaming when the context ends is cut, unless the handler was
            // left to finish or answered knowing that its context had ended.
            let raced = *this.race_body && scope.err().is_none();
            return Poll::Ready(
                output.map(|response| response.map(|body| ContextBody::new(body, scope, raced))),
            );
        }
        let Some(done) = this.deadline.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(done).poll(cx) {
            Poll::Ready(crate::Error::DeadlineExceeded) => {
                // Enforced: the handler's future is dropped now, and the client told.
                this.future.set(None);
                let scope = this
                    .scope
                    .take()
                    .expect("a scope until the response is ready");
                let response = ended_response(
                    crate::Error::DeadlineExceeded,
                    scope.cause().as_ref(),
                    *this.grpc,
                );
                drop(scope);
                Poll::Ready(Ok(response.map(ContextBody::plain)))
            }
            Poll::Ready(_) => {
                *this.deadline = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
