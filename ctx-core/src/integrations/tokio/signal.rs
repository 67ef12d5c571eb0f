//! Contexts cancelled by a Unix signal: Go's `signal.NotifyContext`.

use std::fmt;

use tokio::signal::unix::{SignalKind, signal};

use crate::{CancelScope, Cause, Context};

/// The cause of a context cancelled by [`notify`]: which signal arrived.
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

/// A child of `parent` that is cancelled, with [`SignalReceived`] as its cause, when the
/// process receives one of `signals` (SIGINT and SIGTERM when `signals` is empty). Dropping
/// or cancelling the returned scope stops listening. Go's `signal.NotifyContext`.
///
/// Must be called within a tokio runtime. Fails if a handler cannot be installed (e.g. for
/// SIGKILL, which cannot be caught).
///
/// ```no_run
/// use ctx_core::{Context, signal};
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let shutdown = signal::notify(&Context::background(), &[])?;
/// let err = shutdown.done().await;
/// println!("stopping: {err} ({})", shutdown.cause().unwrap());
/// # Ok(()) }
/// ```
pub fn notify(parent: impl AsRef<Context>, signals: &[SignalKind]) -> std::io::Result<CancelScope> {
    let defaults = [SignalKind::interrupt(), SignalKind::terminate()];
    let signals = if signals.is_empty() {
        &defaults[..]
    } else {
        signals
    };
    let mut streams = Vec::with_capacity(signals.len());
    for &kind in signals {
        streams.push((kind, signal(kind)?));
    }
    // The listener owns the canceller of `signalled`; the caller gets a child of it, so the
    // caller's cancel (or drop) ends the caller's context, and a signal ends both.
    let (signalled, on_signal) = parent.as_ref().with_cancel().into_parts();
    let scope = signalled.with_cancel();
    let ctx = scope.context().clone();
    tokio::spawn(async move {
        let arrived = std::future::poll_fn(|cx| {
            for (kind, stream) in &mut streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*kind);
                }
            }
            std::task::Poll::Pending
        });
        // Stop listening as soon as the context ends for any other reason.
        if let Ok(kind) = ctx.run(arrived).await {
            on_signal.cancel_with(Cause::from_error(SignalReceived(kind)));
        }
    });
    Ok(scope)
}
