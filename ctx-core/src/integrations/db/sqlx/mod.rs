//! Query cancellation for [sqlx](https://docs.rs/sqlx/0.8) 0.8: [`sqlite::run`] (feature
//! `sqlx-sqlite`) and [`postgres::run`] (feature `sqlx-postgres`), with what `db::sqlite`
//! and `db::postgres` promise for rusqlite and tokio-postgres.
//!
//! | | `sqlx::sqlite::run` | `sqlx::postgres::run` |
//! | --- | --- | --- |
//! | stops the work with | `sqlite3_interrupt` on the connection's raw handle | `pg_cancel_backend(pid)` from another connection |
//! | the call returns | when the statement has stopped | at once |
//! | a late stop signal | cannot happen: every interrupt is issued before `run` returns | cannot reach anyone: the connection is held until the server confirms the cancel ended its query, else closed |
//! | the connection after a stop | reused | back to the pool once confirmed, in the background; else closed |
//!
//! Both return [`Error`](super::Error); sqlx's own errors are
//! [`Error::Sqlx`](super::Error::Sqlx). The sqlx version ctx-core uses is re-exported as
//! [`sqlx`](self::sqlx): name types through it, or depend on `sqlx = "0.8"` (cargo unifies
//! the two).

pub use sqlx;

#[cfg(feature = "sqlx-postgres")]
pub mod postgres;
#[cfg(feature = "sqlx-sqlite")]
pub mod sqlite;
