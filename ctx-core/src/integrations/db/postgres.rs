//! PostgreSQL queries under a context (feature `postgres`): [`run`] on a
//! [`deadpool_postgres::Pool`] of tokio-postgres connections.
//!
//! PostgreSQL stops a running query only when asked on a *second* connection: a cancel
//! request names the backend (its process id and secret key), not the statement, and the
//! server delivers it as a signal some time later. So a cancel sent for a query that has
//! just finished can land on the *next* query the connection runs: with a pool, someone
//! else's (lib/pq#1001). [`run`] never lets that happen:
//!
//! - it takes a connection from the pool (waiting no longer than the context lasts), runs
//!   `f` on it, and races `f` against the context;
//! - if `f` finishes first, the connection goes back to the pool: no cancel was sent;
//! - if the context ends first, `f`'s future is dropped, a cancel request is sent for the
//!   connection's backend (`CancelToken::cancel_query(NoTls)`, from a spawned task), the
//!   connection is taken out of the pool and closed, and `run` returns
//!   [`Error::Context`] at once;
//! - the same happens when `run`'s own future is dropped while `f` is in flight (an HTTP
//!   server dropping a handler whose client went away) or when `f` panics.
//!
//! A connection a cancel may still reach is therefore never used again, by construction
//! (a backend's secret key is random per connection, so a cancel cannot hit a new backend
//! that reuses the process id either). The price is one reconnect per cancelled query.
//!
//! # Pitfalls
//!
//! - Cancel requests go out without TLS (`NoTls`): with `sslmode=require` the server
//!   refuses them, and a cancelled query runs on until it ends (its connection is still
//!   discarded, so nothing else is hurt). `sslmode=prefer` or `disable` is fine.
//! - The whole of `f` is one unit: if the context ends in the middle of a transaction, the
//!   connection is closed, and the server rolls the transaction back.
//! - If the process dies, nothing sends the cancel: a server-side `statement_timeout` is
//!   the backstop for that.
//! - A result that arrives as the context ends is dropped: `run` reports the context's error
//!   although the server may have done the work (a `COMMIT` racing the deadline may have
//!   committed), as with any timeout. Make writes that you retry idempotent.

use std::future::Future;

pub use deadpool_postgres;
use deadpool_postgres::{ClientWrapper, Object, Pool};
pub use tokio_postgres;
use tokio_postgres::{CancelToken, NoTls};

use super::Error;
use crate::Context;

/// Runs `f` on a connection from `pool` under `ctx`: when `ctx` ends first, the query is
/// cancelled on the server, the connection is discarded, and `run` returns
/// [`Error::Context`] without waiting for the server.
///
/// - If `ctx` is already done, no connection is taken and `f` does not run.
/// - Waiting for a free connection also ends with `ctx` ([`Error::Context`]).
/// - `f` gets the pooled client (a [`ClientWrapper`]: a [`tokio_postgres::Client`] with a
///   statement cache) for as many statements as it likes; the context covers them all.
/// - `f`'s error is [`Error::Postgres`]; the connection goes back to the pool (tokio-postgres
///   keeps it consistent after a server error, and a transaction dropped unfinished is
///   rolled back).
///
/// # Cancellation safety
///
/// Dropping the returned future while `f` is in flight does what the context's end does:
/// cancel on the server and discard the connection. It needs a tokio runtime to send the
/// cancel; dropped outside one, a thread with its own runtime sends it.
///
/// ```no_run
/// use std::time::Duration;
/// use ctx_core::{Context, db};
/// use ctx_core::db::postgres::{deadpool_postgres, tokio_postgres::NoTls};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: tokio_postgres::Config = "host=127.0.0.1 user=postgres".parse()?;
/// # use ctx_core::db::postgres::tokio_postgres;
/// let manager = deadpool_postgres::Manager::new(config, NoTls);
/// let pool = deadpool_postgres::Pool::builder(manager).max_size(4).build()?;
///
/// let ctx = Context::background().with_timeout(Duration::from_millis(100));
/// let result = db::postgres::run(&ctx, &pool, async |client| {
///     client.query_one("SELECT pg_sleep(10)", &[]).await
/// })
/// .await;
/// // Returned at the deadline; the server stopped the sleep a moment later.
/// assert_eq!(result.unwrap_err().context_error(), Some(ctx_core::Error::DeadlineExceeded));
/// # Ok(()) }
/// ```
pub async fn run<T, F>(ctx: &Context, pool: &Pool, f: F) -> Result<T, Error>
where
    F: AsyncFnOnce(&mut ClientWrapper) -> Result<T, tokio_postgres::Error>,
{
    ctx.checkpoint()?;
    let object = ctx.run(pool.get()).await??;
    let mut checkout = Checkout {
        object: Some(object),
        settled: false,
    };
    let outcome = ctx.run(f(checkout.client())).await;
    match outcome {
        Ok(result) => {
            // `f` finished and no cancel was sent: the connection is as good as `f` left it.
            checkout.settled = true;
            result.map_err(Error::Postgres)
        }
        // `f`'s future is already dropped; dropping `checkout` cancels and discards.
        Err(err) => Err(Error::Context(err)),
    }
}

/// A connection lent to `f`. Unless `run` settles it, dropping it cancels whatever the
/// connection's backend is running and takes the connection out of the pool.
struct Checkout {
    object: Option<Object>,
    /// `f` finished: the connection goes back to the pool.
    settled: bool,
}

impl Checkout {
    fn client(&mut self) -> &mut ClientWrapper {
        self.object
            .as_deref_mut()
            .expect("the object is taken only on drop")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        if self.settled {
            return; // `object` drops here: back to the pool
        }
        send_cancel(object.cancel_token());
        // Out of the pool for good; dropping the wrapper aborts its connection task and so
        // closes the socket.
        drop(Object::take(object));
    }
}

/// Sends a cancel request for `token`'s backend without waiting for it.
fn send_cancel(token: CancelToken) {
    let cancel = async move {
        // On failure the query runs on until it ends; its connection is discarded anyway.
        let _ = token.cancel_query(NoTls).await;
    };
    spawn_detached(cancel);
}

fn spawn_detached(task: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(task)),
        Err(_) => {
            // Dropped outside a runtime: a thread of its own (rare; failures are ignored
            // as above).
            let _ = std::thread::Builder::new()
                .name("ctx-pg-cancel".into())
                .spawn(move || {
                    if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        runtime.block_on(task);
                    }
                });
        }
    }
}
