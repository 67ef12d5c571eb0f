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
//! - if the context ends first, `f`'s future is dropped and `run` returns
//!   [`Error::Context`] at once; the connection stays out of the pool while a background
//!   task cancels its query and *reclaims* it:
//!   1. it sends the cancel request (`CancelToken::cancel_query_raw`) on a socket of its
//!      own and waits for the server to close it: the server closes it only once it has
//!      signalled the backend, so from then on the cancel is *delivered*, not in flight;
//!   2. it waits for the connection to answer an empty query. A delivered cancel cannot
//!      reach it or any later query: the backend either ended the running query with it
//!      (SQLSTATE 57014, "canceling statement due to user request"), or, when the query
//!      had finished, dropped it on reading the next command (PostgreSQL ignores a cancel
//!      that arrives while no query runs);
//!   3. then the connection goes back to the pool. If any step fails or all of it takes
//!      longer than 5 s, the connection is closed instead, and the pool opens a new one;
//! - the same happens when `run`'s own future is dropped while `f` is in flight (an HTTP
//!   server dropping a handler whose client went away) or when `f` panics.
//!
//! A connection a cancel may still reach is therefore never used again (a backend's
//! secret key is random per connection, so a cancel cannot hit a new backend that reuses
//! the process id either), and a query cancelled mid-way costs no reconnect.
//!
//! The cancel goes to the address the server reports for the connection
//! (`inet_server_addr()`, `inet_server_port()`, asked once per pool, on the first
//! connection `run` checks out): tokio-postgres opens its cancel sockets itself and does not
//! say when the server has closed them. A connection over a Unix socket, where the server
//! reports no address, is cancelled through tokio-postgres and always closed afterwards.
//!
//! # Pitfalls
//!
//! - Cancel requests go out without TLS (`NoTls`): with `sslmode=require` the server
//!   refuses them, and a cancelled query runs on until it ends (its connection is then
//!   closed, so nothing else is hurt). `sslmode=prefer` or `disable` is fine.
//! - Behind a proxy that stands for the server (PgBouncer), the server's own address may
//!   not be reachable: cancels then fail and cancelled connections are closed.
//! - The whole of `f` is one unit: if the context ends in the middle of a transaction, the
//!   connection is closed, and the server rolls the transaction back.
//! - If the process dies, nothing sends the cancel: a server-side `statement_timeout` is
//!   the backstop for that.
//! - A result that arrives as the context ends is dropped: `run` reports the context's error
//!   although the server may have done the work (a `COMMIT` racing the deadline may have
//!   committed), as with any timeout. Make writes that you retry idempotent.

use std::net::{IpAddr, SocketAddr};
use std::ptr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub use deadpool_postgres;
use deadpool_postgres::{ClientWrapper, Manager, Object, Pool};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
pub use tokio_postgres;
use tokio_postgres::NoTls;

use super::{Error, spawn_detached};
use crate::Context;

/// How long the background reclaim may take (cancel delivered, connection idle) before the
/// connection is closed instead.
const RECLAIM_WITHIN: Duration = Duration::from_secs(5);

/// Runs `f` on a connection from `pool` under `ctx`: when `ctx` ends first, the query is
/// cancelled on the server and `run` returns [`Error::Context`] without waiting for the
/// server; the connection goes back to the pool once the cancel is delivered and the
/// connection idle, in the background (see the module docs), and is closed otherwise.
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
/// cancel on the server and reclaim the connection. It needs a tokio runtime for the
/// background part; dropped outside one, a thread with its own runtime does it.
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
    let server = match server_address(pool) {
        Some(known) => known,
        None => ctx.run(learn_server_address(pool, &object)).await??,
    };
    let mut checkout = Checkout {
        object: Some(object),
        server,
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
/// connection's backend is running and reclaims the connection in the background.
struct Checkout {
    object: Option<Object>,
    /// Where to send the cancel so as to see the server close the socket (none over a Unix
    /// socket).
    server: Option<SocketAddr>,
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
        spawn_detached(reclaim(object, self.server));
    }
}

/// Cancels the backend's query, then returns the connection to the pool once the cancel is
/// delivered and the connection answers; closes it otherwise.
async fn reclaim(object: Object, server: Option<SocketAddr>) {
    let token = object.cancel_token();
    let reclaimed = tokio::time::timeout(RECLAIM_WITHIN, async {
        let Some(server) = server else {
            // No way to see the cancel delivered: send it, and close the connection.
            let _ = token.cancel_query(NoTls).await;
            return false;
        };
        let delivered = async {
            let mut socket = TcpStream::connect(server).await?;
            token
                .cancel_query_raw(&mut socket, NoTls)
                .await
                .map_err(std::io::Error::other)?;
            // The server closes the socket once it has signalled the backend.
            socket.read_to_end(&mut Vec::new()).await
        };
        if delivered.await.is_err() {
            return false;
        }
        // Answers once the cancelled query has ended; the delivered cancel cannot reach it.
        object.simple_query("").await.is_ok()
    })
    .await
    .unwrap_or(false);
    if !reclaimed {
        // Out of the pool for good; dropping the wrapper aborts its connection task and so
        // closes the socket.
        drop(Object::take(object));
    }
    // Reclaimed: `object` drops here and goes back to the pool.
}

/// The server addresses of the pools `run` has served, by the address of their manager
/// (which lives as long as its pool, inside it). A stale entry (a new pool where a dropped
/// one was) can only send a cancel where it is ignored: the connection is then closed.
type Servers = Vec<(usize, Option<SocketAddr>)>;
const MAX_POOLS: usize = 64;
static SERVERS: Mutex<Servers> = Mutex::new(Vec::new());

fn pool_key(pool: &Pool) -> usize {
    ptr::from_ref::<Manager>(pool.manager()) as usize
}

fn server_address(pool: &Pool) -> Option<Option<SocketAddr>> {
    let key = pool_key(pool);
    let servers = SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    servers
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, addr)| *addr)
}

/// Asks the server for its address on this connection, and remembers it for the pool.
async fn learn_server_address(
    pool: &Pool,
    client: &ClientWrapper,
) -> Result<Option<SocketAddr>, Error> {
    let row = client
        .query_one("SELECT host(inet_server_addr()), inet_server_port()", &[])
        .await?;
    let ip: Option<String> = row.try_get(0)?;
    let port: Option<i32> = row.try_get(1)?;
    let server = match (ip.and_then(|ip| ip.parse::<IpAddr>().ok()), port) {
        (Some(ip), Some(port)) => u16::try_from(port)
            .ok()
            .map(|port| SocketAddr::new(ip, port)),
        _ => None,
    };
    let key = pool_key(pool);
    let mut servers = SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    servers.retain(|(k, _)| *k != key);
    if servers.len() >= MAX_POOLS {
        // A program that keeps making pools: forget the oldest (it is asked again if used).
        servers.remove(0);
    }
    servers.push((key, server));
    Ok(server)
}
