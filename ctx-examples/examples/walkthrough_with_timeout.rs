//! `with_timeout`: a bound on one call to one dependency.
//!
//! The request's deadline says when the client stops waiting; a timeout says how long this
//! call may take, say to a recommendations service the page can do without. Run under the
//! timeout's context, a slow call is dropped the moment the timeout fires, the handler falls
//! back, and the page is still served in time. `with_timeout_cause` names the timeout that
//! fired, so the log says which dependency was slow, not just "deadline exceeded".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ctx_core::{Context, Error};

/// Set when the call's future is dropped: proof the slow call was abandoned, not awaited.
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A dependency that is having a bad day.
async fn recommendations(dropped: Arc<AtomicBool>) -> Vec<&'static str> {
    let _in_flight = InFlight(dropped);
    tokio::time::sleep(Duration::from_secs(10)).await;
    vec!["a book you might like"]
}

/// A dependency that answers quickly.
async fn inventory() -> u32 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let request = Context::background().with_timeout(Duration::from_secs(5));

    let dropped = Arc::new(AtomicBool::new(false));
    let call = request.with_timeout_cause(
        Duration::from_millis(30),
        "recommendations took longer than 30ms",
    );
    let recs = match call.run(recommendations(dropped.clone())).await {
        Ok(recs) => recs,
        Err(err) => {
            println!("recommendations: {err} ({})", call.cause().unwrap());
            assert_eq!(err, Error::DeadlineExceeded);
            Vec::new() // fall back to no recommendations
        }
    };
    assert!(recs.is_empty());
    assert!(dropped.load(Ordering::SeqCst), "the slow call was dropped");

    let call = request.with_timeout(Duration::from_millis(500));
    let stock = call.run(inventory()).await;
    println!("inventory: {stock:?}");
    assert_eq!(stock, Ok(3));
    let stock = stock.unwrap_or(0);

    // One call timing out does not end the request.
    assert!(!request.is_cancelled());
    println!(
        "page served: {stock} in stock, {} recommendations",
        recs.len()
    );
}
