//! Go's `context` package, Rust-native: cancellation trees, deadlines and request-scoped
//! values, with RAII cancel and typed keys.
//!
//! A [`Context`] is a node in a tree rooted at [`Context::background`]. Deriving a child
//! ([`with_cancel`](Context::with_cancel), [`with_timeout`](Context::with_timeout),
//! [`with_deadline`](Context::with_deadline)) gives a [`CancelScope`]: the child context plus
//! the right to cancel it, exercised on drop at the latest. Cancelling a node cancels its
//! whole subtree before `cancel` returns; deadlines fire on their own, with or without an
//! async runtime. Values ride along with [`with_value`](Context::with_value), keyed by type.
//!
//! ```
//! # #[cfg(feature = "macros")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, ContextKey, Error};
//!
//! #[derive(ContextKey)]
//! struct RequestId(u64);
//!
//! fn handle(ctx: &Context) -> Result<u64, Error> {
//!     let mut steps = 0;
//!     while steps < 1_000 {
//!         ctx.checkpoint()?; // one atomic load
//!         steps += 1;
//!     }
//!     Ok(ctx.value::<RequestId>().map_or(0, |id| id.0) + steps)
//! }
//!
//! let root = Context::background().with_value(RequestId(7));
//! let request = root.with_timeout(Duration::from_secs(1));
//! assert_eq!(handle(&request), Ok(1_007));
//!
//! request.cancel(); // or just let it drop
//! # }
//! # #[cfg(not(feature = "macros"))] fn main() {}
//! ```
//!
//! # Compared with Go
//!
//! Semantics follow Go 1.21+'s `context` (propagation, first cancel wins, earlier parent
//! deadline wins, `Cause`, `WithoutCancel`, `AfterFunc`). Where Rust does better, ctx does:
//! cancel is RAII (no `lostcancel`), a dropped child leaves no trace in its parent, keys are
//! types, and [`Context::run`] drops a future when its context ends.
//!
//! # Cost
//!
//! [`Context::is_cancelled`] and [`Context::checkpoint`] are one atomic load. Each
//! derivation is one heap allocation; `background()` and `todo()` none; cancel allocates
//! nothing (but a queue slot per [`AfterFunc`]). Cancel and drop use no recursion, so chains of
//! any depth are safe.
//!
//! # Panic safety
//!
//! User code runs inside the tree in a few places: a waker woken by a cancel, a value's
//! `Drop`, an after-func, the drop of what a waker or an after-func captured. None of their
//! panics can leave the tree half-cancelled or stop the deadline driver: a cancel always
//! completes (every descendant done, every waiter woken, every after-func dispatched) before
//! a waker's panic resumes in the cancelling thread; the driver survives them; after-funcs
//! run on a pool that survives them. See [`CancelScope`]'s `# Panics`.
//!
//! # Overload
//!
//! A deadline stops work nobody waits for any more; under overload a service must also not
//! *start* it, or every request waits its turn and is served after its caller gave up. With
//! feature `tower`, [`http::AdmissionLayer`], inside `ContextLayer` or `grpc::ServerLayer`,
//! lets at most `N` requests into the service (choose `N` as the bounded resource's
//! concurrency: a pool's size), queues the rest, serves the newest first while the queue
//! stands, and answers at once, without calling the service, what cannot finish in time:
//! 504 / `DEADLINE_EXCEEDED` when the budget is spent or shorter than requests need (a
//! client should not retry it), 503 / `UNAVAILABLE` when the queue is full (retry with
//! backoff, within the budget; `http::RetryPolicy` does). [`http::admission`] says where
//! it goes in a stack and how to size it.
//!
//! # Features
//!
//! | feature | default | gives |
//! | --- | --- | --- |
//! | `macros` | yes | [`#[cancellable]`](macro@cancellable) and [`#[derive(ContextKey)]`](macro@ContextKey) |
//! | `tokio` | | [`Group`], [`spawn`], [`spawn_blocking`], [`signal::notify`], [`process::output`] |
//! | `tower` | | [`http::ContextLayer`], [`http::PropagateDeadlineLayer`], the `grpc-timeout` codec, [`http::AdmissionLayer`] (deadline-aware admission under overload) |
//! | `axum` | | `Context` as an axum extractor (and `tower`) |
//! | `tonic` | | [`http::grpc::ServerLayer`] and [`http::grpc::ClientLayer`]: deadlines across gRPC hops, `DEADLINE_EXCEEDED` on expiry (and `tower`) |
//! | `reqwest` | | [`http::DeadlineMiddleware`]: reqwest requests bounded by their context (and `tower`) |
//! | `sqlite` | | [`db::sqlite::run`]: a statement interrupted when its context ends |
//! | `postgres` | | [`db::postgres::run`]: a query cancelled on the server, the connection discarded |
//! | `tracing` | | [`trace::span!`], [`trace::traced`], `#[cancellable(trace)]`: spans with a context's budget and end |
//! | `debug-tree` | | [`debug::snapshot`]: every live context as a tree |
//!
//! With no feature at all ctx-core depends on nothing but `pin-project-lite`. Each
//! integration uses only the public API shown here, as a crate of your own would.
//!
//! ## `macros`: the context as the default
//!
//! ```
//! # #[cfg(feature = "macros")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{cancellable, Context, Error};
//!
//! // Derives a child with a 50 ms budget from the caller's `ctx`; every loop iteration is a
//! // checkpoint, and the child is cancelled on every way out.
//! #[cancellable(timeout = "50ms")]
//! fn count(ctx: &Context, upto: u64) -> Result<u64, Error> {
//!     let mut n = 0;
//!     while n < upto {
//!         n += 1;
//!     }
//!     Ok(n)
//! }
//!
//! assert_eq!(count(&Context::background(), 1_000), Ok(1_000));
//! assert_eq!(count(&Context::background(), u64::MAX), Err(Error::DeadlineExceeded));
//! # }
//! # #[cfg(not(feature = "macros"))] fn main() {}
//! ```
//!
//! ## `tokio`: structured concurrency
//!
//! ```
//! # #[cfg(feature = "tokio")] fn main() {
//! use ctx_core::{Context, Group};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let request = Context::background().with_cancel();
//! let group = Group::<std::io::Error>::new(&request);
//! group.spawn(async { Err(std::io::Error::other("users backend down")) });
//! group.spawn(async {
//!     // The first failure cancels the group's context: this one stops waiting.
//!     Context::current().done().await;
//!     Ok(())
//! });
//! let err = group.wait().await.unwrap_err();
//! assert_eq!(err.to_string(), "users backend down");
//! # });
//! # }
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! ```
//!
//! ## `tower`: a deadline on every hop
//!
//! ```
//! # #[cfg(feature = "tower")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, http::{ContextLayer, PropagateDeadlineLayer, GRPC_TIMEOUT}};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # futures::executor::block_on(async {
//! // Server side: each request gets a child of the server's root, with the deadline its
//! // `grpc-timeout` asks for (capped at 2 s), as `Context::current()` of the handler.
//! let root = Context::background().with_cancel();
//! let server = ContextLayer::new(&root).max_timeout(Duration::from_secs(2)).layer(service_fn(
//!     |_request: http::Request<String>| async {
//!         let deadline = Context::current().deadline();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(format!("{}", deadline.is_some())))
//!     },
//! ));
//! let request = http::Request::builder().header(GRPC_TIMEOUT, "100m").body(String::new()).unwrap();
//! assert_eq!(server.oneshot(request).await.unwrap().into_body(), "true");
//!
//! // Client side: the caller's remaining budget travels as `grpc-timeout`.
//! let caller = Context::background().with_timeout(Duration::from_secs(1));
//! let mut client = PropagateDeadlineLayer::with_context(&caller).layer(service_fn(
//!     |request: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(request.headers().contains_key(GRPC_TIMEOUT))
//!     },
//! ));
//! let sent = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert!(sent);
//! # });
//! # }
//! # #[cfg(not(feature = "tower"))] fn main() {}
//! ```
//!
//! ## `axum`: the request's context as an extractor
//!
//! ```
//! # #[cfg(feature = "axum")] fn main() {
//! use axum::{Router, routing::get};
//! use ctx_core::{Context, http::ContextLayer};
//! use tower::ServiceExt;
//!
//! async fn handler(ctx: Context) -> String {
//!     format!("{}", ctx.deadline().is_some())
//! }
//!
//! # futures::executor::block_on(async {
//! let root = Context::background().with_cancel();
//! let app = Router::new().route("/", get(handler)).layer(ContextLayer::new(&root));
//! let request = http::Request::builder()
//!     .uri("/")
//!     .header("grpc-timeout", "1S")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
//! assert_eq!(&body[..], b"true");
//! # });
//! # }
//! # #[cfg(not(feature = "axum"))] fn main() {}
//! ```

