//! [`RetryPolicy`]: retries that fit in the caller's budget.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use super::context_of;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::retry::Policy;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;

use super::BoxError;
use super::grpc_timeout::remaining_budget;
use crate::{Context, Done};

/// The header that tells a server how many attempts came before this one (gRFC A6).
pub const GRPC_PREVIOUS_RPC_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

const PREVIOUS_ATTEMPTS: HeaderName = HeaderName::from_static(GRPC_PREVIOUS_RPC_ATTEMPTS);
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// How many attempt durations the estimate of a typical attempt keeps.
const WINDOW: usize = 64;

/// How an attempt failed, as [`RetryPolicy`] sees it; [`retry_on`](RetryPolicy::retry_on)
/// decides which are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The attempt could not connect: it never reached the server.
    Connect,
    /// An HTTP response with this status, 400 or above (and no `grpc-status`).
    Http(u16),
    /// A gRPC status other than `OK`: its code (14 is `UNAVAILABLE`), from a trailers-only
    /// response's `grpc-status` header or a `tonic::Status` error.
    Grpc(i32),
    /// Any other error.
    Other,
}

impl Failure {
    /// The default rule: a connect error, HTTP 503 and gRPC `UNAVAILABLE` are retried;
    /// nothing else (a 504 or `DEADLINE_EXCEEDED` says the budget ran out: another attempt
    /// would too; a 500 may have done the work).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Failure::Connect | Failure::Http(503) | Failure::Grpc(14)
        )
    }

    /// The failure a response with this status and these headers amounts to, if any.
    fn of_response(status: http::StatusCode, headers: &http::HeaderMap) -> Option<Failure> {
        if let Some(code) = headers.get(GRPC_STATUS) {
            let code = std::str::from_utf8(code.as_bytes())
                .ok()
                .and_then(|code| code.trim().parse::<i32>().ok())
                .unwrap_or(2); // UNKNOWN: a status that does not parse
            return (code != 0).then_some(Failure::Grpc(code));
        }
        let status = status.as_u16();
        (status >= 400).then_some(Failure::Http(status))
    }

    /// The failure an error amounts to, found along its chain of sources.
    fn of_error(err: &(dyn std::error::Error + 'static)) -> Failure {
        let mut source = Some(err);
        while let Some(err) = source {
            #[cfg(feature = "tonic")]
            if let Some(status) = err.downcast_ref::<tonic::Status>() {
                return Failure::Grpc(status.code() as i32);
            }
            #[cfg(feature = "reqwest")]
            if let Some(err) = err.downcast_ref::<::reqwest::Error>()
                && err.is_connect()
            {
                return Failure::Connect;
            }
            if let Some(err) = err.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(
                    err.kind(),
                    ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
                ) {
                    return Failure::Connect;
                }
            }
            source = err.source();
        }
        Failure::Other
    }
}

/// What every clone of a policy shares: the configuration, the retry budget and the
/// window of recent attempt durations.
struct Shared {
    budget: Arc<TpsBudget>,
    backoff: (Duration, Duration),
    max_attempts: u32,
    quantile: f64,
    retry_on: Arc<dyn Fn(Failure) -> bool + Send + Sync>,
    recent: Mutex<VecDeque<Duration>>,
}

