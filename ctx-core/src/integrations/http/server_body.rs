//! [`ContextBody`]: the response body of [`ContextLayer`](super::ContextLayer), which keeps the
//! request's context alive until the body ends.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame, SizeHint};

use super::BoxError;
use super::body::RacedBody;
use super::request::RequestScope;
use super::respond::log_cause;

enum State<B> {
    /// Polled as it is: the layer's own answer (no context), or a handler's body under
    /// [`finish_handlers`](super::ContextLayer::finish_handlers) (its context current).
    Plain(B),
    /// A handler's body, to be raced against the request's context from its first poll.
    Fresh(B),
    /// A handler's body, its frames raced against the request's context.
    Raced(RacedBody<B>),
    /// Ended: by its own end, an error, or the context.
    Over,
}

/// The response body of [`ContextLayer`](super::ContextLayer): the service's body, polled with
/// the request's context as [`Context::current`](crate::Context::current). The request's
/// context lives until this body ends, so a streamed body runs under it:
///
/// - at the body's end (or its error) the context ends, as completed;
/// - when the context ends first (its deadline, a shutdown), the body is dropped and this
///   one ends with an error, the context [`Error`](crate::Error) (boxed), never with a
///   clean end of stream: a client sees a cut response (HTTP/1: the connection closes
///   before the last chunk; HTTP/2: the stream is reset), not a short one that looks whole;
/// - dropped before its end (the client went away), it cancels the context with
///   [`ClientDisconnected`](super::ClientDisconnected) as the cause.
///
/// At the tower level, [`into_inner`](ContextBody::into_inner) gives the service's body back.
pub struct ContextBody<B> {
    state: State<B>,
    /// The request's context; `None` once it ended (or for the layer's own answers).
    scope: Option<RequestScope>,
    /// `is_end_stream` said `true`: a server drops such a body without polling it, and that
    /// drop ends the request as completed, not as a disconnect.
    said_end: AtomicBool,
}

impl<B> ContextBody<B> {
    /// The layer's own answer, or a body with nothing to wait for.
    pub(super) fn plain(body: B) -> ContextBody<B> {
        ContextBody {
            state: State::Plain(body),
            scope: None,
            said_end: AtomicBool::new(false),
        }
    }

    /// A handler's body, under `scope` until its end; its frames are raced against the
    /// context when `raced`.
    pub(super) fn new(body: B, scope: RequestScope, raced: bool) -> ContextBody<B> {
        let state = match raced {
            true => State::Fresh(body),
            false => State::Plain(body),
        };
        ContextBody {
            state,
            scope: Some(scope),
            said_end: AtomicBool::new(false),
        }
    }

    /// The service's body, if this one was never polled (`None` once it was: it may have
    /// been dropped by then); the request's context ends, as completed. For tower-level
    /// uses whose response type is not an [`http_body::Body`].
    pub fn into_inner(mut self) -> Option<B> {
        self.scope = None;
        match std::mem::replace(&mut self.state, State::Over) {
            State::Plain(body) | State::Fresh(body) => Some(body),
            State::Raced(_) | State::Over => None,
        }
    }

    /// The body is over: its context ends, as completed.
    fn finish(&mut self) {
        self.state = State::Over;
        self.scope = None;
    }
}

impl<B> Drop for ContextBody<B> {
    fn drop(&mut self) {
        // Dropped before its end: the client went away mid-body (unless the body had said
        // it was over, and the server dropped it for that).
        if let Some(scope) = self.scope.take()
            && !self.said_end.load(Ordering::Relaxed)
        {
            scope.disconnected();
        }
    }
}

impl<B> Body for ContextBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        if let State::Fresh(_) = this.state
            && let Some(scope) = &this.scope
            && let State::Fresh(body) = std::mem::replace(&mut this.state, State::Over)
        {
            this.state = State::Raced(RacedBody::new(scope.context().clone(), body));
        }
        let polled = match (&mut this.state, &this.scope) {
            (State::Over, _) => return Poll::Ready(None),
            (State::Plain(body), None) => return Pin::new(body).poll_frame(cx).map_err(Into::into),
            (State::Plain(body), Some(scope)) => Ok(std::task::ready!(
                scope.enter(|| Pin::new(body).poll_frame(cx))
            )),
            (State::Raced(raced), Some(scope)) => {
                std::task::ready!(scope.enter(|| raced.poll_frame(cx)))
            }
            (State::Raced(_) | State::Fresh(_), None) => {
                unreachable!("a raced body has its scope until its end")
            }
            (State::Fresh(_), Some(_)) => unreachable!("made raced above"),
        };
        match polled {
            Ok(Some(Ok(frame))) => {
                let ended = match &this.state {
                    State::Plain(body) | State::Fresh(body) => body.is_end_stream(),
                    State::Raced(raced) => raced.is_end_stream(),
                    State::Over => true,
                };
                if ended {
                    // The last frame: a server drops a body that says it has ended without
                    // polling it again, so the request ends here, completed.
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(Some(Err(err))) => {
                this.finish();
                Poll::Ready(Some(Err(err.into())))
            }
            Ok(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Err(err) => {
                // The context ended mid-body (`RacedBody` has dropped the body): an error,
                // so the client sees a cut response rather than a short one.
                if let Some(scope) = &this.scope {
                    log_cause(
                        "response body cut by its request's context",
                        scope.cause().as_ref(),
                    );
                }
                this.finish();
                Poll::Ready(Some(Err(Box::new(err))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let ended = match &self.state {
            State::Plain(body) | State::Fresh(body) => body.is_end_stream(),
            State::Raced(raced) => raced.is_end_stream(),
            State::Over => true,
        };
        if ended {
            self.said_end.store(true, Ordering::Relaxed);
        }
        ended
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Plain(body) | State::Fresh(body) => body.size_hint(),
            State::Raced(raced) => raced.size_hint(),
            State::Over => SizeHint::with_exact(0),
        }
    }
}

impl<B> fmt::Debug for ContextBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextBody")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
