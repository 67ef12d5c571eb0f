//! `Cause::location`: where a context was ended, so "context deadline exceeded" says where.

use std::time::Duration;

use ctx_core::{Context, Error};

const PROMPTLY: Duration = Duration::from_secs(10);

/// The file and line of a location, for comparing with `file!()`/`line!()`.
fn at(ctx: &Context) -> (&'static str, u32) {
    let cause = ctx.cause().expect("done");
    let location = cause.location().expect("a context's cause has a location");
    (location.file(), location.line())
}

#[test]
fn cancel_and_cancel_with_record_their_call() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    let line = line!() + 1;
    scope.cancel();
    assert_eq!(at(&ctx), (file!(), line));

    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    let line = line!() + 1;
    scope.cancel_with("client went away");
    assert_eq!(at(&ctx), (file!(), line));

    let (ctx, handle) = Context::background().with_cancel().into_parts();
    let line = line!() + 1;
    handle.cancel_with("shutting down");
    assert_eq!(at(&ctx), (file!(), line));

    let (ctx, handle) = Context::background().with_cancel().into_parts();
    let line = line!() + 1;
    handle.cancel();
    assert_eq!(at(&ctx), (file!(), line));
}

#[test]
fn a_dropped_scope_records_where_it_was_created() {
    let line = line!() + 1;
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    drop(scope);
    assert_eq!(at(&ctx), (file!(), line));

    let minute = Duration::from_secs(60);
    let line = line!() + 1;
    let (ctx, handle) = Context::background().with_timeout(minute).into_parts();
    drop(handle);
    assert_eq!(at(&ctx), (file!(), line));
}

#[test]
fn a_fired_deadline_records_where_it_was_set() {
    let line = line!() + 1;
    let scope = Context::background().with_timeout(Duration::from_millis(5));
    assert_eq!(scope.wait_timeout(PROMPTLY), Some(Error::DeadlineExceeded));
    assert_eq!(at(&scope), (file!(), line));

    let line = line!() + 1;
    let past = Context::background().with_deadline_cause(std::time::Instant::now(), "too late");
    assert_eq!(at(&past), (file!(), line));
    assert_eq!(past.cause().unwrap().to_string(), "too late");
}

#[test]
fn descendants_report_the_location_of_the_cancel_that_ended_them() {
    let root = Context::background().with_cancel();
    let child = root.with_cancel();
    let grandchild = child.with_value(Tag).with_cancel();
    let line = line!() + 1;
    root.cancel_with("root gone");
    assert_eq!(at(&child), (file!(), line));
    assert_eq!(at(&grandchild), (file!(), line));
    // Born after the cancel: the same cause, the same location.
    let born = child.with_cancel();
    assert_eq!(at(&born), (file!(), line));
    // A later cancel of the child changes nothing: the first cancel wins.
    child.cancel();
    assert_eq!(at(&grandchild), (file!(), line));
}

struct Tag;
impl ctx_core::ContextKey for Tag {
    const NAME: &'static str = "Tag";
}

#[test]
fn the_alternate_display_adds_the_location() {
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let cause = ctx.cause().unwrap();
    let location = cause.location().unwrap();
    assert_eq!(cause.to_string(), "context cancelled");
    assert_eq!(
        format!("{cause:#}"),
        format!(
            "context cancelled (at {}:{}:{})",
            location.file(),
            location.line(),
            location.column()
        )
    );
    // A cause not reported by a context has no location, and prints the same either way.
    let bare = ctx_core::Cause::from("bare");
    assert_eq!(bare.location(), None);
    assert_eq!(format!("{bare:#}"), "bare");
    // Live contexts have no cause at all.
    assert!(Context::background().with_cancel().cause().is_none());
}

/// A `#[cancellable]` function's deadline reports the function, not the macro's internals.
#[cfg(feature = "macros")]
#[test]
fn a_cancellable_functions_deadline_points_at_the_function() {
    #[ctx_core::cancellable(timeout = "5ms", checkpoints = "none")]
    fn spin(ctx: &Context) -> Result<ctx_core::Cause, Error> {
        loop {
            std::hint::spin_loop();
            if ctx.is_cancelled() {
                return Ok(ctx.cause().unwrap());
            }
        }
    }
    let cause = spin(&Context::background()).unwrap();
    assert_eq!(cause.location().unwrap().file(), file!(), "{cause:#}");
}