/// A [`tower::retry::Policy`] for ctx's client stacks: retries within the caller's budget.
///
/// Clones share the budget and the measurements; each request gets its own clone (tower's
/// `Retry` clones the policy per call), which counts that request's attempts.
///
/// A retry is worth sending only when it can succeed and the system can afford it. The
/// policy retries an attempt that failed in a way another attempt may not (a connect error,
/// HTTP 503, gRPC `UNAVAILABLE`), and only when all of these hold:
///
/// 1. the request's context is not done, and what is left of its deadline covers the backoff
///    *and* a typical attempt (a quantile of the durations of recent attempts, measured over
///    a bounded window shared by every clone of the policy): a retry that cannot finish in
///    time is load for nothing (a context without a deadline sets no such limit);
/// 2. the retry budget allows it: a [`TpsBudget`] (tower's; shared by clones), which lets
///    retries add at most a fixed fraction to the load, so a failing upstream is not hit by
///    a retry storm;
/// 3. fewer than [`max_attempts`](RetryPolicy::max_attempts) attempts were made (gRFC A6's
///    default cap: 5).
///
/// Between attempts it sleeps a jittered exponential backoff (tower's `ExponentialBackoff`,
/// on tokio's clock), and never past the deadline: a backoff that would end too late means
/// no retry. Each retry carries `grpc-previous-rpc-attempts` (gRFC A6: the number of
/// attempts before it; absent on the first).
///
/// # Where it goes in a stack
///
/// Above the deadline layer, so that every attempt is sent with the budget left *at that
/// attempt* (the layer below recomputes `grpc-timeout` on each call):
///
/// - tower / hyper: `Retry(policy)` → [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer)
///   → the client; the request body must be [`RetryBody`] (`String`, `Vec<u8>`, `Bytes`, …);
/// - tonic: [`BufferBodyLayer`] → `Retry(policy)` → [`grpc::ClientLayer`](super::grpc::ClientLayer)
///   → `Channel` (tonic's body is a stream, read once: the buffer layer keeps its bytes so an
///   attempt can be sent again);
/// - reqwest: [`RetryMiddleware`] before [`DeadlineMiddleware`](super::DeadlineMiddleware) in
///   the `ClientBuilder`'s `.with(..)` order.
///
/// The context is the request's `Context` extension if it has one, else
/// [`Context::current`] (as the client layers find it).
///
/// # Examples
///
/// A scripted service that answers 503 twice, then 200: the policy retries it, and each
/// retry says which attempt it is.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use ctx_core::http::{BoxError, RetryPolicy};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let upstream = service_fn(move |request: http::Request<String>| {
///     let log = log.clone();
///     async move {
///         let attempt = request.headers().get("grpc-previous-rpc-attempts").cloned();
///         let mut seen = log.lock().unwrap();
///         seen.push(attempt);
///         let status = if seen.len() < 3 { 503 } else { 200 };
///         Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
///     }
/// });
/// let policy = RetryPolicy::new().backoff(Duration::from_millis(1), Duration::from_millis(10));
/// let client = ServiceBuilder::new()
///     .layer(tower::retry::RetryLayer::new(policy))
///     .service(upstream);
///
/// let ctx = ctx_core::Context::background().with_timeout(Duration::from_secs(10));
/// let request = http::Request::builder().uri("/").body(String::new()).unwrap();
/// let response = ctx.scope(client.oneshot(request)).await.unwrap();
/// assert_eq!(response.status(), 200);
/// let one = http::HeaderValue::from_static("1");
/// let two = http::HeaderValue::from_static("2");
/// assert_eq!(*seen.lock().unwrap(), [None, Some(one), Some(two)]);
/// # });
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    shared: Arc<Shared>,
    /// Attempts made so far for this request.
    attempts: u32,
    /// When the attempt in flight was sent (tokio's clock, so paused time measures too).
    started: Option<tokio::time::Instant>,
    /// This request's backoff, made at its first retry.
    backoff: Option<ExponentialBackoff<HasherRng>>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("budget", &self.shared.budget)
            .field("backoff", &self.shared.backoff)
            .field("max_attempts", &self.shared.max_attempts)
            .field("quantile", &self.shared.quantile)
            .field("typical_attempt", &self.typical_attempt())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::new()
    }
}

impl RetryPolicy {
    /// Retries [`Failure::is_transient`] failures, at most 5 attempts, a backoff from 25 ms
    /// doubling up to 1 s (plus up to as much jitter, capped at 1 s), the median of the last
    /// 64 attempts as the typical attempt, and tower's default [`TpsBudget`] (retries add at
    /// most 20% to the load, plus 10 a second, over 10 s).
    pub fn new() -> RetryPolicy {
        RetryPolicy {
            shared: Arc::new(Shared {
                budget: Arc::new(TpsBudget::default()),
                backoff: (Duration::from_millis(25), Duration::from_secs(1)),
                max_attempts: 5,
                quantile: 0.5,
                retry_on: Arc::new(Failure::is_transient),
                recent: Mutex::new(VecDeque::with_capacity(WINDOW)),
            }),
            attempts: 0,
            started: None,
            backoff: None,
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Shared)) -> RetryPolicy {
        let shared = &*self.shared;
        let mut copy = Shared {
            budget: shared.budget.clone(),
            backoff: shared.backoff,
            max_attempts: shared.max_attempts,
            quantile: shared.quantile,
            retry_on: shared.retry_on.clone(),
            recent: Mutex::new(lock(&shared.recent).clone()),
        };
        f(&mut copy);
        self.shared = Arc::new(copy);
        self
    }

