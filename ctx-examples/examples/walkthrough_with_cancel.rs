//! `with_cancel`: stop the work nobody is waiting for any more.
//!
//! A service often starts more work than it uses: it hedges a read across replicas and takes
//! the first answer, or fans out and gives up on the first failure. Without a cancel signal
//! the losers keep running, holding threads, connections and backend capacity, long after
//! the request was answered. Here the fastest replica wins and cancelling the request's
//! scope stops the other two at once. The cancel is RAII: had the function returned early
//! (a `?`, a panic), dropping the scope would have stopped them just the same.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ctx_core::{Context, Error};

const REPLICAS: [(&str, Duration); 3] = [
    ("replica-a", Duration::from_secs(10)),
    ("replica-b", Duration::from_millis(10)),
    ("replica-c", Duration::from_secs(10)),
];

/// Stands in for a network call that watches its context: it answers after `latency`,
/// or gives up as soon as the context is cancelled.
fn query_replica(ctx: &Context, name: &str, latency: Duration) -> Result<String, Error> {
    match ctx.wait_timeout(latency) {
        Some(err) => Err(err),
        None => Ok(format!("answer from {name}")),
    }
}

type Outcome = (&'static str, Result<String, Error>);

/// Asks every replica, returns the first answer and how the others ended.
fn hedged_read(parent: &Context) -> (Option<String>, Vec<Outcome>) {
    let request = parent.with_cancel();
    let (tx, rx) = mpsc::channel::<Outcome>();
    thread::scope(|s| {
        for (name, latency) in REPLICAS {
            let (ctx, tx) = (request.context().clone(), tx.clone());
            s.spawn(move || tx.send((name, query_replica(&ctx, name, latency))));
        }
        drop(tx);
        let answer = rx.iter().find_map(|(_, result)| result.ok());
        request.cancel(); // the answer is in: stop the others
        let losers = rx.iter().collect();
        (answer, losers)
    }) // every replica thread has been joined here: none outlives the request
}

fn main() {
    let start = Instant::now();
    let (answer, losers) = hedged_read(&Context::background());
    let answer = answer.expect("one replica answers");
    println!("first: {answer}");
    for (name, result) in &losers {
        println!("{name}: {}", result.as_ref().unwrap_err());
    }
    assert_eq!(answer, "answer from replica-b");
    assert_eq!(losers.len(), 2);
    assert!(losers.iter().all(|(_, r)| *r == Err(Error::Cancelled)));
    // The slow replicas would have taken 10s; cancel stopped them instead.
    assert!(start.elapsed() < Duration::from_secs(5));
    println!("the 10s replicas were stopped, none left running");
}
