//! [`ClientLayer`]: every call on a tonic channel carries its context's remaining budget.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use super::status::{grpc_status_code, hop_status};
use crate::http::baggage::{self, BaggageKeys};
use crate::http::body::RacedBody;
use crate::http::client::strip_userinfo;
use crate::http::grpc_timeout::{remaining_budget, send_budget};
use crate::http::{BoxError, HopError, Origin};
use crate::{Context, Error, Run};

/// A tower layer for a tonic [`Channel`][channel] (or any gRPC client service): every call
/// made inside a context, with no change at the call site,
///
/// - sends `grpc-timeout` = the smaller of the context's remaining time and the call's own
///   timeout (`tonic::Request::set_timeout`);
/// - fails at once, unsent, with `DEADLINE_EXCEEDED` or `CANCELLED` if the context is
///   already done;
/// - is dropped (the server sees `RST_STREAM`, a cancel) the moment the context ends, then
///   fails with `DEADLINE_EXCEEDED` or `CANCELLED`; a streaming response ends the same way;
/// - when the callee answers `DEADLINE_EXCEEDED`, fails with a status naming this hop
///   (method and authority) in its message and as a [`HopError`] source
///   ([`hop_error`](super::hop_error)), so the log says where the budget ran out.
///
/// The context is [`Context::current`] at the time of the call, or the one given to
/// [`with_context`](ClientLayer::with_context). The hop is named by the request's URI: a
/// tonic client made `with_origin(channel, uri)` carries the callee's authority; a bare
/// `Channel` adds it later, so name it with [`authority`](ClientLayer::authority).
///
/// [channel]: https://docs.rs/tonic/latest/tonic/transport/struct.Channel.html
///
/// ```
/// use ctx_core::http::grpc::ClientLayer;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let channel = tower::ServiceBuilder::new().layer(ClientLayer::new()).service(channel);
/// // let client = RelayClient::new(channel); // a tonic-generated client
/// # let _ = channel;
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientLayer {
    ctx: Option<Context>,
    authority: Option<Arc<str>>,
    baggage: Arc<BaggageKeys>,
}

impl ClientLayer {
    /// Uses [`Context::current`] of each call.
    pub fn new() -> ClientLayer {
        ClientLayer::default()
    }

    /// Uses `ctx` (a `&Context`, a `Context` or a `&CancelScope`) for every call.
    pub fn with_context(ctx: impl AsRef<Context>) -> ClientLayer {
        ClientLayer {
            ctx: Some(ctx.as_ref().clone()),
            ..ClientLayer::default()
        }
    }

    /// Also sends the context's values of these keys in the W3C `baggage` metadata, as
    /// [`PropagateDeadlineLayer::baggage`](crate::http::PropagateDeadlineLayer::baggage) does.
    pub fn baggage(mut self, keys: BaggageKeys) -> ClientLayer {
        self.baggage = Arc::new(keys);
        self
    }

    /// Names the callee (`host:port`) in errors when the request's URI does not. Errors
    /// never show userinfo (`user:password@`), from here or from the URI.
    pub fn authority(mut self, authority: impl Into<String>) -> ClientLayer {
        self.authority = Some(authority.into().into());
        self
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            ctx: self.ctx.clone(),
            authority: self.authority.clone(),
            baggage: self.baggage.clone(),
        }
    }
}

/// The service made by [`ClientLayer`].
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
    ctx: Option<Context>,
    authority: Option<Arc<str>>,
    baggage: Arc<BaggageKeys>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Unpin,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ClientBody<ResBody>>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let ctx = self.ctx.clone().unwrap_or_else(Context::current);
        let mut uri = request.uri().clone();
        if uri.authority().is_none()
            && let Some(authority) = &self.authority
        {
            let mut parts = uri.into_parts();
            parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
            parts.authority = authority.parse().ok();
            uri = Uri::from_parts(parts).unwrap_or_default();
        }
        match remaining_budget(&ctx) {
            Err(err) => return ClientFuture::failed(local(err, &uri)),
            Ok(Some(budget)) => send_budget(request.headers_mut(), budget),
            Ok(None) => {}
        }
        baggage::inject(&self.baggage, &ctx, request.headers_mut());
        let call = self.inner.call(request);
        ClientFuture {
            run: Some(ctx.clone().into_run(call)),
            ctx: Some(ctx),
            uri,
            failed: None,
        }
    }
}

