//! `with_value`: request-scoped data that travels with the request.
//!
//! Middleware knows who is calling and which request this is; the code that logs, audits
//! or bills is many calls away. Putting the request id and the caller in the context gets
//! them there without adding a parameter to every function in between, and they follow the
//! request into derived contexts and onto other threads. Keys are types, so two libraries
//! that both store an "id" cannot clobber each other, and reading a value needs no cast.
//! Values are for request-scoped facts, not for optional function parameters.

use std::thread;
use std::time::Duration;

use ctx_core::{Context, ContextKey};

/// Set by the edge for every request; read by the logger.
struct RequestId(u64);

impl ContextKey for RequestId {
    const NAME: &'static str = "RequestId";
}

mod auth {
    /// The authenticated caller, set by the auth middleware.
    pub struct Id(pub u64);

    impl ctx_core::ContextKey for Id {
        const NAME: &'static str = "auth::Id";
    }
}

mod billing {
    /// The account to bill: another library's "id", a different key.
    pub struct Id(pub u64);

    impl ctx_core::ContextKey for Id {
        const NAME: &'static str = "billing::Id";
    }
}

/// Deep in the call tree: finds the request id without being handed it.
fn log(ctx: &Context, message: &str) {
    let id = ctx.value::<RequestId>().map_or(0, |id| id.0);
    println!("[req {id}] {message}");
}

fn charge(ctx: &Context, cents: u64) -> u64 {
    let account = ctx
        .value::<billing::Id>()
        .expect("billing middleware ran")
        .0;
    log(ctx, &format!("charging account {account}: {cents} cents"));
    account
}

fn handler(ctx: &Context) -> u64 {
    let caller = ctx.value::<auth::Id>().map(|id| id.0);
    log(ctx, &format!("handling for caller {caller:?}"));
    // A derived context (here with a timeout) keeps the values...
    let call = ctx.with_timeout(Duration::from_secs(1));
    // ...and so does a clone sent to another thread.
    let ctx = call.context().clone();
    thread::spawn(move || charge(&ctx, 250)).join().unwrap()
}

fn main() {
    // The middleware chain, outermost first.
    let request = Context::background()
        .with_value(RequestId(1001))
        .with_value(auth::Id(7))
        .with_value(billing::Id(42));
    println!("request context: {request}");

    // Both "Id"s are there: the keys are different types.
    assert_eq!(request.value::<auth::Id>().map(|id| id.0), Some(7));
    assert_eq!(request.value::<billing::Id>().map(|id| id.0), Some(42));
    assert_eq!(handler(&request), 42);

    // Innermost first: a retry gets its own request id, the caller is unchanged.
    let retry = request.with_value(RequestId(1002));
    log(&retry, "retrying");
    assert_eq!(retry.value::<RequestId>().map(|id| id.0), Some(1002));
    assert_eq!(request.value::<RequestId>().map(|id| id.0), Some(1001));

    // Outside any request there is simply no value.
    log(&Context::background(), "background work has no request id");
    assert!(Context::background().value::<RequestId>().is_none());
}
