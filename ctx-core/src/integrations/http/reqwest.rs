//! [`DeadlineMiddleware`]: reqwest requests bounded by their context (feature `reqwest`).

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::Extensions;
use http_body::{Body, Frame, SizeHint};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::baggage::{self, BaggageKeys};
use super::body::RacedBody;
use super::client::strip_userinfo;
use super::grpc_timeout::{GRPC_TIMEOUT_NAME, remaining_budget, send_budget};
use super::{BoxError, HopError, Origin};
use crate::{Context, Error};

/// A [reqwest-middleware](https://docs.rs/reqwest-middleware) middleware: each request made
/// inside a context
///
/// - gets the context's remaining time as its timeout (or keeps its own, if smaller), and,
///   with [`send_grpc_timeout`](DeadlineMiddleware::send_grpc_timeout), the same budget as a
///   `grpc-timeout` header for the next hop (a server behind
///   [`ContextLayer`](super::ContextLayer) makes it its deadline);
/// - never sends a `grpc-timeout` longer than that budget: a request's own shorter
///   `grpc-timeout` is kept, a longer one (say, forwarded from an incoming request) is
///   lowered to the budget, with or without `send_grpc_timeout` (without it, no header is
///   added, but one already there is bounded: the next hop must not get more time than
///   this request has);
/// - fails at once, unsent, when the context is already done;
/// - is dropped (its connection closed) the moment the context ends, mid-body too.
///
/// Errors that the context caused are `reqwest_middleware::Error::Middleware` wrapping a
/// [`HopError`] (downcast the `anyhow::Error`), which names the request and the host; a
/// body read cut by the context fails with a [`HopError`] among its sources.
///
/// The context is the one put in the request's extensions
/// (`.with_extension(ctx.clone())`), else [`Context::current`] when the request is sent.
///
/// Over loopback, to a server behind [`ContextLayer`](super::ContextLayer), which makes the
/// `grpc-timeout` it receives the handler's deadline:
///
/// ```
/// use std::time::{Duration, Instant};
/// use ctx_core::{Context, Error, http::{ContextLayer, DeadlineMiddleware, HopError}};
///
/// # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
/// async fn budget(ctx: Context) -> String {
///     let left = ctx.deadline().map(|d| d.saturating_duration_since(Instant::now()));
///     format!("{}", left.map_or(0, |d| d.as_millis()))
/// }
/// let root = Context::background();
/// let app = axum::Router::new()
///     .route("/budget", axum::routing::get(budget))
///     .layer(ContextLayer::new(&root));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let base = format!("http://{}", listener.local_addr().unwrap());
/// tokio::spawn(async move { axum::serve(listener, app).await });
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(DeadlineMiddleware::new().send_grpc_timeout(true))
///     .build();
///
/// // The server's handler gets what is left of the caller's 500 ms.
/// let request = Context::background().with_timeout(Duration::from_millis(500));
/// let response = request.scope(client.get(format!("{base}/budget")).send()).await.unwrap();
/// let left: u64 = response.text().await.unwrap().parse().unwrap();
/// assert!(left > 0 && left <= 500, "{left}");
///
/// // A request from a context that is already done is never sent.
/// let done = Context::background().with_timeout(Duration::ZERO);
/// let err = done.scope(client.get(format!("{base}/budget")).send()).await.unwrap_err();
/// let reqwest_middleware::Error::Middleware(err) = err else { panic!("{err}") };
/// let hop = err.downcast_ref::<HopError>().unwrap();
/// assert_eq!(hop.error(), Error::DeadlineExceeded);
/// assert!(hop.to_string().starts_with("context deadline exceeded calling GET /budget on 127.0.0.1:"));
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct DeadlineMiddleware {
    grpc_timeout: bool,
    baggage: std::sync::Arc<BaggageKeys>,
}

impl DeadlineMiddleware {
    /// Sets each request's timeout from its context; sends no header.
    pub fn new() -> DeadlineMiddleware {
        DeadlineMiddleware::default()
    }

    /// Also send the budget as `grpc-timeout` (for a next hop that reads it); a request's
    /// own shorter `grpc-timeout` is kept. Without it a `grpc-timeout` already on the
    /// request is still lowered to the budget when longer.
    pub fn send_grpc_timeout(mut self, send: bool) -> DeadlineMiddleware {
        self.grpc_timeout = send;
        self
    }