//!
//! ## `tonic`: deadlines across gRPC hops
//!
//! ```
//! # #[cfg(feature = "tonic")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, Error, http::grpc::{ClientLayer, ServerLayer}};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Server: each RPC runs under a child of `root` with the client's deadline (capped), as
//! // `Context::current()`; expiry answers DEADLINE_EXCEEDED, shutdown UNAVAILABLE.
//! let root = Context::background().with_cancel();
//! let layer = ServerLayer::new(&root).max_timeout(Duration::from_secs(30));
//! let _router = tonic::transport::Server::builder().layer(layer);
//!
//! // Client: every call sends what is left of its context's budget as `grpc-timeout`.
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let _channel = tower::ServiceBuilder::new().layer(ClientLayer::new()).service(channel);
//!
//! // Handlers `?` context errors into statuses.
//! let status = tonic::Status::from(Error::DeadlineExceeded);
//! assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
//! # });
//! # }
//! # #[cfg(not(feature = "tonic"))] fn main() {}
//! ```
//!
//! [`http::grpc`] runs a whole round trip over loopback.
//!
//! ## `reqwest`: a budget for outgoing HTTP requests
//!
//! ```
//! # #[cfg(feature = "reqwest")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, http::DeadlineMiddleware};
//!
//! // Each request made inside a context gets its remaining time as its timeout (and here as
//! // `grpc-timeout` for the next hop), fails fast once it is done, is dropped when it ends.
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(DeadlineMiddleware::new().send_grpc_timeout(true))
//!     .build();
//! # let _ = (client, Context::background(), Duration::ZERO);
//! # }
//! # #[cfg(not(feature = "reqwest"))] fn main() {}
//! ```
//!
//! [`http::DeadlineMiddleware`] runs a request over loopback.