    /// The retry budget, shared by every clone (and with whoever else holds the `Arc`, e.g.
    /// several policies that call the same upstream).
    pub fn budget(self, budget: Arc<TpsBudget>) -> RetryPolicy {
        self.configure(|shared| shared.budget = budget)
    }

    /// The backoff before the first retry is `min` (plus jitter), doubling for each next one
    /// up to `max`. `min` is raised to 1 ms and `max` to `min` if they are lower.
    pub fn backoff(self, min: Duration, max: Duration) -> RetryPolicy {
        let min = min.max(Duration::from_millis(1));
        self.configure(|shared| shared.backoff = (min, max.max(min)))
    }

    /// At most this many attempts per request, the first included (at least 1).
    pub fn max_attempts(self, attempts: u32) -> RetryPolicy {
        self.configure(|shared| shared.max_attempts = attempts.max(1))
    }

    /// Which quantile of recent attempt durations counts as a typical attempt (0.0 to 1.0;
    /// default 0.5): a retry needs at least that much budget left after its backoff.
    pub fn attempt_quantile(self, quantile: f64) -> RetryPolicy {
        let quantile = if quantile.is_nan() {
            0.5
        } else {
            quantile.clamp(0.0, 1.0)
        };
        self.configure(|shared| shared.quantile = quantile)
    }

    /// Retries the failures for which `retryable` says `true` (instead of
    /// [`Failure::is_transient`]).
    ///
    /// ```
    /// use ctx_core::http::{Failure, RetryPolicy};
    /// // Also retry a 502 from a proxy.
    /// let policy = RetryPolicy::new().retry_on(|f| f.is_transient() || f == Failure::Http(502));
    /// # let _ = policy;
    /// ```
    pub fn retry_on(
        self,
        retryable: impl Fn(Failure) -> bool + Send + Sync + 'static,
    ) -> RetryPolicy {
        self.configure(|shared| shared.retry_on = Arc::new(retryable))
    }

    /// `tower::retry::RetryLayer::new(self)`: the layer that retries by this policy.
    pub fn into_layer(self) -> tower::retry::RetryLayer<RetryPolicy> {
        tower::retry::RetryLayer::new(self)
    }

    /// The current estimate of a typical attempt's duration, `None` before any attempt was
    /// measured.
    pub fn typical_attempt(&self) -> Option<Duration> {
        let recent = lock(&self.shared.recent);
        if recent.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = recent.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (self.shared.quantile * (sorted.len() - 1) as f64).round() as usize;
        Some(sorted[rank.min(sorted.len() - 1)])
    }

    /// Notes that an attempt is being sent now.
    fn begin_attempt(&mut self) {
        self.started = Some(tokio::time::Instant::now());
    }

    /// The attempt in flight ended with `failure` (`None`: it succeeded); the backoff to
    /// sleep before the next attempt, or `None` for no retry. Shared by the tower policy and
    /// the reqwest middleware.
    fn after_attempt(&mut self, ctx: &Context, failure: Option<Failure>) -> Option<RetryBackoff> {
        if let Some(started) = self.started.take() {
            let mut recent = lock(&self.shared.recent);
            if recent.len() == WINDOW {
                recent.pop_front();
            }
            recent.push_back(started.elapsed());
        }
        self.attempts += 1;
        if self.attempts == 1 {
            // Every request (not every attempt) earns retries.
            self.shared.budget.deposit();
        }
        let failure = failure?;
        if !(self.shared.retry_on)(failure) || self.attempts >= self.shared.max_attempts {
            return None;
        }
        let remaining = remaining_budget(ctx).ok()?;
        let (min, max) = self.shared.backoff;
        let backoff = self.backoff.get_or_insert_with(|| {
            // A generator per request (seeded afresh), so that concurrent requests do not
            // back off in step.
            ExponentialBackoffMaker::new(min, max, 1.0, HasherRng::default())
                .expect("min <= max, max > 0, jitter in range")
                .make_backoff()
        });
        let sleep = backoff.next_backoff();
        if let Some(remaining) = remaining {
            let pause = sleep
                .deadline()
                .saturating_duration_since(tokio::time::Instant::now());
            let attempt = self.typical_attempt().unwrap_or_default();
            if pause.saturating_add(attempt) >= remaining {
                return None;
            }
        }
        self.shared.budget.withdraw().then(|| RetryBackoff {
            sleep,
            done: ctx.done(),
        })
    }

