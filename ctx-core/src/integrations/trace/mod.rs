//! Spans that say how much time a context had and why it ended (feature `tracing`).
//!
//! "context deadline exceeded" in a log is only useful with *where* the budget went. A span
//! made with [`span!`](crate::trace::span) declares five fields, and [`traced`] fills them
//! in for a context:
//!
//! | field | recorded | value |
//! | --- | --- | --- |
//! | `ctx.budget_ms` | at entry | milliseconds left before the deadline (absent without one) |
//! | `ctx.deadline` | at entry | the same, as a duration (`1.5s`) |
//! | `ctx.error` | at the end, if the context ended | `context cancelled` / `context deadline exceeded` |
//! | `ctx.cause` | likewise | the [`Cause`](crate::Cause)'s text |
//! | `ctx.cause_at` | likewise | where it ended: the cancel call, the dropped scope, the deadline ([`Cause::location`](crate::Cause::location)) |
//!
//! ```
//! use std::time::Duration;
//! use ctx_core::{Context, trace};
//!
//! # futures::executor::block_on(async {
//! let request = Context::background().with_timeout(Duration::from_millis(20));
//! let span = trace::span!(tracing::Level::INFO, "lookup", user = 7);
//! let out = trace::traced(&request, span, async {
//!     request.run(std::future::pending::<()>()).await
//! })
//! .await;
//! assert_eq!(out, Err(ctx_core::Error::DeadlineExceeded));
//! // With a subscriber installed, the span closes with
//! // ctx.budget_ms=20 ctx.error="context deadline exceeded" ctx.cause_at="src/main.rs:5:35"
//! # });
//! ```
//!
//! The fields are recorded through the public API (`deadline`, `err`, `cause`); formatting
//! the cause runs its `Display` here, in the caller's task, never inside the tree.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tracing::Span;

use crate::Context;

/// A [`tracing::span!`] with the fields [`traced`] records declared (see the
/// [module docs](self)); takes a level, a name and any further fields, as `span!` does.
#[macro_export]
#[doc(hidden)]
macro_rules! __ctx_trace_span {
    // `#[cancellable(trace)]` on an async fn: the body's future, traced.
    (@async $ctx:expr, $name:literal, $future:expr) => {{
        let ctx: $crate::Context = $ctx;
        let span = $crate::__ctx_trace_span!($crate::__private::tracing::Level::INFO, $name);
        $crate::trace::traced(&ctx, span, $future)
    }};
    // `#[cancellable(trace)]` on a sync fn: a guard for the body.
    (@sync $ctx:expr, $name:literal) => {
        $crate::trace::Entered::enter(
            $ctx,
            $crate::__ctx_trace_span!($crate::__private::tracing::Level::INFO, $name),
        )
    };
    ($level:expr, $name:expr $(, $($fields:tt)*)?) => {
        $crate::__private::tracing::span!(
            $level,
            $name,
            ctx.budget_ms = $crate::__private::tracing::field::Empty,
            ctx.deadline = $crate::__private::tracing::field::Empty,
            ctx.error = $crate::__private::tracing::field::Empty,
            ctx.cause = $crate::__private::tracing::field::Empty,
            ctx.cause_at = $crate::__private::tracing::field::Empty
            $(, $($fields)*)?
        )
    };
}

#[doc(inline)]
pub use crate::__ctx_trace_span as span;

/// Records `ctx`'s budget on `span`: `ctx.budget_ms` and `ctx.deadline`, if it has one.
pub fn record_entry(span: &Span, ctx: &Context) {
    if let Some(deadline) = ctx.deadline() {
        let left = deadline.saturating_duration_since(Context::now());
        span.record("ctx.budget_ms", left.as_millis() as u64);
        span.record("ctx.deadline", tracing::field::debug(left));
    }
}

/// Records how `ctx` ended on `span` (`ctx.error`, `ctx.cause`, `ctx.cause_at`), if it did.
pub fn record_end(span: &Span, ctx: &Context) {
    let Some(err) = ctx.err() else { return };
    span.record("ctx.error", tracing::field::display(err));
    if let Some(cause) = ctx.cause() {
        span.record("ctx.cause", tracing::field::display(&cause));
        if let Some(at) = cause.location() {
            span.record("ctx.cause_at", tracing::field::display(at));
        }
    }
}

/// `span`, entered for `ctx` until dropped: records the budget now and the end when dropped
/// (what `#[cancellable(trace)]` puts around a sync body).
#[must_use = "the span is exited, and the end recorded, when this is dropped"]
pub struct Entered {
    ctx: Context,
    span: tracing::span::EnteredSpan,
}

impl Entered {
    /// Enters `span` for `ctx`, recording its budget.
    pub fn enter(ctx: &Context, span: Span) -> Entered {
        record_entry(&span, ctx);
        Entered {
            ctx: ctx.clone(),
            span: span.entered(),
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        record_end(&self.span, &self.ctx);
    }
}

impl fmt::Debug for Entered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entered")
            .field("span", &self.span)
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// Runs `future` inside `span` (entered on every poll), with `ctx`'s budget recorded now
/// and, when the future completes or is dropped, how `ctx` ended if it did.
pub fn traced<F: Future>(ctx: &Context, span: Span, future: F) -> Traced<F> {
    record_entry(&span, ctx);
    Traced {
        future,
        span,
        ctx: ctx.clone(),
        ended: false,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`traced`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Traced<F> {
        #[pin]
        future: F,
        span: Span,
        ctx: Context,
        ended: bool,
    }

    impl<F> PinnedDrop for Traced<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.ended {
                record_end(this.span, this.ctx);
            }
        }
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = {
            let _entered = this.span.enter();
            std::task::ready!(this.future.poll(cx))
        };
        *this.ended = true;
        record_end(this.span, this.ctx);
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for Traced<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced")
            .field("span", &self.span)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}
