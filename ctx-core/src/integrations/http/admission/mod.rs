//! [`AdmissionLayer`]: deadline-aware admission, so that a service under overload keeps
//! answering on time instead of serving every request after its caller gave up.
//!
//! A service that can do `N` things at once (a pool of `N` database connections, `N` cores)
//! and receives more than that makes requests queue. A plain queue (tower's
//! `ConcurrencyLimit`, a semaphore) serves them in order of arrival, each after its
//! predecessors: once the queue is longer than the callers' deadlines, every request waits
//! its turn and is served after its caller has gone, and the service delivers nothing on
//! time however busy it is. The layer keeps the service doing work that can still finish:
//!
//! - at most `max_in_flight` requests are inside the service; the others wait in the
//!   layer's queue (`poll_ready` is always ready: the queue, not backpressure, holds them);
//! - a request is never started if its context is done, if its remaining budget is zero or
//!   below [`min_budget`](AdmissionLayer::min_budget), or below what recent requests needed:
//!   the 10th percentile of the last 64 service times (once 5 were measured; time from
//!   calling the service to its response, streamed bodies not included). It is answered at
//!   once, on arrival or when its turn comes, without calling the service;
//! - a waiting request whose context ends (its deadline, its client gone, the server
//!   shutting down) leaves the queue at once and frees its place; so does one whose
//!   response future is dropped;
//! - while the queue *stands* it serves the newest request first (adaptive LIFO, as in
//!   Facebook's "Fail at Scale"): newest requests have the most budget left, the oldest are
//!   the likeliest to expire anyway. The test is CoDel's: the queue stands when its oldest
//!   request has waited longer than a target (5 ms by default) for a whole interval
//!   (100 ms); otherwise it is first come, first served.
//!   [`standing_queue`](AdmissionLayer::standing_queue) changes both;
//! - beyond [`max_queued`](AdmissionLayer::max_queued) waiting requests (1024 by default),
//!   a request is shed at once.
//!
//! # Answers
//!
//! | case | HTTP | gRPC (trailers-only, HTTP 200) | to a client |
//! | --- | --- | --- | --- |
//! | queue full (shed) | 503 Service Unavailable | `UNAVAILABLE` (14) | retry, with backoff, within the budget: another replica or a later moment may have room |
//! | deadline passed, or the budget left is below what requests need | 504 Gateway Timeout | `DEADLINE_EXCEEDED` (4) | do not retry: the budget is spent, a retry would be late too |
//! | context cancelled (shutdown, client gone) | 503 Service Unavailable | `UNAVAILABLE` (14) | retry elsewhere, within the budget |
//!
//! HTTP answers carry the reason as `text/plain; charset=utf-8`; gRPC answers carry it as
//! `grpc-message`, and are recognised by a request `content-type` starting with
//! `application/grpc`. A client that retries should do so only while its budget covers
//! another attempt, and within a retry budget (`http::RetryPolicy` does both).
//!
//! # Where it goes
//!
//! *Inside* [`ContextLayer`](crate::http::ContextLayer) or
//! [`grpc::ServerLayer`](crate::http::grpc::ServerLayer), which give each request its
//! context (the layer reads it from the request's extensions, [`Context::current`] as a
//! fallback), and around whatever is the bounded resource: the whole router, or only the
//! routes that use it (axum's `route_layer`), so that cheap endpoints are not queued
//! behind expensive ones. With tower's `ServiceBuilder` the first layer is the outermost:
//! `ServiceBuilder::new().layer(ContextLayer::new(&root)).layer(AdmissionLayer::new(8))`;
//! on tonic, `Server::builder().layer(ServerLayer::new(&root)).layer(AdmissionLayer::new(8))`;
//! on an axum `Router`, the last `.layer(..)` is the outermost, so
//! `.layer(AdmissionLayer::new(8)).layer(ContextLayer::new(&root))`.
//!
//! # Choosing `max_in_flight`
//!
//! The number of requests the bounded resource serves at once without slowing each one
//! down: the size of the database pool the handlers share, the number of cores for
//! CPU-bound handlers, an upstream's concurrency limit. By Little's law a service whose
//! requests take `t` seconds each serves at most `max_in_flight / t` requests a second
//! (16 connections, 20 ms a query: 800 a second); more in flight does not raise that, it
//! only makes each request slower. Measure:
//! raise it while throughput still grows. `max_queued` bounds the memory requests take
//! while they wait; waiters whose deadlines pass leave on their own, so it rarely needs
//! to be small.
//!
//! # Clock
//!
//! Time is read on tokio's clock with the `tokio` feature (the system's clock, unless a
//! test paused tokio's: then budgets, waits and service times all follow the paused
//! clock), and on the system's without it.
//!
//! # Counters
//!
//! [`AdmissionLayer::stats`] says what the layer did (requests admitted, shed, expired on
//! arrival or while queued, rejected by the budget estimate) and how many are in flight and
//! waiting now, for every clone of the layer and of its services.
//!
//! # Example
//!
//! One place and no queue: a second request is shed with 503 while the first runs.
//!
//! ```
//! use std::convert::Infallible;
//! use ctx_core::{Context, http::{AdmissionLayer, ContextLayer}};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # futures::executor::block_on(async {
//! let (release, wait) = futures::channel::oneshot::channel::<()>();
//! let wait = std::sync::Arc::new(std::sync::Mutex::new(Some(wait)));
//! let admission = AdmissionLayer::new(1).max_queued(0);
//! let root = Context::background().with_cancel();
//! let mut server = ContextLayer::new(&root).layer(admission.layer(service_fn(
//!     move |_request: http::Request<String>| {
//!         let wait = wait.lock().unwrap().take();
//!         async move {
//!             if let Some(wait) = wait {
//!                 let _ = wait.await; // the first request holds the only place
//!             }
//!             Ok::<_, Infallible>(http::Response::new("done".to_string()))
//!         }
//!     },
//! )));
//!
//! let first = server.ready().await.unwrap().call(http::Request::new(String::new()));
//! let mut first = Box::pin(first);
//! assert!(futures::poll!(first.as_mut()).is_pending()); // inside the service
//!
//! let second = server.ready().await.unwrap().call(http::Request::new(String::new())).await;
//! assert_eq!(second.unwrap().status(), http::StatusCode::SERVICE_UNAVAILABLE);
//!
//! release.send(()).unwrap();
//! assert_eq!(first.await.unwrap().status(), http::StatusCode::OK);
//!
//! let stats = admission.stats();
//! assert_eq!((stats.admitted, stats.shed, stats.in_flight, stats.queued), (1, 1, 0, 0));
//! # });
//! ```

