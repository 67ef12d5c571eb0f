//! Go's `ExampleAfterFunc_merge`: one context cancelled by either of two.
//!
//! Work sometimes answers to two masters: a request's context (its values, its deadline)
//! and a server-wide one (shutdown), or a session's. `merge_cancel` keeps the values of the
//! first and ends when either ends, reporting the cause of whichever ended it. `after_func`
//! links the second in without a thread waiting on it, and the merged scope cancels and
//! unlinks itself when dropped, so nothing stays registered on a long-lived context.

use std::ops::Deref;

use ctx_core::{AfterFunc, CancelScope, Context, ContextKey};

struct RequestId(u64);

impl ContextKey for RequestId {
    const NAME: &'static str = "RequestId";
}

/// A context with the values of `ctx`, cancelled when `ctx` or `cancel_ctx` ends (or when
/// this is dropped).
struct Merged {
    scope: CancelScope,
    link: AfterFunc,
}

fn merge_cancel(ctx: &Context, cancel_ctx: &Context) -> Merged {
    // `relay` is cancelled, with `cancel_ctx`'s cause, by the after-func; `scope` under it
    // is ours to cancel.
    let (relay, cancel_relay) = ctx.with_cancel().into_parts();
    let source = cancel_ctx.clone();
    let link = cancel_ctx.after_func(move || {
        cancel_relay.cancel_with(source.cause().expect("done contexts have a cause"));
    });
    Merged {
        scope: relay.with_cancel(),
        link,
    }
}

impl Deref for Merged {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.scope
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        self.link.stop(); // then `scope` drops, which cancels
    }
}

fn main() {
    let ctx1 = Context::background().with_value(RequestId(7)).with_cancel();
    let ctx2 = Context::background().with_cancel();
    let watched = ctx2.context().clone();

    let merged = merge_cancel(&ctx1, &ctx2);
    assert_eq!(merged.value::<RequestId>().map(|id| id.0), Some(7));

    ctx2.cancel_with("ctx2 canceled");
    merged.wait();
    println!("{}", merged.cause().unwrap());

    assert_eq!(merged.cause().unwrap().to_string(), "ctx2 canceled");
    assert!(watched.is_cancelled());
    assert!(!ctx1.is_cancelled(), "ending the merge leaves ctx1 alone");
    drop(merged);

    // A merge dropped before either side ends: it is cancelled and unhooked from both.
    let ctx3 = Context::background().with_cancel();
    let merged = merge_cancel(&ctx1, &ctx3);
    let merged_ctx = Context::clone(&merged);
    drop(merged);
    assert!(merged_ctx.is_cancelled());
    assert!(!ctx1.is_cancelled() && !ctx3.is_cancelled());
    println!("dropped merge: {}", merged_ctx.err().unwrap());

    ctx1.cancel_with("ctx1 canceled"); // Go's deferred cancel1
}
