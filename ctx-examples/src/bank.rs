//! A money transfer over SQLite, and the cancellation bug `ctx_core::testing` finds in it.
//!
//! [`transfer_in_two_steps`] debits one account, awaits a fraud check, then credits the
//! other: a request cancelled (deadline, client gone, shutdown) between the two statements
//! leaves the money debited and never credited. No test that runs it to completion sees
//! that; `explore_cancellation` does, by cancelling it at each of its cancellation points
//! in turn (`tests/bank.rs`, `examples/bank_transfer.rs`). [`transfer`] is the fix: the
//! awaits first, then both statements in one transaction inside one `db::sqlite::run`, so a
//! cancel either comes before anything is written or rolls the whole transfer back.
//!
//! [`router`] serves it over HTTP (`POST /transfer/{from}/{to}/{amount}`); a transfer above
//! [`REVIEW_ABOVE`] waits for a manual review that takes longer than any request's budget,
//! which a test checks in tokio's paused time: a 30-second timeout, tested in microseconds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ctx_core::db::sqlite::rusqlite::{self, Connection, params};
use ctx_core::{Context, Error, cancellable, db};

/// Transfers above this amount wait for a manual review ([`REVIEW`]).
pub const REVIEW_ABOVE: i64 = 1_000;

/// How long a manual review takes.
pub const REVIEW: Duration = Duration::from_secs(45);

const DEBIT: &str = "UPDATE accounts SET balance = balance - ?1 WHERE name = ?2";
const CREDIT: &str = "UPDATE accounts SET balance = balance + ?1 WHERE name = ?2";

/// A bank: one SQLite connection (in memory) with an `accounts` table.
pub struct Bank {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank").finish_non_exhaustive()
    }
}

/// Why a transfer did not happen.
#[derive(Debug)]
pub enum BankError {
    /// The request's context ended first.
    Context(Error),
    /// The database failed.
    Db(String),
}

impl From<Error> for BankError {
    fn from(err: Error) -> BankError {
        BankError::Context(err)
    }
}

impl From<db::Error> for BankError {
    fn from(err: db::Error) -> BankError {
        match err.context_error() {
            Some(err) => BankError::Context(err),
            None => BankError::Db(err.to_string()),
        }
    }
}

impl IntoResponse for BankError {
    fn into_response(self) -> Response {
        match self {
            BankError::Context(Error::DeadlineExceeded) => {
                (StatusCode::GATEWAY_TIMEOUT, "deadline exceeded\n").into_response()
            }
            BankError::Context(err) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response()
            }
            BankError::Db(why) => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response()
            }
        }
    }
}

impl Bank {
    /// A bank with these accounts and balances.
    pub fn open(accounts: &[(&str, i64)]) -> rusqlite::Result<Bank> {
        let conn = Connection::open_in_memory()?;
        conn.execute(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)",
            [],
        )?;
        for (name, balance) in accounts {
            conn.execute(
                "INSERT INTO accounts VALUES (?1, ?2)",
                params![name, balance],
            )?;
        }
        Ok(Bank {
            conn: Mutex::new(conn),
        })
    }

    /// An account's balance.
    pub fn balance(&self, name: &str) -> i64 {
        self.conn()
            .query_row(
                "SELECT balance FROM accounts WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .expect("a known account")
    }

    /// The money in the bank: what no transfer may change.
    pub fn total(&self) -> i64 {
        self.conn()
            .query_row("SELECT sum(balance) FROM accounts", [], |row| row.get(0))
            .expect("a readable table")
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One statement under `ctx` (interrupted in SQLite if `ctx` ends while it runs).
    fn execute(&self, ctx: &Context, sql: &str, amount: i64, name: &str) -> Result<(), BankError> {
        let conn = self.conn();
        db::sqlite::run(ctx, &conn, |conn| conn.execute(sql, params![amount, name]))?;
        Ok(())
    }
}

/// Stands in for a call to another service before money moves: a fraud check that answers
/// at once, or, above [`REVIEW_ABOVE`], a manual review that takes [`REVIEW`].
async fn fraud_check(amount: i64) {
    if amount > REVIEW_ABOVE {
        tokio::time::sleep(REVIEW).await;
    } else {
        tokio::task::yield_now().await;
    }
}

/// The bug: two statements with an await between them. Cancelled after the debit, the
/// money is gone from `from` and never reaches `to`.
#[cancellable]
pub async fn transfer_in_two_steps(
    ctx: &Context,
    bank: &Bank,
    from: &str,
    to: &str,
    amount: i64,
) -> Result<(), BankError> {
    bank.execute(ctx, DEBIT, amount, from)?;
    fraud_check(amount).await;
    bank.execute(ctx, CREDIT, amount, to)?;
    Ok(())
}

/// The fix: every await before any write, then both statements in one transaction inside
/// one `db::sqlite::run`. Cancelled before it, nothing is written; interrupted inside it,
/// the transaction rolls back (a `rusqlite::Transaction` rolls back on drop).
#[cancellable]
pub async fn transfer(
    ctx: &Context,
    bank: &Bank,
    from: &str,
    to: &str,
    amount: i64,
) -> Result<(), BankError> {
    fraud_check(amount).await;
    let conn = bank.conn();
    db::sqlite::run(ctx, &conn, |conn| {
        let tx = conn.unchecked_transaction()?;
        tx.execute(DEBIT, params![amount, from])?;
        tx.execute(CREDIT, params![amount, to])?;
        tx.commit()
    })?;
    Ok(())
}

/// `POST /transfer/{from}/{to}/{amount}` with [`transfer`], under the request's context.
pub fn router(bank: Arc<Bank>) -> Router {
    Router::new()
        .route("/transfer/{from}/{to}/{amount}", post(transfer_handler))
        .with_state(bank)
}

#[cancellable]
async fn transfer_handler(
    State(bank): State<Arc<Bank>>,
    Path((from, to, amount)): Path<(String, String, i64)>,
) -> Result<String, BankError> {
    transfer(&Context::current(), &bank, &from, &to, amount).await?;
    Ok(format!("moved {amount} from {from} to {to}\n"))
}