mod answer;
mod queue;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::context_of;
use super::respond::is_grpc;
pub use answer::AdmissionBody;
use answer::Reject;
use queue::{Arrival, Config, Counts, Permit, Shared, Ticket};

use crate::{Context, Done};

/// A tower layer that admits at most `max_in_flight` requests into its service at once,
/// queues the others, and never starts a request that cannot finish in time. See the
/// [module docs](self) for what it does, where it goes and how to size it.
///
/// Clones share one queue and one set of counters, as do the services they make.
///
/// ```
/// use std::time::Duration;
/// use ctx_core::http::AdmissionLayer;
///
/// // A handler bound by a pool of 16 database connections.
/// let layer = AdmissionLayer::new(16)
///     .max_queued(256)
///     .min_budget(Duration::from_millis(5));
/// assert_eq!(layer.stats().in_flight, 0);
/// ```
#[derive(Clone)]
pub struct AdmissionLayer {
    shared: Arc<Shared>,
}

impl AdmissionLayer {
    /// At most `max_in_flight` requests inside the service at once (0 is taken as 1); the
    /// rest wait in the layer's queue, up to 1024 of them.
    pub fn new(max_in_flight: usize) -> AdmissionLayer {
        AdmissionLayer::with_config(Config {
            max_in_flight: max_in_flight.max(1),
            max_queued: 1024,
            min_budget: Duration::ZERO,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
        })
    }

