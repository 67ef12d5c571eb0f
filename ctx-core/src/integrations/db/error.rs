//! [`Error`]: why database work under a context returned no result.

use std::fmt;

/// Why `db::sqlite::run`, `db::postgres::run` or a `db::sqlx` `run` returned no result: the
/// context ended first, or the database (or the pool) failed.
///
/// [`context_error`](Error::context_error) tells the two apart, so a handler can answer a
/// timeout as a timeout whatever database it used:
///
/// ```
/// use ctx_core::db;
///
/// fn status(err: &db::Error) -> u16 {
///     match err.context_error() {
///         Some(ctx_core::Error::DeadlineExceeded) => 504,
///         Some(_) => 499, // the client went away
///         None => 500,
///     }
/// }
/// assert_eq!(status(&db::Error::Context(ctx_core::Error::DeadlineExceeded)), 504);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The context ended before the work did (or before it started): the statement was
    /// interrupted, or the query cancelled on the server and its connection discarded.
    Context(crate::Error),
    /// SQLite reported an error that the context's end did not cause.
    #[cfg(feature = "sqlite")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL (or the connection to it) reported an error that the context's end did
    /// not cause; also a failure to open a connection for the pool.
    #[cfg(feature = "postgres")]
    Postgres(tokio_postgres::Error),
    /// The connection pool gave no connection: it timed out (its own `wait` timeout),
    /// was closed, or a hook failed. (A failure to connect is [`Error::Postgres`].)
    #[cfg(feature = "postgres")]
    Pool(deadpool_postgres::PoolError),
    /// sqlx reported an error that the context's end did not cause (features `sqlx-sqlite`,
    /// `sqlx-postgres`): the database's, the connection's, or the pool's.
    #[cfg(any(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]
    Sqlx(sqlx::Error),
}

impl Error {
    /// The context's error if that is why the work stopped, else `None`.
    pub fn context_error(&self) -> Option<crate::Error> {
        match self {
            Error::Context(err) => Some(*err),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Context(err) => write!(f, "database work stopped: {err}"),
            #[cfg(feature = "sqlite")]
            Error::Sqlite(err) => write!(f, "sqlite: {err}"),
            #[cfg(feature = "postgres")]
            Error::Postgres(err) => write!(f, "postgres: {err}"),
            #[cfg(feature = "postgres")]
            Error::Pool(err) => write!(f, "connection pool: {err}"),
            #[cfg(any(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]
            Error::Sqlx(err) => write!(f, "sqlx: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Context(err) => Some(err),
            #[cfg(feature = "sqlite")]
            Error::Sqlite(err) => Some(err),
            #[cfg(feature = "postgres")]
            Error::Postgres(err) => Some(err),
            #[cfg(feature = "postgres")]
            Error::Pool(err) => Some(err),
            #[cfg(any(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]
            Error::Sqlx(err) => Some(err),
        }
    }
}

impl From<crate::Error> for Error {
    fn from(err: crate::Error) -> Error {
        Error::Context(err)
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        Error::Sqlite(err)
    }
}

#[cfg(feature = "postgres")]
impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Error {
        Error::Postgres(err)
    }
}

#[cfg(feature = "postgres")]
impl From<deadpool_postgres::PoolError> for Error {
    /// A pool's failure to connect becomes [`Error::Postgres`]; the rest [`Error::Pool`].
    fn from(err: deadpool_postgres::PoolError) -> Error {
        match err {
            deadpool_postgres::PoolError::Backend(err) => Error::Postgres(err),
            other => Error::Pool(other),
        }
    }
}

#[cfg(any(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Error {
        Error::Sqlx(err)
    }
}