/// `DEADLINE_EXCEEDED` or `CANCELLED` for a call that the caller's context ended.
fn local(err: Error, uri: &Uri) -> Status {
    hop_status(hop(err, Origin::Local, uri), None)
}

/// The hop a call to `uri` is, named by its path and `host:port`: never the URI's userinfo,
/// which would put credentials in the status a caller sees (and logs).
fn hop(err: Error, origin: Origin, uri: &Uri) -> HopError {
    let authority = uri.authority().map_or("", |a| strip_userinfo(a.as_str()));
    HopError::new(err, origin, uri.path(), authority)
}

/// Whether tonic's own timer (the channel's, for `grpc-timeout`) ended the call.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// The response future of [`ClientService`]: the call raced against the caller's context
    /// (a [`Run`]), or the status it failed with before it was sent.
    pub struct ClientFuture<F> {
        #[pin]
        run: Option<Run<'static, F>>,
        ctx: Option<Context>,
        uri: Uri,
        failed: Option<Status>,
    }
}

impl<F> ClientFuture<F> {
    fn failed(status: Status) -> ClientFuture<F> {
        ClientFuture {
            run: None,
            ctx: None,
            uri: Uri::default(),
            failed: Some(status),
        }
    }
}

impl<F, B, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<Response<ClientBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(status) = this.failed.take() {
            return Poll::Ready(Err(Box::new(status)));
        }
        let Some(run) = this.run.as_mut().as_pin_mut() else {
            panic!("ClientFuture polled after completion");
        };
        // When the context ends first, `Run` drops the call in flight: h2 resets the stream.
        let raced = std::task::ready!(run.poll(cx));
        this.run.set(None);
        let ctx = this.ctx.take().expect("a context until the call is done");
        Poll::Ready(match raced {
            Ok(Ok(response)) => match grpc_status_code(response.headers()) {
                Some(Code::DeadlineExceeded) => {
                    let downstream = Status::from_header_map(response.headers());
                    let hop = hop(Error::DeadlineExceeded, Origin::Downstream, this.uri);
                    Err(Box::new(hop_status(hop, downstream.as_ref())))
                }
                _ => Ok(response.map(|body| ClientBody {
                    raced: RacedBody::new(ctx, body),
                    uri: std::mem::take(this.uri),
                })),
            },
            Ok(Err(err)) => {
                let err: BoxError = err.into();
                if timed_out(&*err) {
                    Err(Box::new(local(Error::DeadlineExceeded, this.uri)))
                } else {
                    Err(err)
                }
            }
            Err(err) => Err(Box::new(local(err, this.uri))),
        })
    }
}

impl<F> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFuture")
            .field("uri", &self.uri)
            .field("ctx", &self.ctx)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The response body of [`ClientService`]: its frames are raced against the caller's context
/// (through [`Run`]), so a streaming response ends with `DEADLINE_EXCEEDED` or `CANCELLED`
/// (and the stream is reset) when that context ends; trailers saying `DEADLINE_EXCEEDED`
/// become an error naming this hop.
pub struct ClientBody<B> {
    raced: RacedBody<B>,
    uri: Uri,
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        Poll::Ready(match std::task::ready!(this.raced.poll_frame(cx)) {
            Ok(Some(Ok(frame))) => match frame.trailers_ref() {
                Some(trailers) if grpc_status_code(trailers) == Some(Code::DeadlineExceeded) => {
                    let downstream = Status::from_header_map(trailers);
                    let hop = hop(Error::DeadlineExceeded, Origin::Downstream, &this.uri);
                    this.raced.end();
                    Some(Err(Box::new(hop_status(hop, downstream.as_ref()))))
                }
                _ => Some(Ok(frame)),
            },
            Ok(Some(Err(err))) => Some(Err(err.into())),
            Ok(None) => None,
            // The context ended: `Run` dropped the body, which resets the stream.
            Err(err) => Some(Err(Box::new(local(err, &this.uri)))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.raced.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.raced.size_hint()
    }
}

impl<B> fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody")
            .field("uri", &self.uri)
            .field("ctx", self.raced.context())
            .finish_non_exhaustive()
    }
}
