//! `Context::background()` and `Context::todo()`: the two roots of every context tree.
//!
//! A service makes `background()` once, at the top, and derives everything else from it: the
//! server's context, each request's, each call's. Cancelling a derived context then reaches
//! all the work under it, while the root itself never ends. `todo()` behaves the same but
//! marks a call site whose caller does not pass a context yet: it shows up as `context.TODO`
//! in logs and in a grep, so the missing plumbing gets found and fixed.

use std::thread;

use ctx_core::{Context, Error};

/// Library code takes the caller's context, derives its own, and logs the chain.
fn lookup_user(ctx: &Context, id: u32) -> Result<String, Error> {
    let call = ctx.with_cancel(); // this call's scope: cancelled when the function returns
    println!("lookup_user({id}) runs under {}", call.context());
    call.checkpoint()?;
    Ok(format!("user-{id}"))
}

/// Old code whose callers have no context to give it yet: `todo()` says so.
fn legacy_report() -> Result<String, Error> {
    lookup_user(&Context::todo(), 7)
}

fn main() {
    // The root: never cancelled, no deadline, no values, no allocation.
    let root = Context::background();
    assert!(!root.is_cancelled());
    assert_eq!(root.deadline(), None);
    assert_eq!(root.err(), None);
    assert_eq!(root.to_string(), "context.Background");
    println!("root: {root}");

    // The server's context hangs off the root, and every request's off the server's.
    let server = root.with_cancel();
    let requests: Vec<_> = (1..=2)
        .map(|id| {
            let request = server.with_cancel();
            thread::spawn(move || {
                let err = request.wait(); // a long poll: waits until told to stop
                println!("request {id} stopped: {err}");
                err
            })
        })
        .collect();

    // Shutdown: one cancel reaches every request in flight; the root is untouched.
    server.cancel();
    for request in requests {
        assert_eq!(request.join().unwrap(), Error::Cancelled);
    }
    assert!(!root.is_cancelled());
    println!(
        "after shutdown the root is still live: {}",
        !root.is_cancelled()
    );

    // A properly plumbed call, and a legacy one that shows up as TODO in the logs.
    assert_eq!(lookup_user(&root, 1).as_deref(), Ok("user-1"));
    assert_eq!(legacy_report().as_deref(), Ok("user-7"));
    assert_eq!(
        Context::todo().with_cancel().context().to_string(),
        "context.TODO.WithCancel"
    );
}
