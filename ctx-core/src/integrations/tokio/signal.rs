//! Contexts ended by Unix signals: Go's `signal.NotifyContext` ([`notify`]), and a server's
//! graceful shutdown, Go's `http.Server.Shutdown` with a grace period ([`graceful`],
//! [`Shutdown`]).
//!
//! | Go | ctx |
//! | --- | --- |
//! | `signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)` | [`notify`]`(&ctx, DEFAULT_SIGNALS)` |
//! | `<-sig; sctx, _ := context.WithTimeout(bg, grace); srv.Shutdown(sctx)` | [`graceful`]`(&ctx, grace)`: [`Shutdown::requested`] for the server, [`Shutdown::context`] for its requests |

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::task::Poll;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::{CancelHandle, CancelScope, Cause, Context};

/// The signals [`notify`] and [`graceful`] listen for unless told otherwise: SIGINT (Ctrl-C)
/// and SIGTERM (what `kill`, systemd, Docker and Kubernetes send to stop a process).
pub const DEFAULT_SIGNALS: &[SignalKind] = &[SignalKind::interrupt(), SignalKind::terminate()];

/// The cause of a context cancelled by [`notify`] (or a shutdown requested by [`graceful`]):
/// which signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalReceived(pub SignalKind);

impl SignalReceived {
    /// The signal's conventional name (`"SIGINT"`), or its number.
    pub fn name(&self) -> String {
        let raw = self.0.as_raw_value();
        match raw {
            libc::SIGINT => "SIGINT".into(),
            libc::SIGTERM => "SIGTERM".into(),
            libc::SIGHUP => "SIGHUP".into(),
            libc::SIGQUIT => "SIGQUIT".into(),
            libc::SIGUSR1 => "SIGUSR1".into(),
            libc::SIGUSR2 => "SIGUSR2".into(),
            other => format!("signal {other}"),
        }
    }
}

impl fmt::Display for SignalReceived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "received {}", self.name())
    }
}

impl std::error::Error for SignalReceived {}

/// Handlers installed for a set of signals; yields each signal that arrives.
struct Signals(Vec<(SignalKind, Signal)>);