    fn with_config(config: Config) -> AdmissionLayer {
        AdmissionLayer {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// At most `n` requests waiting (1024 by default); a request that finds `n` waiting is
    /// shed at once (503, `UNAVAILABLE`). With 0 a request either finds a free place or is
    /// shed.
    ///
    /// Like every setting, this makes a new layer with a queue and counters of its own:
    /// configure the layer before using or cloning it.
    pub fn max_queued(self, n: usize) -> AdmissionLayer {
        AdmissionLayer::with_config(Config {
            max_queued: n,
            ..self.shared.config
        })
    }

    /// Never starts a request with less than `d` of budget left (none by default): it is
    /// answered 504 (`DEADLINE_EXCEEDED`) on arrival or when its turn comes. Use the least
    /// time a request can take to succeed.
    pub fn min_budget(self, d: Duration) -> AdmissionLayer {
        AdmissionLayer::with_config(Config {
            min_budget: d,
            ..self.shared.config
        })
    }

    /// CoDel's parameters for telling a standing queue from a burst (5 ms and 100 ms by
    /// default): the queue stands, and serves the newest request first, once its oldest
    /// request has waited longer than `target` for `interval` without a break.
    /// `Duration::ZERO` for both serves newest first whenever a request waits.
    pub fn standing_queue(self, target: Duration, interval: Duration) -> AdmissionLayer {
        AdmissionLayer::with_config(Config {
            target,
            interval,
            ..self.shared.config
        })
    }

    /// What the layer and its services did so far, and their requests now.
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats::of(&self.shared)
    }
}

impl fmt::Debug for AdmissionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("max_in_flight", &self.shared.config.max_in_flight)
            .field("max_queued", &self.shared.config.max_queued)
            .field("min_budget", &self.shared.config.min_budget)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> AdmissionService<S> {
        AdmissionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// What an [`AdmissionLayer`] did, and its requests now; from
/// [`AdmissionLayer::stats`] or [`AdmissionService::stats`]. Each figure is exact, but
/// read at its own instant (the counters are not frozen together).
///
/// Each request is counted once, by how its admission ended: `admitted` (the service was
/// called), `shed`, `expired_on_arrival`, `expired_while_queued` or `predicted_miss`; the only
/// requests left out are those whose future was dropped, or whose service failed to become
/// ready, after they got a place and before the service was called. Each figure is both a
/// field and a method of the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStats {
    /// Requests passed to the service.
    pub admitted: u64,
    /// Requests shed because the queue was full (503, `UNAVAILABLE`).
    pub shed: u64,
    /// Requests whose context was done, or whose deadline had passed, when they arrived.
    pub expired_on_arrival: u64,
    /// Requests that left the queue before their turn, or were found done at their turn:
    /// their context ended (deadline, cancel) or their response future was dropped.
    pub expired_while_queued: u64,
    /// Requests not started because their remaining budget was below
    /// [`min_budget`](AdmissionLayer::min_budget) or below what recent requests needed.
    pub predicted_miss: u64,
    /// Requests inside the service now.
    pub in_flight: usize,
    /// Requests waiting now.
    pub queued: usize,
    /// What recent requests needed (the 10th percentile of recent service times), below
    /// which a request is not started; `None` until 5 were measured.
    pub needed: Option<Duration>,
}

impl AdmissionStats {
    fn of(shared: &Shared) -> AdmissionStats {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (in_flight, queued) = shared.occupancy();
        let counts: &Counts = &shared.counts;
        AdmissionStats {
            admitted: load(&counts.admitted),
            shed: load(&counts.shed),
            expired_on_arrival: load(&counts.expired_on_arrival),
            expired_while_queued: load(&counts.expired_while_queued),
            predicted_miss: load(&counts.predicted_miss),
            in_flight,
            queued,
            needed: shared.needed(),
        }
    }

    /// Requests passed to the service.
    pub fn admitted(&self) -> u64 {
        self.admitted
    }

    /// Requests shed because the queue was full.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// Requests already done when they arrived.
    pub fn expired_on_arrival(&self) -> u64 {
        self.expired_on_arrival
    }

    /// Requests whose context ended (or whose future was dropped) while they waited.
    pub fn expired_while_queued(&self) -> u64 {
        self.expired_while_queued
    }

    /// Requests with less budget than `min_budget` or than recent requests needed.
    pub fn predicted_miss(&self) -> u64 {
        self.predicted_miss
    }

    /// Requests inside the service now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued
    }
}

/// The service made by [`AdmissionLayer`]. Clones share the layer's queue and counters.
///
/// Its `poll_ready` is always ready. A request that finds a place free calls the inner
/// service at once if that is ready (most services always are); otherwise its response
/// future holds a clone of the inner service (which must be `Clone`, as axum's and tonic's
/// are), waits in the queue for a place, drives the clone ready, and leaves as soon as its
/// context ends.
#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> AdmissionService<S> {
    /// What the layer this service came from did so far (see [`AdmissionLayer::stats`]).
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats::of(&self.shared)
    }
}

impl<S> fmt::Debug for AdmissionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionService")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Whether a request with `ctx` may start `now`; counts nothing.
fn judge(shared: &Shared, ctx: &Context, queued: bool, now: Instant) -> Result<(), Reject> {
    if let Some(err) = ctx.err() {
        return Err(Reject::ended(err, queued));
    }
    let Some(deadline) = ctx.deadline() else {
        return Ok(());
    };
    let left = deadline.saturating_duration_since(now);
    if left.is_zero() {
        return Err(Reject::Expired { queued });
    }
    let needed = match shared.needed() {
        Some(needed) => needed.max(shared.config.min_budget),
        None => shared.config.min_budget,
    };
    if left < needed {
        return Err(Reject::TooShort { left, needed });
    }
    Ok(())
}

