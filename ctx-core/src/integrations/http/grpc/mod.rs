//! Deadlines across gRPC hops with tonic (feature `tonic`).
//!
//! gRPC carries a call's remaining time in the `grpc-timeout` header. tonic reads it but
//! gives the handler no deadline and reports expiry as `CANCELLED`; its clients send nothing
//! unless each call site sets a timeout. These two layers make a deadline set at the edge
//! reach every hop, and a cancel (a client that gives up) stop the work it started:
//!
//! - [`ServerLayer`], for `tonic::transport::Server::builder().layer(..)`: each RPC runs
//!   under a child of the server's root with the client's deadline (capped), as
//!   [`Context::current`](crate::Context::current); it ends when the client cancels or goes
//!   away, and at shutdown; expiry answers `DEADLINE_EXCEEDED`, mid-stream too;
//! - [`ClientLayer`], around a `Channel`: each call made inside a context sends the remaining
//!   budget (or the call's own timeout, if smaller), fails at once if the context is done,
//!   is reset the moment it ends, and names the hop when the callee ran out of time
//!   ([`hop_error`]).
//!
//! A handler that `?`s a context [`Error`](crate::Error) answers with Go's mapping
//! (`DEADLINE_EXCEEDED`, `CANCELLED`): `Status` implements `From<Error>`.
//!
//! # Example
//!
//! A server whose handler waits on its context, and a client with a 50 ms budget, over
//! loopback: the budget travels as `grpc-timeout`, the handler's context expires, and the
//! call ends with `DEADLINE_EXCEEDED`.
//!
//! ```
//! use std::{convert::Infallible, future::Future, pin::Pin, time::Duration};
//! use ctx_core::{Context, http::grpc::{ClientLayer, ServerLayer}};
//! use tonic::{Code, body::Body, server::NamedService};
//!
//! /// A raw gRPC service (tonic-build generates these): it reports the deadline it was
//! /// given, then waits for its context to end.
//! #[derive(Clone)]
//! struct Slow(tokio::sync::mpsc::UnboundedSender<Option<Duration>>);
//!
//! impl NamedService for Slow {
//!     const NAME: &'static str = "demo.Slow";
//! }
//!
//! impl tower::Service<http::Request<Body>> for Slow {
//!     type Response = http::Response<Body>;
//!     type Error = Infallible;
//!     type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
//!
//!     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
//!         std::task::Poll::Ready(Ok(()))
//!     }
//!
//!     fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
//!         let ctx = Context::current(); // the RPC's context, from the layer
//!         let budget = ctx.deadline().map(|d| d.saturating_duration_since(std::time::Instant::now()));
//!         self.0.send(budget).unwrap();
//!         Box::pin(async move {
//!             ctx.done().await; // the layer answers DEADLINE_EXCEEDED for us
//!             unreachable!("dropped when the context ends")
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! let (seen, mut budgets) = tokio::sync::mpsc::unbounded_channel();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let root = Context::background().with_cancel(); // cancel it to shut down
//! let serving = root.context().clone();
//! let server = tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .layer(ServerLayer::new(&root).max_timeout(Duration::from_secs(10)))
//!         .add_service(Slow(seen))
//!         .serve_with_incoming_shutdown(
//!             tonic::transport::server::TcpIncoming::from(listener),
//!             async move { serving.done().await; },
//!         ),
//! );
//!
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
//!     .unwrap()
//!     .connect_lazy();
//! let channel = tower::ServiceBuilder::new().layer(ClientLayer::new()).service(channel);
//! let mut client = tonic::client::Grpc::new(channel);
//!
//! let request = Context::background().with_timeout(Duration::from_millis(50));
//! let status = request
//!     .scope(async {
//!         client.ready().await.unwrap();
//!         let codec = tonic_prost::ProstCodec::<(), ()>::default();
//!         let path = "/demo.Slow/Wait".parse().unwrap();
//!         client.unary(tonic::Request::new(()), path, codec).await
//!     })
//!     .await
//!     .unwrap_err();
//! assert_eq!(status.code(), Code::DeadlineExceeded);
//! let budget = budgets.recv().await.unwrap().unwrap();
//! assert!(budget <= Duration::from_millis(50) && budget > Duration::from_millis(10), "{budget:?}");
//!
//! root.cancel(); // shutdown: in-flight RPCs are cancelled, then the server drains
//! server.await.unwrap().unwrap();
//! # });
//! ```

mod client;
mod server;
mod status;

pub use client::{ClientBody, ClientFuture, ClientLayer, ClientService};
pub use server::{ServerBody, ServerFuture, ServerLayer, ServerService};
pub use status::hop_error;
