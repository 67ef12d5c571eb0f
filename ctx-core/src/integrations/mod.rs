//! Integrations with the ecosystem, one module per feature, each built on ctx-core's public
//! API only (as tokio-util is on tokio's): nothing here can reach the tree, which is private
//! to `crate::context`.
//!
//! | module | feature | gives |
//! | --- | --- | --- |
//! | `tokio` | `tokio` | [`Group`](crate::Group), [`spawn`](crate::spawn), [`signal`](crate::signal), [`process`](crate::process) |
//! | `http` | `tower` (`axum`) | [`http::ContextLayer`](crate::http::ContextLayer), [`http::PropagateDeadlineLayer`](crate::http::PropagateDeadlineLayer), the `grpc-timeout` codec, [`http::baggage`](crate::http::baggage), the axum extractor; [`http::grpc`](crate::http::grpc) (`tonic`); [`http::DeadlineMiddleware`](crate::http::DeadlineMiddleware) (`reqwest`) |
//! | `db` | `sqlite`, `postgres` | [`db::sqlite::run`](crate::db::sqlite::run), [`db::postgres::run`](crate::db::postgres::run): queries stopped on the database |
//! | `trace` | `tracing` | [`trace::span!`](crate::trace::span), [`trace::traced`](crate::trace::traced): spans with a context's budget and end |

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod db;
#[cfg(feature = "tower")]
pub mod http;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "tracing")]
pub mod trace;