/// Counts `reject` in its counter.
fn count(shared: &Shared, reject: Reject) {
    let counts = &shared.counts;
    Counts::add(match reject {
        Reject::Shed => &counts.shed,
        Reject::Cancelled { queued: false } | Reject::Expired { queued: false } => {
            &counts.expired_on_arrival
        }
        Reject::Cancelled { queued: true } | Reject::Expired { queued: true } => {
            &counts.expired_while_queued
        }
        Reject::TooShort { .. } => &counts.predicted_miss,
    });
}

impl<S, B, R> Service<Request<B>> for AdmissionService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
{
    type Response = Response<AdmissionBody<R>>;
    type Error = S::Error;
    type Future = AdmissionFuture<S, B>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(())) // never backpressure: a request without a place waits in the queue
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let now = queue::now();
        let verdict = match request.extensions().get::<Context>() {
            Some(ctx) => judge(&self.shared, ctx, false, now),
            None => judge(&self.shared, &Context::current(), false, now),
        };
        if let Err(reject) = verdict {
            count(&self.shared, reject);
            let grpc = is_grpc(&request);
            return AdmissionFuture {
                stage: Stage::Answered { reject, grpc },
            };
        }
        let stage = match self.shared.arrive() {
            Arrival::Admit(permit) => {
                // A place: the service is called now if it is ready (most are, always; this
                // `poll_ready` is the one tower's contract asks for before `call`), with no
                // clone; else a clone waits in the response future until it is ready.
                let noop = &mut TaskContext::from_waker(std::task::Waker::noop());
                match self.inner.poll_ready(noop) {
                    Poll::Ready(Ok(())) => {
                        Counts::add(&self.shared.counts.admitted);
                        Stage::Running {
                            future: self.inner.call(request),
                            permit,
                            started: now,
                        }
                    }
                    Poll::Ready(Err(error)) => {
                        drop(permit);
                        Stage::Failed { error: Some(error) }
                    }
                    // The service that is getting ready (it may hold a place in a
                    // semaphore's queue) goes with this request, where it is polled again
                    // with the task's waker; a clone serves the next calls.
                    Poll::Pending => {
                        let fresh = self.inner.clone();
                        Stage::Ready {
                            permit,
                            waiting: Box::new(Waiting {
                                done: None,
                                ctx: context_of(request.extensions()),
                                svc: std::mem::replace(&mut self.inner, fresh),
                                request,
                            }),
                        }
                    }
                }
            }
            Arrival::Wait(ticket) => {
                let ctx = context_of(request.extensions());
                Stage::Queued {
                    ticket,
                    waiting: Box::new(Waiting {
                        done: Some(ctx.done()),
                        ctx,
                        svc: self.inner.clone(),
                        request,
                    }),
                }
            }
            Arrival::Full => {
                count(&self.shared, Reject::Shed);
                Stage::Answered {
                    reject: Reject::Shed,
                    grpc: is_grpc(&request),
                }
            }
        };
        AdmissionFuture { stage }
    }
}

/// A request without a place, or waiting for the service to be ready: boxed, so that the
/// response future stays small (it is moved whole by every layer around it), and only a
/// request that waits allocates.
struct Waiting<S, B> {
    /// The context's end (`None` until a wait for the service needed it).
    done: Option<Done>,
    ctx: Context,
    svc: S,
    request: Request<B>,
}

pin_project_lite::pin_project! {
    /// The response future of [`AdmissionService`]: the layer's answer, or the request
    /// waiting for a place, then inside the service.
    ///
    /// # Cancellation safety
    ///
    /// Dropping it leaves the queue (or frees the place it held) at once.
    #[must_use = "futures do nothing unless polled"]
    pub struct AdmissionFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        stage: Stage<S, B, S::Future, S::Error>,
    }
}

pin_project_lite::pin_project! {
    #[project = StageProj]
    #[project_replace = StageOwned]
    enum Stage<S, B, F, E> {
        /// Answered by the layer, the service never called.
        Answered { reject: Reject, grpc: bool },
        /// The service failed to become ready.
        Failed { error: Option<E> },
        /// Waiting for a place, or for the context to end.
        Queued { ticket: Ticket, waiting: Box<Waiting<S, B>> },
        /// Holding a place, driving the service ready.
        Ready { permit: Permit, waiting: Box<Waiting<S, B>> },
        /// Inside the service.
        Running {
            #[pin]
            future: F,
            permit: Permit,
            started: Instant,
        },
        Over,
    }
}

