//! `with_deadline`: one end-to-end budget for a request, however many hops it takes.
//!
//! A deadline is an instant, not a duration, so it survives being passed down: the edge
//! sets "answer by T" and every call below inherits it. A callee that asks for more time
//! than is left gets the caller's deadline instead (the earlier one wins), work that cannot
//! finish in what remains can refuse to start, and work already running stops at T rather
//! than finishing an answer the client has stopped waiting for.

use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Context, Error};

/// A hop that wants a generous deadline of its own: it cannot outlive the request's.
fn authenticate(ctx: &Context) -> Result<(), Error> {
    let call = ctx.with_deadline(Instant::now() + Duration::from_secs(1));
    assert_eq!(call.deadline(), ctx.deadline(), "the earlier deadline wins");
    println!("authenticate: asked for 1s, kept the request's deadline");
    call.checkpoint()
}

/// Expensive work that refuses to start when the budget cannot cover it.
fn render_report(ctx: &Context) -> Result<(), Error> {
    const COST: Duration = Duration::from_millis(500);
    if let Some(deadline) = ctx.deadline()
        && deadline.saturating_duration_since(Instant::now()) < COST
    {
        println!("render_report: needs ~500ms, less is left: skipped");
        return Err(Error::DeadlineExceeded);
    }
    thread::sleep(COST);
    Ok(())
}

/// Work in small steps that stops at the deadline.
fn search(ctx: &Context) -> Result<u32, Error> {
    let mut pages = 0;
    loop {
        if let Err(err) = ctx.checkpoint() {
            println!("search: stopped after {pages} pages: {err}");
            return Err(err);
        }
        thread::sleep(Duration::from_millis(2)); // one page
        pages += 1;
    }
}

fn main() {
    let deadline = Instant::now() + Duration::from_millis(50);
    let request = Context::background().with_deadline(deadline);
    assert_eq!(request.deadline(), Some(deadline));

    assert_eq!(authenticate(&request), Ok(()));
    assert_eq!(render_report(&request), Err(Error::DeadlineExceeded));
    assert_eq!(search(&request), Err(Error::DeadlineExceeded));

    assert!(Instant::now() >= deadline);
    assert_eq!(request.err(), Some(Error::DeadlineExceeded));
    println!("request: {}", request.err().unwrap());
}