//!
//! ## `sqlite` and `postgres`: queries that stop on the database
//!
//! ```
//! # #[cfg(feature = "sqlite")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, Error, db};
//! use ctx_core::db::sqlite::rusqlite::Connection;
//!
//! let conn = Connection::open_in_memory().unwrap();
//! let request = Context::background().with_timeout(Duration::from_millis(20));
//! let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
//! let err = db::sqlite::run(&request, &conn, |conn| {
//!     conn.query_row(endless, [], |row| row.get::<_, i64>(0))
//! })
//! .unwrap_err();
//! assert_eq!(err.context_error(), Some(Error::DeadlineExceeded)); // interrupted by the deadline
//! assert_eq!(conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)).unwrap(), 1);
//! # }
//! # #[cfg(not(feature = "sqlite"))] fn main() {}
//! ```
//!
//! PostgreSQL works the same way on a `deadpool_postgres::Pool` (see `db::postgres`, whose
//! tests run against a throw-away server of their own).
//!
//! ## `tracing`: where the budget went
//!
//! ```
//! # #[cfg(feature = "tracing")] fn main() {
//! use std::time::Duration;
//! use ctx_core::{Context, trace};
//!
//! let request = Context::background().with_timeout(Duration::from_secs(1));
//! let span = trace::span!(tracing::Level::INFO, "get_user", id = 7);
//! // Records ctx.budget_ms now, and ctx.error, ctx.cause and ctx.cause_at if it ends.
//! let user = futures::executor::block_on(trace::traced(&request, span, async { "ann" }));
//! assert_eq!(user, "ann");
//! # }
//! # #[cfg(not(feature = "tracing"))] fn main() {}
//! ```
//!
//! ## `debug-tree`: the live tree
//!
//! ```
//! # #[cfg(feature = "debug-tree")] fn main() {
//! use ctx_core::{Context, debug};
//!
//! let request = Context::background().with_cancel();
//! let shown = debug::snapshot().to_string(); // serve it from a debug endpoint
//! assert!(shown.contains("context.Background.WithCancel"));
//! # drop(request);
//! # }
//! # #[cfg(not(feature = "debug-tree"))] fn main() {}
//! ```
#![warn(missing_docs)]

mod context;
mod integrations;
mod sync;

pub use context::{
    AfterFunc, CancelHandle, CancelScope, Cause, Context, ContextKey, Done, Error, Run, Scoped,
};

#[cfg(feature = "debug-tree")]
pub use context::debug;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use integrations::db;
#[cfg(feature = "tower")]
pub use integrations::http;
#[cfg(feature = "tokio")]
pub use integrations::tokio::{Group, process, signal, spawn, spawn_blocking};
#[cfg(feature = "tracing")]
pub use integrations::trace;

#[cfg(feature = "macros")]
pub use ctx_macros::{ContextKey, cancellable};

/// What the macros' generated code calls; not public API (see `context/macro_support.rs`).
#[doc(hidden)]
pub mod __private {
    pub use crate::context::macro_support::*;
    #[cfg(feature = "tracing")]
    pub use tracing;
}

/// Without the `tracing` feature, `#[cancellable(trace)]` says what is missing.
#[cfg(not(feature = "tracing"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __ctx_trace_span {
    ($($any:tt)*) => {
        ::core::compile_error!(
            "`#[cancellable(trace)]` needs ctx-core's `tracing` feature: \
             `ctx-core = { version = \"...\", features = [\"tracing\"] }`"
        )
    };
}

/// Stops the deadline driver thread, so a loom model can end with every thread finished.
#[cfg(ctx_loom)]
#[doc(hidden)]
pub fn __stop_deadline_driver() {
    context::stop_deadline_driver();
}

/// Gives a context its spread of children lists now (as contended derivations would), so a
/// loom model can explore the spread's races.
#[cfg(ctx_loom)]
#[doc(hidden)]
pub fn __spread_children(ctx: &Context) {
    context::spread_children(ctx);
}
