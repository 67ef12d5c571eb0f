//! [`PropagateDeadlineLayer`]: outgoing requests carry the caller's remaining time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::baggage::{self, BaggageKeys};
use super::grpc_timeout::{remaining_budget, send_budget};
use crate::{Context, Error, Run};

/// The error type of [`PropagateDeadline`]: the inner service's error or a context [`Error`]
/// (downcast the box to tell which).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A tower layer for clients (hyper-util's, tonic channels): each outgoing request carries
/// the remaining time of its context as `grpc-timeout` (a request's own shorter
/// `grpc-timeout` is kept, a longer one lowered to it); a request whose context is already
/// done fails at once with the context's [`Error`], unsent; and a call in flight is dropped
/// (and fails the same way) the moment its context ends.
///
/// The context is [`Context::current`] at the time of the call, or the one given to
/// [`with_context`](PropagateDeadlineLayer::with_context).
#[derive(Clone, Debug, Default)]
pub struct PropagateDeadlineLayer {
    ctx: Option<Context>,
    baggage: Arc<BaggageKeys>,
}

impl PropagateDeadlineLayer {
    /// Uses [`Context::current`] of each call.
    pub fn new() -> PropagateDeadlineLayer {
        PropagateDeadlineLayer::default()
    }

    /// Uses `ctx` (a `&Context`, a `Context` or a `&CancelScope`) for every call.
    pub fn with_context(ctx: impl AsRef<Context>) -> PropagateDeadlineLayer {
        PropagateDeadlineLayer {
            ctx: Some(ctx.as_ref().clone()),
            ..PropagateDeadlineLayer::default()
        }
    }

    /// Also sends the context's values of these keys in the W3C `baggage` header (see
    /// [`baggage`](super::baggage)), after any entries the request already has.
    pub fn baggage(mut self, keys: BaggageKeys) -> PropagateDeadlineLayer {
        self.baggage = Arc::new(keys);
        self
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        PropagateDeadline {
            inner,
            ctx: self.ctx.clone(),
            baggage: self.baggage.clone(),
        }
    }
}

/// The service made by [`PropagateDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
    ctx: Option<Context>,
    baggage: Arc<BaggageKeys>,
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let ctx = self.ctx.clone().unwrap_or_else(Context::current);
        match remaining_budget(&ctx) {
            Err(err) => return DeadlineFuture::failed(err),
            // A request that set a shorter timeout of its own keeps it.
            Ok(Some(budget)) => send_budget(request.headers_mut(), budget),
            Ok(None) => {}
        }
        baggage::inject(&self.baggage, &ctx, request.headers_mut());
        DeadlineFuture {
            run: Some(ctx.into_run(self.inner.call(request))),
            failed: None,
        }
    }
}

/// `authority` (`user:password@host:port`, as a URI has it) without its userinfo: what
/// every client layer puts in its errors and statuses, so that credentials in a URL never
/// reach a log or a caller.
pub(super) fn strip_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

pin_project_lite::pin_project! {
    /// The response future of [`PropagateDeadline`]: the call raced against the caller's
    /// context (a [`Run`]), or the error it failed with before it was sent.
    pub struct DeadlineFuture<F> {
        #[pin]
        run: Option<Run<'static, F>>,
        failed: Option<Error>,
    }
}

impl<F> DeadlineFuture<F> {
    fn failed(err: Error) -> DeadlineFuture<F> {
        DeadlineFuture {
            run: None,
            failed: Some(err),
        }
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(err) = this.failed.take() {
            return Poll::Ready(Err(Box::new(err)));
        }
        let Some(run) = this.run.as_pin_mut() else {
            panic!("DeadlineFuture polled after completion");
        };
        // When the context ends first, `Run` drops the call in flight (its connection too).
        run.poll(cx).map(|raced| match raced {
            Ok(response) => response.map_err(Into::into),
            Err(err) => Err(Box::new(err) as BoxError),
        })
    }
}

impl<F> fmt::Debug for DeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineFuture")
            .field("run", &self.run)
            .field("failed", &self.failed)
            .finish()
    }
}