impl<S, B, R> Future for AdmissionFuture<S, B>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Output = Result<Response<AdmissionBody<R>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut stage = self.project().stage;
        loop {
            match stage.as_mut().project() {
                StageProj::Answered { reject, grpc } => {
                    let response = reject.response(*grpc);
                    stage.set(Stage::Over);
                    return Poll::Ready(Ok(response));
                }
                StageProj::Failed { error } => {
                    let error = error
                        .take()
                        .expect("AdmissionFuture polled after completion");
                    stage.set(Stage::Over);
                    return Poll::Ready(Err(error));
                }
                StageProj::Queued { ticket, waiting } => {
                    // Its context ended while it waited: it leaves now (the ticket's drop
                    // frees a place granted a moment ago, and counts it).
                    let done = waiting
                        .done
                        .as_mut()
                        .expect("a queued request waits on done");
                    if let Poll::Ready(err) = Pin::new(done).poll(cx) {
                        let grpc = is_grpc(&waiting.request);
                        stage.set(Stage::Over); // drops the ticket
                        return Poll::Ready(Ok(Reject::ended(err, true).response(grpc)));
                    }
                    std::task::ready!(ticket.poll_granted(cx.waker()));
                    let StageOwned::Queued { ticket, waiting } =
                        stage.as_mut().project_replace(Stage::Over)
                    else {
                        unreachable!("matched above")
                    };
                    let permit = ticket.into_permit();
                    // Its turn: judged again, its budget having shrunk while it waited.
                    if let Err(reject) = judge(permit.shared(), &waiting.ctx, true, queue::now()) {
                        count(permit.shared(), reject);
                        drop(permit); // the place goes to the next waiter
                        return Poll::Ready(Ok(reject.response(is_grpc(&waiting.request))));
                    }
                    stage.set(Stage::Ready { permit, waiting });
                }
                StageProj::Ready { waiting, .. } => match waiting.svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let StageOwned::Ready { permit, waiting } =
                            stage.as_mut().project_replace(Stage::Over)
                        else {
                            unreachable!("matched above")
                        };
                        let Waiting {
                            mut svc, request, ..
                        } = *waiting;
                        Counts::add(&permit.shared().counts.admitted);
                        let future = svc.call(request);
                        stage.set(Stage::Running {
                            future,
                            permit,
                            started: queue::now(),
                        });
                    }
                    Poll::Ready(Err(err)) => {
                        stage.set(Stage::Over); // frees the place
                        return Poll::Ready(Err(err));
                    }
                    Poll::Pending => {
                        // Still waiting, now for the service: its context ending ends that
                        // wait too.
                        let Waiting { done, ctx, .. } = &mut **waiting;
                        let done = done.get_or_insert_with(|| ctx.done());
                        let Poll::Ready(err) = Pin::new(done).poll(cx) else {
                            return Poll::Pending;
                        };
                        let grpc = is_grpc(&waiting.request);
                        let StageOwned::Ready { permit, .. } =
                            stage.as_mut().project_replace(Stage::Over)
                        else {
                            unreachable!("matched above")
                        };
                        let reject = Reject::ended(err, true);
                        count(permit.shared(), reject);
                        drop(permit);
                        return Poll::Ready(Ok(reject.response(grpc)));
                    }
                },
                StageProj::Running { future, .. } => {
                    let output = std::task::ready!(future.poll(cx));
                    let StageOwned::Running {
                        permit, started, ..
                    } = stage.as_mut().project_replace(Stage::Over)
                    else {
                        unreachable!("matched above")
                    };
                    permit.finish(queue::now().saturating_duration_since(started));
                    return Poll::Ready(output.map(|r| r.map(AdmissionBody::inner)));
                }
                StageProj::Over => panic!("AdmissionFuture polled after completion"),
            }
        }
    }
}

impl<S, B> fmt::Debug for AdmissionFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Answered { .. } => "answered",
            Stage::Failed { .. } => "failed",
            Stage::Queued { .. } => "queued",
            Stage::Ready { .. } => "ready",
            Stage::Running { .. } => "running",
            Stage::Over => "over",
        };
        f.debug_struct("AdmissionFuture")
            .field("stage", &stage)
            .finish()
    }
}