impl Signals {
    /// Installs a handler for each of `kinds`. Fails if one cannot be installed (SIGKILL).
    fn listen(kinds: &[SignalKind]) -> std::io::Result<Signals> {
        let streams = kinds
            .iter()
            .map(|&kind| Ok((kind, signal(kind)?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Signals(streams))
    }

    /// The next signal to arrive (never, for an empty set).
    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<SignalKind> {
        for (kind, stream) in &mut self.0 {
            if stream.poll_recv(cx).is_ready() {
                return Poll::Ready(*kind);
            }
        }
        Poll::Pending
    }
}

/// A child of `parent` that is cancelled, with [`SignalReceived`] as its cause, when the
/// process receives one of `signals`; pass [`DEFAULT_SIGNALS`] for SIGINT and SIGTERM (an
/// empty slice means the same, as it did before `DEFAULT_SIGNALS` had a name). Dropping or
/// cancelling the returned scope stops listening. Go's `signal.NotifyContext`.
///
/// Must be called within a tokio runtime. Fails if a handler cannot be installed (e.g. for
/// SIGKILL, which cannot be caught).
///
/// A server that should let its requests finish first wants [`graceful`] instead: `notify`'s
/// context, as the root of every request, cancels them all at the first signal.
///
/// ```no_run
/// use ctx_core::{Context, signal};
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let shutdown = signal::notify(&Context::background(), signal::DEFAULT_SIGNALS)?;
/// let err = shutdown.done().await;
/// println!("stopping: {err} ({})", shutdown.cause().unwrap());
/// # Ok(()) }
/// ```
#[track_caller] // a signal's cause names the caller's line (`Cause::location`)
pub fn notify(parent: impl AsRef<Context>, signals: &[SignalKind]) -> std::io::Result<CancelScope> {
    let at = Location::caller();
    let signals = if signals.is_empty() {
        DEFAULT_SIGNALS
    } else {
        signals
    };
    let mut signals = Signals::listen(signals)?;
    // The listener owns the canceller of `signalled`; the caller gets a child of it, so the
    // caller's cancel (or drop) ends the caller's context, and a signal ends both.
    let (signalled, on_signal) = parent.as_ref().with_cancel_at(at).into_parts();
    let scope = signalled.with_cancel_at(at);
    let ctx = scope.context().clone();
    tokio::spawn(async move {
        let arrived = std::future::poll_fn(|cx| signals.poll_next(cx));
        // Stop listening as soon as the context ends for any other reason.
        if let Ok(kind) = ctx.run(arrived).await {
            on_signal.cancel_with_at(Cause::from_error(SignalReceived(kind)), at);
        }
    });
    Ok(scope)
}

/// A server's graceful shutdown on SIGINT or SIGTERM ([`DEFAULT_SIGNALS`]), with `grace` for
/// the requests in flight: [`Shutdown::on_signals`] with the default set. Must be called
/// within a tokio runtime; fails if a handler cannot be installed.
///
/// At the first signal, [`Shutdown::requested`] resolves (give it to the server, which stops
/// accepting and waits for its connections), and the requests in flight have `grace` to
/// finish; then [`Shutdown::context`], the root of every request, is cancelled with
/// [`GracePeriodEnded`] as its cause. A second signal cancels it at once, with that
/// [`SignalReceived`] as its cause. Go's `http.Server.Shutdown` with a timeout.
///
/// # Examples
///
/// With axum:
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use ctx_core::{Context, http::ContextLayer, signal};
///
/// let shutdown = signal::graceful(&Context::background(), Duration::from_secs(10))?;
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(ContextLayer::new(shutdown.context()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(shutdown.requested())
///     .await?;
/// # Ok(()) }
/// # #[cfg(not(feature = "axum"))] fn main() {}
/// ```
///
/// With tonic: `Server::builder().layer(grpc::ServerLayer::new(shutdown.context()))
/// ...serve_with_shutdown(addr, shutdown.requested())`.
#[track_caller] // the shutdown's causes name the caller's line (`Cause::location`)
pub fn graceful(parent: impl AsRef<Context>, grace: Duration) -> std::io::Result<Shutdown> {
    Shutdown::on_signals(parent, DEFAULT_SIGNALS, grace)
}

/// A server's graceful shutdown: stop accepting, let the requests in flight finish within a
/// grace period, then cancel the rest with a cause; a second request cancels at once.
///
/// Made by [`graceful`] (on SIGINT and SIGTERM), [`Shutdown::on_signals`], or
/// [`Shutdown::new`] (requested only by [`Shutdown::request`], e.g. from an admin endpoint or
/// a test). Cheap to clone; every clone is the same shutdown.
///
/// - [`context`](Shutdown::context): the root for the server's requests
///   (`ContextLayer::new(shutdown.context())`, `grpc::ServerLayer::new(..)`). Cancelled when
///   the grace period ends ([`GracePeriodEnded`]), at a second request (its cause), or when
///   `parent` ends.
/// - [`requested`](Shutdown::requested): a future that resolves at the first request, for
///   axum's `with_graceful_shutdown` or tonic's `serve_with_shutdown`: the server stops
///   accepting and waits for the connections it has.
/// - [`reason`](Shutdown::reason): the first request's cause (`received SIGTERM`).
///
/// Keep a handle until the server has returned: once every handle is dropped, the root is
/// cancelled at once and no signal is listened for any more, as dropping a [`CancelScope`]
/// cancels its context. The grace timer and the signal listener run in one tokio task, which
/// ends with the shutdown.
///
/// # Examples
///
/// Requested by hand (a grace period of zero would cancel the requests in flight at once):
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, signal::{GracePeriodEnded, Shutdown}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let shutdown = Shutdown::new(&Context::background(), Duration::from_millis(10));
/// let request = shutdown.context().with_cancel(); // a request in flight
/// shutdown.request("deploying");
/// shutdown.requested().await; // the server stops accepting here
/// assert_eq!(shutdown.reason().unwrap().to_string(), "deploying");
/// request.done().await; // the grace period ended
/// assert!(request.cause().unwrap().is::<GracePeriodEnded>());
/// # }
/// ```
#[derive(Clone)]
pub struct Shutdown {
    /// The root of the requests: cancelled at the end of the grace period.
    root: Context,
    /// Cancelled at the first request: what the server waits on to stop accepting.
    draining: Context,
    /// To the task that owns both cancellers (see [`Shutdown::drive`]).
    requests: mpsc::UnboundedSender<Request>,
    grace: Duration,
}

/// A request to shut down: its cause, and the user's line it came from (the `request` call;
/// for a signal, the line that made the shutdown).
struct Request {
    cause: Cause,
    at: &'static Location<'static>,
}

impl Shutdown {
    /// A shutdown requested by [`request`](Shutdown::request) only (no signal): the first
    /// request starts the grace period, a second cancels at once.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the grace timer is a task), as `tokio::spawn` does.
    #[track_caller]
    pub fn new(parent: impl AsRef<Context>, grace: Duration) -> Shutdown {
        Shutdown::start(
            parent.as_ref(),
            Signals(Vec::new()),
            grace,
            Location::caller(),
        )
    }

    /// Like [`graceful`], on `signals`; each signal that arrives is a
    /// [`request`](Shutdown::request) whose cause is [`SignalReceived`]. Fails if a handler
    /// cannot be installed (SIGKILL, SIGSTOP).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    #[track_caller]
    pub fn on_signals(
        parent: impl AsRef<Context>,
        signals: &[SignalKind],
        grace: Duration,
    ) -> std::io::Result<Shutdown> {
        let at = Location::caller();
        let signals = Signals::listen(signals)?;
        Ok(Shutdown::start(parent.as_ref(), signals, grace, at))
    }

    /// `at`: the user's line that made the shutdown, where a signal and the grace period's
    /// end are reported to have ended its contexts.
    fn start(
        parent: &Context,
        signals: Signals,
        grace: Duration,
        at: &'static Location<'static>,
    ) -> Shutdown {
        let (root, on_grace_end) = parent.with_cancel_at(at).into_parts();
        let (draining, on_request) = parent.with_cancel_at(at).into_parts();
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(Shutdown::drive(
            received,
            signals,
            root.clone(),
            on_request,
            on_grace_end,
            grace,
            at,
        ));
        Shutdown {
            root,
            draining,
            requests,
            grace,
        }
    }

    /// The task behind a shutdown: waits for the first request (a call to `request` or a
    /// signal), ends `draining` with its cause, then ends `root` when the grace period is
    /// over or at the next request, whichever is first. It owns both cancellers, so once it
    /// returns both contexts are done: when every `Shutdown` is dropped (`requests` closes)
    /// it returns at once, and so cancels at once.
    async fn drive(
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut signals: Signals,
        root: Context,
        on_request: CancelHandle,
        on_grace_end: CancelHandle,
        grace: Duration,
        at: &'static Location<'static>,
    ) {
        // Until the first request, or the root ends with its parent.
        let first = root
            .run(Shutdown::next(&mut requests, &mut signals, at))
            .await;
        let Ok(Some(first)) = first else {
            return;
        };
        on_request.cancel_with_at(first.cause.clone(), first.at);
        tokio::select! {
            second = Shutdown::next(&mut requests, &mut signals, at) => match second {
                Some(second) => on_grace_end.cancel_with_at(second.cause, second.at),
                None => drop(on_grace_end),
            },
            () = tokio::time::sleep(grace) => on_grace_end.cancel_with_at(
                Cause::from_error(GracePeriodEnded { grace, requested_by: first.cause }),
                at,
            ),
            _ = root.done() => {}
        }
    }

    /// The next request, a call to `request` or a signal: `None` once every handle is
    /// dropped.
    async fn next(
        requests: &mut mpsc::UnboundedReceiver<Request>,
        signals: &mut Signals,
        at: &'static Location<'static>,
    ) -> Option<Request> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(kind) = signals.poll_next(cx) {
                let cause = Cause::from_error(SignalReceived(kind));
                return Poll::Ready(Some(Request { cause, at }));
            }
            requests.poll_recv(cx)
        })
        .await
    }

    /// The root for the server's requests: cancelled when the grace period ends, at a second
    /// request, or when the parent ends.
    pub fn context(&self) -> &Context {
        &self.root
    }

    /// Requests the shutdown, with `cause` (reported by [`reason`](Shutdown::reason)): the
    /// first request resolves [`requested`](Shutdown::requested) and starts the grace period;
    /// a later one cancels [`context`](Shutdown::context) at once, with its `cause`. A
    /// signal, for [`graceful`], is such a request.
    ///
    /// The call is what [`Cause::location`] reports for the contexts it ends.
    #[track_caller]
    pub fn request(&self, cause: impl Into<Cause>) {
        let request = Request {
            cause: cause.into(),
            at: Location::caller(),
        };
        // Fails only when the task has returned, the root then being done already.
        let _ = self.requests.send(request);
    }

    /// Resolves at the first request (or when the parent ends): the server should stop
    /// accepting and wait for the requests it has. Give it to axum's
    /// `with_graceful_shutdown` or tonic's `serve_with_shutdown`.
    ///
    /// # Cancellation safety
    ///
    /// Dropping it has no effect: call `requested` again for another.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let done = self.draining.done();
        async move {
            done.await;
        }
    }

    /// Whether shutdown was requested (or the parent ended).
    pub fn is_requested(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// The first request's cause (`received SIGTERM`), once shutdown was requested; the
    /// parent's, if the parent ended first.
    pub fn reason(&self) -> Option<Cause> {
        self.draining.cause()
    }

    /// The grace period the requests in flight have once shutdown is requested.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("grace", &self.grace)
            .field("reason", &self.reason())
            .field("root", &self.root)
            .finish()
    }
}

/// The cause of a [`Shutdown`]'s context cancelled because its grace period ended with
/// requests still in flight. Its `source` is the request that began the shutdown.
#[derive(Clone, Debug)]
pub struct GracePeriodEnded {
    /// The grace period.
    pub grace: Duration,
    /// What requested the shutdown (`received SIGTERM`).
    pub requested_by: Cause,
}

impl fmt::Display for GracePeriodEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shutdown grace period of {:?} ended (shutdown requested: {})",
            self.grace, self.requested_by
        )
    }
}

impl std::error::Error for GracePeriodEnded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.requested_by.as_error())
    }
}
