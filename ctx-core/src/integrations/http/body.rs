//! A body raced against a context frame by frame, through [`Run`]: the one future that races
//! work against a context, here racing "the next frame". When the context ends while a
//! frame is awaited, `Run` drops the body (for a connection's body, that resets or closes
//! it) and the racer reports the context's [`Error`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame};

use crate::{Context, Error, Run};

/// The next frame of a body, as a future that hands the body back with it.
pub(crate) struct NextFrame<B>(Option<B>);

impl<B: Body + Unpin> Future for NextFrame<B> {
    type Output = (B, Option<Result<Frame<B::Data>, B::Error>>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let body = self.0.as_mut().expect("NextFrame polled after completion");
        let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
        Poll::Ready((self.0.take().expect("checked above"), frame))
    }
}

enum State<B> {
    /// Between frames.
    Idle(B),
    /// A frame awaited, raced against the context.
    Waiting(Run<'static, NextFrame<B>>),
    /// Ended: by its own end, or by the context (the body was dropped).
    Over,
}

/// A frame of `B`, or its error.
pub(crate) type FrameResult<B> = Result<Frame<<B as Body>::Data>, <B as Body>::Error>;

/// A body whose frames are raced against `ctx`.
pub(crate) struct RacedBody<B> {
    ctx: Context,
    state: State<B>,
}

impl<B: Body + Unpin> RacedBody<B> {
    pub(crate) fn new(ctx: Context, body: B) -> RacedBody<B> {
        RacedBody {
            ctx,
            state: State::Idle(body),
        }
    }

    /// The next frame (`Ok(None)` at the end), or the context's error once it ended first.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<Option<FrameResult<B>>, Error>> {
        if let State::Idle(body) = &mut self.state {
            // A frame that is ready needs no race: the context only decides while waiting
            // (and a context already done ends the body before anything is polled).
            if let Some(err) = self.ctx.err() {
                self.state = State::Over;
                return Poll::Ready(Err(err));
            }
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(None) => {
                    self.state = State::Over;
                    return Poll::Ready(Ok(None));
                }
                Poll::Ready(Some(frame)) => return Poll::Ready(Ok(Some(frame))),
                Poll::Pending => {}
            }
            // Waiting: from now on the frame is raced against the context (`Run` polls the
            // body again, which keeps its waker registered).
            let State::Idle(body) = std::mem::replace(&mut self.state, State::Over) else {
                unreachable!("matched above");
            };
            self.state = State::Waiting(self.ctx.clone().into_run(NextFrame(Some(body))));
        }
        let State::Waiting(run) = &mut self.state else {
            return Poll::Ready(Ok(None));
        };
        // `Run<NextFrame<B>>` is `Unpin` because `B` is.
        match std::task::ready!(Pin::new(run).poll(cx)) {
            Ok((body, None)) => {
                drop(body);
                self.state = State::Over;
                Poll::Ready(Ok(None))
            }
            Ok((body, Some(frame))) => {
                self.state = State::Idle(body);
                Poll::Ready(Ok(Some(frame)))
            }
            Err(err) => {
                self.state = State::Over; // `Run` has dropped the body
                Poll::Ready(Err(err))
            }
        }
    }

    /// Whether no frame can come any more.
    pub(crate) fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Idle(body) => body.is_end_stream(),
            State::Waiting(_) => false,
            State::Over => true,
        }
    }

    /// The body's size hint while it has one.
    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match &self.state {
            State::Idle(body) => body.size_hint(),
            _ => http_body::SizeHint::default(),
        }
    }
}

#[cfg(feature = "tonic")]
impl<B> RacedBody<B> {
    /// Drops the body now.
    pub(crate) fn end(&mut self) {
        self.state = State::Over;
    }

    /// The context the frames are raced against.
    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }
}
