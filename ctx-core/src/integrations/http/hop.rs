//! [`HopError`]: a call to the next hop ended by a context, named by what it called.

use std::fmt;

use crate::Error;

/// Which side ended a call: where the budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The caller's own context ended (or was already done, and the call was never sent).
    Local,
    /// The callee answered that its deadline passed (gRPC `DEADLINE_EXCEEDED`): the budget
    /// ran out at that hop or beyond it.
    Downstream,
}

/// A call to another hop that a context ended: the context [`Error`] it amounts to, what was
/// called (`method`: a gRPC method path such as `/ctx.relay.v1.Relay/Forward`, or
/// `GET /path` for HTTP) and where (`authority`: `host:port`), so that a log line says
/// where the budget ran out.
///
/// The client layers return it as the source of their errors: the
/// [`tonic::Status`](https://docs.rs/tonic/latest/tonic/struct.Status.html) of
/// [`grpc::ClientLayer`](crate::http::grpc::ClientLayer) (see
/// [`grpc::hop_error`](crate::http::grpc::hop_error)), the middleware error of
/// [`DeadlineMiddleware`](crate::http::DeadlineMiddleware). Wrap it in a
/// [`Cause`](crate::Cause) to cancel with it: `scope.cancel_with(Cause::from_error(hop))`.
///
/// ```
/// use ctx_core::Error;
/// use ctx_core::http::{HopError, Origin};
///
/// let hop = HopError::new(
///     Error::DeadlineExceeded,
///     Origin::Downstream,
///     "/ctx.relay.v1.Relay/Forward",
///     "127.0.0.1:50051",
/// );
/// assert_eq!(hop.error(), Error::DeadlineExceeded);
/// assert_eq!(
///     hop.to_string(),
///     "deadline exceeded downstream of /ctx.relay.v1.Relay/Forward on 127.0.0.1:50051"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopError {
    error: Error,
    origin: Origin,
    method: String,
    authority: String,
}

impl HopError {
    /// A call to `method` on `authority` ended with `error`, on the `origin` side.
    pub fn new(
        error: Error,
        origin: Origin,
        method: impl Into<String>,
        authority: impl Into<String>,
    ) -> HopError {
        HopError {
            error,
            origin,
            method: method.into(),
            authority: authority.into(),
        }
    }

    /// The context error this amounts to: [`Error::DeadlineExceeded`] or [`Error::Cancelled`].
    pub fn error(&self) -> Error {
        self.error
    }

    /// Whether the caller's context ended the call or the callee reported its deadline.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// What was called: a gRPC method path, or an HTTP method and path.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Where: the callee's `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The [`HopError`] in `err` or among its sources, however deeply wrapped: in a
    /// `tonic::Status`, an `anyhow::Error` (pass `&*err`), a `reqwest_middleware::Error`
    /// (whose middleware variant hides its error from `source()`: it is looked into), or
    /// any error of your own whose `source()` leads to one.
    ///
    /// ```
    /// use ctx_core::{Error, http::{HopError, Origin}};
    ///
    /// #[derive(Debug)]
    /// struct Lookup(HopError);
    /// impl std::fmt::Display for Lookup {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("user lookup failed")
    ///     }
    /// }
    /// impl std::error::Error for Lookup {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         Some(&self.0)
    ///     }
    /// }
    ///
    /// let err = Lookup(HopError::new(Error::DeadlineExceeded, Origin::Local, "GET /u", "db:80"));
    /// let hop = HopError::find(&err).unwrap();
    /// assert_eq!(hop.authority(), "db:80");
    /// assert!(HopError::find(&std::fmt::Error).is_none());
    /// ```
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a HopError> {
        let mut next = Some(err);
        while let Some(err) = next {
            if let Some(hop) = err.downcast_ref::<HopError>() {
                return Some(hop);
            }
            #[cfg(feature = "reqwest")]
            if let Some(reqwest_middleware::Error::Middleware(inner)) =
                err.downcast_ref::<reqwest_middleware::Error>()
            {
                // `#[error(transparent)]`: its `source()` skips the middleware's own error.
                let inner: &(dyn std::error::Error + 'static) = &**inner;
                if let Some(hop) = HopError::find(inner) {
                    return Some(hop);
                }
            }
            next = err.source();
        }
        None
    }
}

impl fmt::Display for HopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.error {
            Error::DeadlineExceeded => "deadline exceeded",
            _ => "cancelled",
        };
        match self.origin {
            Origin::Local => write!(f, "context {what} calling {}", self.method)?,
            Origin::Downstream => write!(f, "{what} downstream of {}", self.method)?,
        }
        if !self.authority.is_empty() {
            write!(f, " on {}", self.authority)?;
        }
        Ok(())
    }
}

impl std::error::Error for HopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
