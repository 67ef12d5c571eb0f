//! The worked example of `ctx_core::testing`: `explore_cancellation` finds where a cancel
//! leaves a two-statement transfer debited and not credited, and passes the one-transaction
//! fix; the transfer handler's timeout is tested in tokio's paused time.

use std::sync::Arc;
use std::time::Duration;

use ctx_core::http::ContextLayer;
use ctx_core::testing::explore_cancellation;
use ctx_core::{Context, Error};
use ctx_examples::bank::{self, Bank, BankError, REVIEW};
use futures::FutureExt;
use tower::ServiceExt;

fn open() -> Bank {
    Bank::open(&[("alice", 100), ("bob", 100)]).unwrap()
}

/// What must hold however the transfer ended: no money made or lost, and an `Ok` moved it.
fn check(bank: &Bank, done: &Result<(), BankError>) {
    assert_eq!(
        bank.total(),
        200,
        "money vanished: alice has {}, bob {} ({done:?})",
        bank.balance("alice"),
        bank.balance("bob")
    );
    if done.is_ok() {
        assert_eq!((bank.balance("alice"), bank.balance("bob")), (90, 110));
    }
}

#[tokio::test]
async fn exploring_finds_the_cancel_that_debits_without_crediting() {
    let found = std::panic::AssertUnwindSafe(explore_cancellation(|ctx| async move {
        let bank = open();
        let done = bank::transfer_in_two_steps(&ctx, &bank, "alice", "bob", 10).await;
        check(&bank, &done);
    }))
    .catch_unwind()
    .await
    .expect_err("the two-statement transfer loses money when cancelled mid-way");
    let message = found.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("money vanished: alice has 90, bob 100"),
        "{message}"
    );
    // The first point cancelled after the debit: the fraud check's await, in bank.rs.
    assert!(
        message.contains("point 1 (ctx-examples/src/bank.rs:"),
        "{message}"
    );
}

#[tokio::test]
async fn the_one_transaction_transfer_survives_a_cancel_at_every_point() {
    let explored = explore_cancellation(|ctx| async move {
        let bank = open();
        let done = bank::transfer(&ctx, &bank, "alice", "bob", 10).await;
        check(&bank, &done);
        if let Err(err) = done {
            assert!(
                matches!(err, BankError::Context(Error::Cancelled)),
                "{err:?}"
            );
        }
    })
    .await;
    // The fraud check's await and the statement's start, at least.
    assert!(explored.points().len() >= 2, "{explored:?}");
}

/// A transfer under review outlasts the request's 30-second budget: 504, nothing moved,
/// tested on tokio's paused clock in a fraction of a second.
#[tokio::test(start_paused = true)]
async fn a_transfer_under_review_times_out_in_paused_time() {
    let bank = Arc::new(open());
    let root = Context::background().with_cancel();
    let app = bank::router(bank.clone())
        .layer(ContextLayer::new(&root).default_timeout(Duration::from_secs(30)));
    let request = |amount: i64| {
        http::Request::post(format!("/transfer/alice/bob/{amount}"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let real = std::time::Instant::now();
    let start = tokio::time::Instant::now();
    let response = app.clone().oneshot(request(5_000)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(REVIEW > Duration::from_secs(30));
    assert_eq!((bank.balance("alice"), bank.balance("bob")), (100, 100));
    // A small one goes through at once.
    let response = app.oneshot(request(10)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!((bank.balance("alice"), bank.balance("bob")), (90, 110));
    assert!(real.elapsed() < Duration::from_secs(10));
}
