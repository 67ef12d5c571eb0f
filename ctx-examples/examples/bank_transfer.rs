//! `ctx_core::testing::explore_cancellation` finds a cancellation bug no ordinary test
//! sees: a transfer done as two statements with an await between them, cancelled after the
//! debit, loses the money. The fixed transfer (one transaction inside one
//! `db::sqlite::run`) survives a cancel at every point. (`src/bank.rs` has both.)

use ctx_core::testing::explore_cancellation;
use ctx_examples::bank::{self, Bank, BankError};
use futures::FutureExt;

fn open() -> Bank {
    Bank::open(&[("alice", 100), ("bob", 100)]).expect("an in-memory database")
}

/// The invariant every run checks: no money is made or lost.
fn check(bank: &Bank, done: &Result<(), BankError>) {
    assert_eq!(
        bank.total(),
        200,
        "money vanished: alice has {}, bob {} ({done:?})",
        bank.balance("alice"),
        bank.balance("bob")
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Exploring panics on the first run that breaks the invariant; keep the report quiet.
    std::panic::set_hook(Box::new(|_| {}));
    let two_steps = std::panic::AssertUnwindSafe(explore_cancellation(|ctx| async move {
        let bank = open();
        let done = bank::transfer_in_two_steps(&ctx, &bank, "alice", "bob", 10).await;
        check(&bank, &done);
    }))
    .catch_unwind()
    .await;
    match two_steps {
        Ok(explored) => println!(
            "two statements: no bug found at {} points",
            explored.points().len()
        ),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map_or("(no message)", String::as_str);
            println!("two statements: bug found");
            println!("  {message}");
        }
    }
    let explored = explore_cancellation(|ctx| async move {
        let bank = open();
        let done = bank::transfer(&ctx, &bank, "alice", "bob", 10).await;
        check(&bank, &done);
    })
    .await;
    println!(
        "one transaction: a cancel at each of its {} points leaves every account right",
        explored.points().len()
    );
    for (k, at) in explored.points().iter().enumerate() {
        println!("  point {k}: {at}");
    }
}