    /// The value of `grpc-previous-rpc-attempts` for the next attempt.
    fn previous_attempts(&self) -> HeaderValue {
        HeaderValue::from(self.attempts)
    }
}

pin_project_lite::pin_project! {
    /// The pause before a retry: a backoff on tokio's clock that ends early when the
    /// request's context ends (the retry then fails at once in the deadline layer below,
    /// unsent).
    #[must_use = "futures do nothing unless polled"]
    pub struct RetryBackoff {
        #[pin]
        sleep: tokio::time::Sleep,
        done: Done,
    }
}

impl Future for RetryBackoff {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.project();
        if Pin::new(this.done).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.sleep.poll(cx)
    }
}

impl fmt::Debug for RetryBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBackoff")
            .field("until", &self.sleep.deadline())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The window holds plain durations: a panic elsewhere cannot leave it half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request body that can be sent again: the retry policy copies a request before each
/// attempt, and needs a body that can be copied.
///
/// Implemented for in-memory bodies (`String`, `Vec<u8>`, `&'static str`, `()`, and with
/// feature `tonic` `bytes::Bytes`), and for tonic's streaming body once a
/// [`BufferBodyLayer`] above has kept its bytes (without it, such a request is sent once).
pub trait RetryBody: Sized {
    /// A copy of the body, given the request's extensions; `None` if it cannot be copied
    /// (the request is then not retried).
    fn try_clone(&self, extensions: &http::Extensions) -> Option<Self>;
}

