//! [`ServerLayer`]: a context per RPC for tonic servers, answering `DEADLINE_EXCEEDED` when
//! it expires.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use super::status::{grpc_status_code, server_status};
use crate::http::baggage::BaggageKeys;
use crate::http::body::RacedBody;
use crate::http::request::{Refused, RequestContext, RequestScope, ServerConfig};
use crate::{Context, Run, Scoped};

/// A tower layer for [`tonic::transport::Server::builder().layer(..)`][layer] that gives
/// each RPC its own [`Context`]:
///
/// - a child of the server's root, so cancelling the root (at shutdown) cancels every RPC in
///   flight, which then answers `UNAVAILABLE` with a fixed message (`server shutting
///   down`: the root's cause may hold internal details, so it is only logged, through
///   `tracing` with that feature);
/// - with the deadline the client sent as `grpc-timeout`, capped by
///   [`max_timeout`](ServerLayer::max_timeout) (or, when that is unset, by
///   [`default_timeout`](ServerLayer::default_timeout)), or `default_timeout` when it sent
///   none; a malformed `grpc-timeout` is answered `INVALID_ARGUMENT` with the reason,
///   without calling the service;
/// - **no budget, no call**: an RPC that arrives with no time left (`grpc-timeout: 0n`, a
///   root whose deadline passed) is answered `DEADLINE_EXCEEDED`, and one that arrives at
///   shutdown `UNAVAILABLE` (trailers-only), without calling the service;
/// - [`Context::current`] while the handler (and a streaming response) is polled, and in the
///   request's extensions (`request.extensions().get::<Context>()` in a tonic handler);
/// - cancelled with [`ClientDisconnected`](crate::http::ClientDisconnected) as its cause when the client cancels the RPC
///   (`RST_STREAM`) or goes away, and without a cause when the RPC is over (its response,
///   streamed or not, fully sent).
///
/// When the context expires the client receives `DEADLINE_EXCEEDED`: the handler's future is
/// dropped at once (through [`Run`]), a streaming response ends with `DEADLINE_EXCEEDED` in
/// its trailers, and a handler error that only reflects the expiry (`CANCELLED` or
/// `UNKNOWN` after the context ended) is answered as `DEADLINE_EXCEEDED` instead. tonic's own
/// `grpc-timeout` timer, which would answer `CANCELLED`, never gets to: the layer answers at
/// the same instant or earlier.
///
/// [layer]: https://docs.rs/tonic/latest/tonic/transport/server/struct.Server.html#method.layer
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, http::grpc::ServerLayer};
///
/// let root = Context::background().with_cancel(); // cancel it to shut down
/// let layer = ServerLayer::new(&root)
///     .default_timeout(Duration::from_secs(5))
///     .max_timeout(Duration::from_secs(30));
/// // tonic::transport::Server::builder().layer(layer).add_service(..).serve_with_shutdown(..)
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer {
    config: Arc<ServerConfig>,
}

impl ServerLayer {
    /// RPC contexts will be children of `root` (a `&Context`, a `Context` or a
    /// `&CancelScope`).
    ///
    /// The line that calls `new` is where an RPC's deadline and a client's cancel are
    /// reported to have ended its context ([`Cause::location`](crate::Cause::location)).
    #[track_caller]
    pub fn new(root: impl AsRef<Context>) -> ServerLayer {
        ServerLayer {
            config: Arc::new(ServerConfig::new(root.as_ref(), Location::caller())),
        }
    }

    /// The timeout of an RPC that arrives without `grpc-timeout` (none by default: such an
    /// RPC has no deadline unless its root has one).
    ///
    /// Also the longest budget an RPC may ask for, unless
    /// [`max_timeout`](ServerLayer::max_timeout) sets another: a server never grants more
    /// than its limit, so a client cannot stretch a 5 s default with `grpc-timeout: 99999999H`.
    pub fn default_timeout(mut self, timeout: Duration) -> ServerLayer {
        Arc::make_mut(&mut self.config).default_timeout = Some(timeout);
        self
    }

    /// The longest budget an RPC may ask for; longer ones are cut to this. Without it,
    /// [`default_timeout`](ServerLayer::default_timeout) is the cap (and with neither, RPCs
    /// get what they ask for).
    pub fn max_timeout(mut self, timeout: Duration) -> ServerLayer {
        Arc::make_mut(&mut self.config).max_timeout = Some(timeout);
        self
    }

