//! The `tracing` integration: spans record a context's budget, and how and where it ended.
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctx_core::{Context, Error, trace};
use tracing_subscriber::fmt::format::FmtSpan;

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Runs `f` with a subscriber that prints each span's fields when it closes.
fn capture(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    out.text()
}

#[test]
fn a_span_records_the_budget_and_the_deadline_that_ended_it() {
    let mut line = 0;
    let text = capture(|| {
        line = line!() + 1;
        let request = Context::background().with_timeout(Duration::from_millis(30));
        let span = trace::span!(tracing::Level::INFO, "lookup", user = 7);
        let out = futures::executor::block_on(trace::traced(&request, span, async {
            request.run(std::future::pending::<()>()).await
        }));
        assert_eq!(out, Err(Error::DeadlineExceeded));
    });
    assert!(text.contains("lookup{"), "{text}");
    assert!(text.contains("user=7"), "{text}");
    let budget: u64 = text
        .split("ctx.budget_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no budget in {text}"));
    assert!((1..=30).contains(&budget), "{text}");
    assert!(
        text.contains("ctx.error=context deadline exceeded"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ctx.cause_at={}:{line}:", file!())),
        "the deadline's creation: {text}"
    );
}

#[test]
fn a_span_records_a_cancel_with_its_cause_and_place() {
    let mut line = 0;
    let text = capture(|| {
        let (ctx, handle) = Context::background().with_cancel().into_parts();
        let span = trace::span!(tracing::Level::INFO, "handler");
        let traced = trace::traced(&ctx, span, ctx.run(std::future::pending::<()>()));
        line = line!() + 1;
        handle.cancel_with("client went away");
        assert_eq!(futures::executor::block_on(traced), Err(Error::Cancelled));
    });
    assert!(text.contains("ctx.error=context cancelled"), "{text}");
    assert!(text.contains("ctx.cause=client went away"), "{text}");
    assert!(
        text.contains(&format!("ctx.cause_at={}:{line}:", file!())),
        "{text}"
    );
    assert!(
        !text.contains("ctx.budget_ms"),
        "no deadline, no budget: {text}"
    );
}

#[test]
fn a_span_of_work_that_finished_in_time_records_no_end() {
    let text = capture(|| {
        let ctx = Context::background().with_timeout(Duration::from_secs(60));
        let span = trace::span!(tracing::Level::INFO, "quick");
        assert_eq!(
            futures::executor::block_on(trace::traced(&ctx, span, async { 5 })),
            5
        );
    });
    assert!(text.contains("quick{"), "{text}");
    assert!(text.contains("ctx.budget_ms="), "{text}");
    assert!(!text.contains("ctx.error"), "{text}");
}

#[test]
fn a_dropped_traced_future_records_the_end_it_saw() {
    let text = capture(|| {
        let scope = Context::background().with_cancel();
        let span = trace::span!(tracing::Level::INFO, "abandoned");
        let traced = trace::traced(&scope, span, std::future::pending::<()>());
        scope.cancel_with("gave up");
        drop(traced);
    });
    assert!(text.contains("ctx.cause=gave up"), "{text}");
}

/// `#[cancellable(trace)]`: the function's own span, with its child's budget and end.
#[cfg(feature = "macros")]
mod cancellable {
    use super::*;

    #[ctx_core::cancellable(trace, timeout = "20ms")]
    async fn slow_lookup(ctx: &Context, id: u32) -> Result<u32, Error> {
        ctx.run(std::future::pending::<()>()).await?;
        Ok(id)
    }

    #[ctx_core::cancellable(trace)]
    fn sum(ctx: &Context, items: &[u64]) -> Result<u64, Error> {
        let mut total = 0;
        for item in items {
            total += item;
        }
        Ok(total)
    }

    #[test]
    fn an_async_fn_opts_into_its_span() {
        let text = capture(|| {
            let out = futures::executor::block_on(slow_lookup(&Context::background(), 7));
            assert_eq!(out, Err(Error::DeadlineExceeded));
        });
        assert!(text.contains("slow_lookup{"), "{text}");
        assert!(text.contains("ctx.budget_ms="), "{text}");
        assert!(
            text.contains("ctx.error=context deadline exceeded"),
            "{text}"
        );
    }

    #[test]
    fn a_sync_fn_opts_into_its_span() {
        let text = capture(|| {
            let parent = Context::background().with_timeout(Duration::from_secs(60));
            assert_eq!(sum(&parent, &[1, 2, 3]), Ok(6));
        });
        assert!(text.contains("sum{"), "{text}");
        assert!(text.contains("ctx.budget_ms="), "{text}");
        // The span closes as the body returns, before the child's scope is dropped: a normal
        // return records no error.
        assert!(!text.contains("ctx.error=context deadline"), "{text}");
    }
}