macro_rules! clone_body {
    ($($ty:ty),*) => {$(
        impl RetryBody for $ty {
            fn try_clone(&self, _: &http::Extensions) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}
clone_body!(String, Vec<u8>, &'static str, ());
#[cfg(feature = "tonic")]
clone_body!(bytes::Bytes);

impl<B, R> Policy<Request<B>, Response<R>, BoxError> for RetryPolicy
where
    B: RetryBody,
{
    type Future = RetryBackoff;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<R>, BoxError>,
    ) -> Option<Self::Future> {
        let failure = match result {
            Ok(response) => Failure::of_response(response.status(), response.headers()),
            Err(err) => Some(Failure::of_error(&**err)),
        };
        let ctx = context_of(request.extensions());
        let sleep = self.after_attempt(&ctx, failure)?;
        request
            .headers_mut()
            .insert(PREVIOUS_ATTEMPTS, self.previous_attempts());
        Some(sleep)
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        // Called before each attempt is sent: the clock of the attempt starts here.
        self.begin_attempt();
        let body = request.body().try_clone(request.extensions())?;
        let mut copy = Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

#[cfg(feature = "tonic")]
pub use self::buffer::{BufferBody, BufferBodyLayer};

#[cfg(feature = "tonic")]
mod buffer {
    //! Keeping a tonic request's body in memory so that it can be sent again.

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    use bytes::{Bytes, BytesMut};
    use http::Request;
    use http_body::{Body, Frame, SizeHint};
    use tower_layer::Layer;
    use tower_service::Service;

    use super::RetryBody;
    use crate::http::BoxError;

    /// The bytes of a buffered body, kept in the request's extensions.
    #[derive(Clone, Debug)]
    struct Buffered(Bytes);

    /// A body of bytes in memory.
    struct Once(Option<Bytes>);

    impl Body for Once {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
        }
    }

    impl RetryBody for tonic::body::Body {
        fn try_clone(&self, extensions: &http::Extensions) -> Option<Self> {
            let Buffered(bytes) = extensions.get::<Buffered>()?;
            Some(tonic::body::Body::new(Once(Some(bytes.clone()))))
        }
    }

    /// A tower layer that reads a tonic request's body into memory before passing the
    /// request on, so that a [`RetryPolicy`](super::RetryPolicy) below it can send it
    /// again: put it above `tower::retry::RetryLayer`. The whole body is read (a unary
    /// call's one message, or a client stream that ends): do not use it for a client
    /// stream that does not end before the response.
    ///
    /// ```
    /// use ctx_core::http::{BufferBodyLayer, RetryPolicy, grpc::ClientLayer};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
    /// let channel = tower::ServiceBuilder::new()
    ///     .layer(BufferBodyLayer::new())
    ///     .layer(tower::retry::RetryLayer::new(RetryPolicy::new()))
    ///     .layer(ClientLayer::new()) // below the retries: each attempt gets its own budget
    ///     .service(channel);
    /// let _client = tonic::client::Grpc::new(channel);
    /// # });
    /// ```
    #[derive(Clone, Copy, Debug, Default)]
    pub struct BufferBodyLayer;

    impl BufferBodyLayer {
        /// The layer.
        pub fn new() -> BufferBodyLayer {
            BufferBodyLayer
        }
    }

    impl<S> Layer<S> for BufferBodyLayer {
        type Service = BufferBody<S>;

        fn layer(&self, inner: S) -> BufferBody<S> {
            BufferBody { inner }
        }
    }

    /// The service made by [`BufferBodyLayer`].
    #[derive(Clone, Debug)]
    pub struct BufferBody<S> {
        inner: S,
    }

    impl<S> Service<Request<tonic::body::Body>> for BufferBody<S>
    where
        S: Service<Request<tonic::body::Body>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
    {
        type Response = S::Response;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
            self.inner.poll_ready(cx).map_err(Into::into)
        }

        fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
            // The service polled ready is the one that must be called (tower's contract).
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            Box::pin(async move {
                let (mut parts, mut body) = request.into_parts();
                let mut bytes = BytesMut::new();
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    // Request bodies have no trailers in gRPC; data is all there is.
                    if let Ok(data) = frame?.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                let bytes = bytes.freeze();
                parts.extensions.insert(Buffered(bytes.clone()));
                let body = tonic::body::Body::new(Once(Some(bytes)));
                inner
                    .call(Request::from_parts(parts, body))
                    .await
                    .map_err(Into::into)
            })
        }
    }
}

#[cfg(feature = "reqwest")]
pub use self::middleware::RetryMiddleware;

#[cfg(feature = "reqwest")]
mod middleware {
    //! The same policy for reqwest, through reqwest-middleware.

    use http::Extensions;
    use reqwest::{Request, Response};
    use reqwest_middleware::{Middleware, Next};

    use super::{Failure, PREVIOUS_ATTEMPTS, RetryPolicy, context_of};

    /// A [reqwest-middleware](https://docs.rs/reqwest-middleware) middleware that retries
    /// by a [`RetryPolicy`]'s rules (its budget and measurements are shared with the policy
    /// it was made from). Add it *before*
    /// [`DeadlineMiddleware`](crate::http::DeadlineMiddleware), so that each attempt gets the
    /// timeout (and `grpc-timeout`) left at that attempt. A request whose body cannot be
    /// copied (a stream) is sent once.
    ///
    /// ```
    /// use ctx_core::http::{DeadlineMiddleware, RetryMiddleware, RetryPolicy};
    ///
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(RetryMiddleware::new(RetryPolicy::new()))
    ///     .with(DeadlineMiddleware::new().send_grpc_timeout(true))
    ///     .build();
    /// # let _ = client;
    /// ```
    #[derive(Clone, Debug)]
    pub struct RetryMiddleware {
        policy: RetryPolicy,
    }

    impl RetryMiddleware {
        /// Retries by `policy`'s rules.
        pub fn new(policy: RetryPolicy) -> RetryMiddleware {
            RetryMiddleware { policy }
        }
    }

    impl From<RetryPolicy> for RetryMiddleware {
        fn from(policy: RetryPolicy) -> RetryMiddleware {
            RetryMiddleware::new(policy)
        }
    }

    #[async_trait::async_trait]
    impl Middleware for RetryMiddleware {
        async fn handle(
            &self,
            mut request: Request,
            extensions: &mut Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<Response> {
            let ctx = context_of(extensions);
            let mut policy = self.policy.clone();
            loop {
                let Some(attempt) = request.try_clone() else {
                    return next.run(request, extensions).await;
                };
                policy.begin_attempt();
                let result = next.clone().run(attempt, extensions).await;
                let failure = match &result {
                    Ok(response) => Failure::of_response(response.status(), response.headers()),
                    Err(reqwest_middleware::Error::Reqwest(err)) => Some(Failure::of_error(err)),
                    Err(reqwest_middleware::Error::Middleware(err)) => {
                        Some(Failure::of_error(err.as_ref()))
                    }
                };
                let Some(sleep) = policy.after_attempt(&ctx, failure) else {
                    return result;
                };
                drop(result);
                request
                    .headers_mut()
                    .insert(PREVIOUS_ATTEMPTS, policy.previous_attempts());
                sleep.await;
            }
        }
    }
}