    /// Adds per-request values to each RPC's context, as
    /// [`ContextLayer::with_values`](crate::http::ContextLayer::with_values) does: the
    /// context in the request's extensions and [`Context::current`] in the handler both
    /// have them.
    pub fn with_values(
        mut self,
        values: impl Fn(&http::request::Parts, Context) -> Context + Send + Sync + 'static,
    ) -> ServerLayer {
        Arc::make_mut(&mut self.config)
            .values
            .0
            .push(Arc::new(values));
        self
    }

    /// Accepts these keys from the RPC's W3C `baggage` metadata into its context, as
    /// [`ContextLayer::trust_baggage`](crate::http::ContextLayer::trust_baggage) does;
    /// without it the metadata is ignored.
    pub fn trust_baggage(mut self, keys: BaggageKeys) -> ServerLayer {
        Arc::make_mut(&mut self.config).baggage = keys;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    config: Arc<ServerConfig>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Unpin,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (request, RequestContext { scope, ctx }) = match self.config.begin(request) {
            Ok(begun) => begun,
            Err(Refused::Malformed(invalid)) => {
                return ServerFuture::answered(Status::invalid_argument(invalid.to_string()));
            }
            Err(Refused::NoBudget(err, cause)) => {
                return ServerFuture::answered(server_status(err, cause));
            }
        };
        let future = ctx.enter(|| self.inner.call(request));
        let scoped = ctx.scope(future);
        ServerFuture {
            deadline: ctx.deadline(),
            run: Some(ctx.into_run(scoped)),
            scope: Some(scope),
            answered: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ServerService`]: the handler raced against the RPC's context
    /// (a [`Run`]), or the status the layer answered without calling it.
    pub struct ServerFuture<F> {
        #[pin]
        run: Option<Run<'static, Scoped<F>>>,
        scope: Option<RequestScope>,
        deadline: Option<Instant>,
        // Boxed: rare, and large enough that every move of the future would copy it.
        answered: Option<Box<Status>>,
    }

    impl<F> PinnedDrop for ServerFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the response was ready: the client cancelled or went away.
            if let Some(scope) = this.project().scope.take() {
                scope.disconnected();
            }
        }
    }
}

impl<F> ServerFuture<F> {
    fn answered(status: Status) -> ServerFuture<F> {
        ServerFuture {
            run: None,
            scope: None,
            deadline: None,
            answered: Some(Box::new(status)),
        }
    }
}

/// A trailers-only response carrying `status`.
fn status_response<B>(status: Status) -> Response<ServerBody<B>> {
    status.into_http::<()>().map(|()| ServerBody::empty())
}

impl<F, B, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<Response<ServerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(status) = this.answered.take() {
            return Poll::Ready(Ok(status_response(*status)));
        }
        let Some(mut run) = this.run.as_mut().as_pin_mut() else {
            panic!("ServerFuture polled after completion");
        };
        let raced = match run.as_mut().poll(cx) {
            Poll::Ready(raced) => raced,
            // The deadline passed just after the poll looked: poll again, which ends the
            // context with it (a waiter ends a context whose deadline passed, however late
            // the driver), or, should the deadline be a parent's, answer now. Either way
            // before tonic's own timer (started after this one) answers CANCELLED.
            Poll::Pending if this.deadline.is_some_and(|d| Context::now() >= d) => {
                match run.as_mut().poll(cx) {
                    Poll::Ready(raced) => raced,
                    Poll::Pending => Err(crate::Error::DeadlineExceeded),
                }
            }
            Poll::Pending => return Poll::Pending,
        };
        this.run.set(None);
        let scope = this
            .scope
            .take()
            .expect("a scope until the response is ready");
        let response = match raced {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Poll::Ready(Err(err)),
            Err(err) => {
                let status = server_status(err, scope.cause());
                drop(scope);
                return Poll::Ready(Ok(status_response(status)));
            }
        };
        // A response with nothing more to send (a trailers-only status) ends the RPC now, and
        // must go out as HEADERS with END_STREAM: gRPC peers read a trailers-only response
        // followed by an empty DATA frame as a stream without trailers.
        if response.body().is_end_stream() {
            // A trailers-only error that merely reflects the context's end is answered as
            // what the context says (DEADLINE_EXCEEDED, or UNAVAILABLE at shutdown).
            if let Some(code) = grpc_status_code(response.headers())
                && matches!(code, Code::Cancelled | Code::Unknown)
                && let Some(err) = ended(&scope, *this.deadline)
            {
                let status = server_status(err, scope.cause());
                drop(scope);
                return Poll::Ready(Ok(status_response(status)));
            }
            drop(scope);
            return Poll::Ready(Ok(response.map(|_| ServerBody::empty())));
        }
        let deadline = *this.deadline;
        Poll::Ready(Ok(
            response.map(|body| ServerBody::new(body, scope, deadline))
        ))
    }
}

/// Why the RPC's context ended, counting a deadline that passed but has not fired yet. One
/// poll of `done` ends the context by its own deadline if that passed (a waiter does not
/// wait for a late driver), so the scope's drop that follows finds it ended by the deadline,
/// not cancelled; a parent's deadline that passed is reported as it is.
fn ended(ctx: &Context, deadline: Option<Instant>) -> Option<crate::Error> {
    let noop = &mut TaskContext::from_waker(std::task::Waker::noop());
    match Pin::new(&mut ctx.done()).poll(noop) {
        Poll::Ready(err) => Some(err),
        Poll::Pending => deadline
            .is_some_and(|d| Context::now() >= d)
            .then_some(crate::Error::DeadlineExceeded),
    }
}

impl<F> fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFuture")
            .field("scope", &self.scope)
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

/// The response body of [`ServerService`]: the handler's body, polled with the RPC's
/// context as [`Context::current`], which lives until the body ends. When the context ends
/// first (a deadline mid-stream), the body is dropped (its frames are raced against the
/// context through [`Run`]) and the response ends with trailers carrying
/// `DEADLINE_EXCEEDED` (or `UNAVAILABLE` at shutdown).
pub struct ServerBody<B> {
    raced: Option<RacedBody<B>>,
    scope: Option<RequestScope>,
    deadline: Option<Instant>,
    trailers: Option<HeaderMap>,
}

impl<B> Drop for ServerBody<B> {
    fn drop(&mut self) {
        // Dropped before its end: the client cancelled the stream or went away.
        if let Some(scope) = self.scope.take() {
            scope.disconnected();
        }
    }
}

impl<B: Body + Unpin> ServerBody<B> {
    fn new(inner: B, scope: RequestScope, deadline: Option<Instant>) -> ServerBody<B> {
        ServerBody {
            raced: Some(RacedBody::new(scope.context().clone(), inner)),
            scope: Some(scope),
            deadline,
            trailers: None,
        }
    }
}

impl<B> ServerBody<B> {
    fn empty() -> ServerBody<B> {
        ServerBody {
            raced: None,
            scope: None,
            deadline: None,
            trailers: None,
        }
    }

    /// The stream is over: by its own end (`None`), or cut by the context.
    fn finish(&mut self, end: Option<crate::Error>) -> Option<Frame<Bytes>> {
        if let Some(raced) = &mut self.raced {
            raced.end();
        }
        self.raced = None;
        let scope = self.scope.take()?;
        let err = end?;
        let status = server_status(err, scope.cause());
        drop(scope);
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers = HeaderMap::new();
            let _ = Status::new(status.code(), "").add_header(&mut trailers);
        }
        Some(Frame::trailers(trailers))
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let (Some(raced), Some(scope)) = (this.raced.as_mut(), this.scope.as_ref()) else {
            return Poll::Ready(None);
        };
        let polled = std::task::ready!(scope.enter(|| raced.poll_frame(cx)));
        let end = match polled {
            Ok(None) => None,
            Ok(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
            Ok(Some(Ok(frame))) => {
                let Some(trailers) = frame.trailers_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                // Trailers that merely reflect the context's end say what it says.
                match grpc_status_code(trailers) {
                    Some(Code::Cancelled | Code::Unknown) => match ended(scope, this.deadline) {
                        Some(err) => Some(err),
                        None => {
                            this.finish(None);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    },
                    _ => {
                        this.finish(None);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                }
            }
            Err(err) => Some(err),
        };
        Poll::Ready(this.finish(end).map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        // Never from the inner body alone: its end must be polled, so the RPC's context ends
        // as completed rather than as dropped.
        self.trailers.is_none() && self.raced.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.raced {
            Some(raced) => raced.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

impl<B> fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBody")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