    /// Also sends the context's values of these keys in the W3C `baggage` header, as
    /// [`PropagateDeadlineLayer::baggage`](super::PropagateDeadlineLayer::baggage) does.
    pub fn baggage(mut self, keys: BaggageKeys) -> DeadlineMiddleware {
        self.baggage = std::sync::Arc::new(keys);
        self
    }
}

fn hop(err: Error, request: &Request) -> HopError {
    let url = request.url();
    // `user:password@host:port` in the URL: errors name the host and port only.
    let authority = strip_userinfo(url.authority());
    let authority = match (url.port(), url.port_or_known_default()) {
        (None, Some(port)) if !authority.is_empty() => format!("{authority}:{port}"),
        _ => authority.to_string(),
    };
    HopError::new(
        err,
        Origin::Local,
        format!("{} {}", request.method(), url.path()),
        authority,
    )
}

#[async_trait::async_trait]
impl Middleware for DeadlineMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let ctx = super::context_of(extensions);
        let budget = remaining_budget(&ctx)
            .map_err(|err| reqwest_middleware::Error::middleware(hop(err, &request)))?;
        let mut ours = false;
        if let Some(remaining) = budget {
            let timeout = request.timeout_mut();
            if timeout.is_none_or(|own| remaining < own) {
                *timeout = Some(remaining);
                ours = true;
            }
        }
        // The request's budget: its context's, or its own timeout if shorter (or alone).
        if let Some(&budget) = request.timeout()
            && (self.grpc_timeout || request.headers().contains_key(GRPC_TIMEOUT_NAME))
        {
            send_budget(request.headers_mut(), budget);
        }
        baggage::inject(&self.baggage, &ctx, request.headers_mut());
        let cut = hop(Error::Cancelled, &request);
        match ctx.run(next.run(request, extensions)).await {
            Ok(Ok(response)) => Ok(watch_body(response, ctx, cut)),
            // reqwest's timer is the context's deadline: say so.
            Ok(Err(err)) if ours && err.is_timeout() => {
                let err = HopError::new(
                    Error::DeadlineExceeded,
                    Origin::Local,
                    cut.method(),
                    cut.authority(),
                );
                Err(reqwest_middleware::Error::middleware(err))
            }
            Ok(Err(reqwest_middleware::Error::Reqwest(err))) => {
                Err(reqwest_middleware::Error::Reqwest(without_userinfo(err)))
            }
            Ok(Err(err)) => Err(err),
            Err(err) => {
                let err = HopError::new(err, Origin::Local, cut.method(), cut.authority());
                Err(reqwest_middleware::Error::middleware(err))
            }
        }
    }
}

/// `err` without the userinfo (`user:password@`) of the URL it names: reqwest's errors
/// print their URL, and what this middleware returns never shows credentials (as its
/// [`HopError`]s, named by [`strip_userinfo`]'s rule, never do).
fn without_userinfo(mut err: reqwest::Error) -> reqwest::Error {
    if let Some(url) = err.url_mut() {
        // Only fails for URLs that cannot have userinfo, which then have none.
        let _ = url.set_password(None);
        let _ = url.set_username("");
    }
    err
}

/// The response with its body cut when `ctx` ends.
fn watch_body(response: Response, ctx: Context, hop: HopError) -> Response {
    let url = response.url().clone();
    let response: http::Response<reqwest::Body> = response.into();
    let (mut parts, body) = response.into_parts();
    // reqwest keeps a response's URL in an extension that only its builder can set.
    let with_url = reqwest::ResponseBuilderExt::url(http::Response::builder(), url)
        .body(())
        .expect("an empty response");
    parts.extensions.extend(with_url.into_parts().0.extensions);
    let body = WatchedBody {
        raced: RacedBody::new(ctx, body),
        hop,
    };
    Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
}

/// A response body whose frames are raced against the request's context (through [`Run`]):
/// it fails with a [`HopError`] (and is dropped) when the context ends.
///
/// [`Run`]: crate::Run
struct WatchedBody<B> {
    raced: RacedBody<B>,
    hop: HopError,
}

impl<B> Body for WatchedBody<B>
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
            Ok(frame) => frame.map(|f| f.map_err(Into::into)),
            Err(err) => {
                let hop =
                    HopError::new(err, Origin::Local, this.hop.method(), this.hop.authority());
                Some(Err(Box::new(hop)))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.raced.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.raced.size_hint()
    }
}
