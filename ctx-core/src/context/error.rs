//! Why a context ended: the [`Error`] every waiter sees, and the richer [`Cause`] the
//! canceller may attach.

use std::error::Error as StdError;
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

/// Why a context is done: the value of [`Context::err`](crate::Context::err).
///
/// Like Go's `context.Canceled` and `context.DeadlineExceeded`. More detail, when the
/// canceller gave any, is in [`Context::cause`](crate::Context::cause).
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Error};
///
/// let scope = Context::background().with_cancel();
/// let ctx = scope.context().clone();
/// scope.cancel();
/// assert_eq!(ctx.err(), Some(Error::Cancelled));
/// assert_eq!(Error::DeadlineExceeded.to_string(), "context deadline exceeded");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The context was cancelled: its [`CancelScope`](crate::CancelScope) or
    /// [`CancelHandle`](crate::CancelHandle) was cancelled or dropped, or an ancestor's was.
    Cancelled,
    /// The context's deadline (or an ancestor's) passed.
    DeadlineExceeded,
}

impl Error {
    /// Whether this is [`Error::DeadlineExceeded`]; mirrors Go's `Timeout() bool`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Cancelled => "context cancelled",
            Error::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl StdError for Error {}

impl From<Error> for std::io::Error {
    /// `DeadlineExceeded` becomes [`ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut),
    /// `Cancelled` [`ErrorKind::Other`](std::io::ErrorKind::Other); the `Error` is kept as
    /// the inner error so it can be recovered with `get_ref().downcast_ref()`.
    fn from(err: Error) -> Self {
        let kind = match err {
            Error::DeadlineExceeded => std::io::ErrorKind::TimedOut,
            Error::Cancelled => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

/// The reason a context was cancelled, as given by the canceller: Go's `context.Cause`.
///
/// Cheap to clone (a reference count at most). A context cancelled without a cause reports
/// its [`Error`] as the cause, which needs no allocation.
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Context, Error};
///
/// let scope = Context::background().with_cancel();
/// let ctx = scope.context().clone();
/// scope.cancel_with("client went away");
/// assert_eq!(ctx.err(), Some(Error::Cancelled));
/// assert_eq!(ctx.cause().unwrap().to_string(), "client went away");
///
/// #[derive(Debug)]
/// struct Overloaded;
/// impl std::fmt::Display for Overloaded {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("overloaded") }
/// }
/// impl std::error::Error for Overloaded {}
/// let cause = Cause::from_error(Overloaded);
/// assert!(cause.downcast_ref::<Overloaded>().is_some());
/// ```
#[derive(Clone)]
pub struct Cause {
    repr: Repr,
    /// Where the context was ended (see [`Cause::location`]); set by the tree.
    location: Option<&'static Location<'static>>,
}

#[derive(Clone)]
enum Repr {
    Context(Error),
    Other(Arc<dyn StdError + Send + Sync + 'static>),
}

/// A cause given as text (`Cause::from("...")`).
#[derive(Debug)]
struct Message(Box<str>);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

impl Cause {
    fn new(repr: Repr) -> Cause {
        Cause {
            repr,
            location: None,
        }
    }

    /// This cause, as reported for a context ended at `location`.
    pub(in crate::context) fn at(mut self, location: Option<&'static Location<'static>>) -> Cause {
        self.location = location;
        self
    }

    /// Where the context was ended: the `cancel`/`cancel_with` call; for a scope that was
    /// dropped, the call that created it; for a deadline that fired, the call that set it.
    /// What the integrations end on your behalf names your line, never one of ctx's: a
    /// request's deadline or its client's disconnect, the line that built the server layer
    /// (`ContextLayer::new`, `grpc::ServerLayer::new`); a signal, the line that called
    /// `signal::notify` or made the `Shutdown` (`Shutdown::request`: that call). A library
    /// of your own does the same with [`Context::with_cancel_at`](crate::Context::with_cancel_at)
    /// and its siblings.
    /// `None` for a cause not (yet) reported by a context.
    ///
    /// The alternate `Display` (`{:#}`) adds it: `client went away (at src/main.rs:12:5)`.
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// let scope = Context::background().with_cancel();
    /// let ctx = scope.context().clone();
    /// let line = line!() + 1;
    /// scope.cancel_with("client went away");
    /// let cause = ctx.cause().unwrap();
    /// let at = cause.location().unwrap();
    /// assert_eq!((at.file(), at.line()), (file!(), line));
    /// assert_eq!(cause.to_string(), "client went away");
    /// assert_eq!(format!("{cause:#}"), format!("client went away (at {at})"));
    /// ```
    pub fn location(&self) -> Option<&'static Location<'static>> {
        self.location
    }

    /// Wraps any error as a cause.
    pub fn from_error<E: StdError + Send + Sync + 'static>(err: E) -> Cause {
        Cause::new(Repr::Other(Arc::new(err)))
    }

    /// The cause as a `std::error::Error` trait object.
    pub fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match &self.repr {
            Repr::Context(err) => err,
            Repr::Other(err) => &**err,
        }
    }

    /// The cause as a `T`, if that is its type. A plain cancel's cause is an [`Error`].
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.as_error().downcast_ref::<T>()
    }

    /// Whether the cause is a `T`.
    pub fn is<T: StdError + 'static>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }
}

/// The cause's own text; with `{:#}`, followed by where the context was ended.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)?;
        match self.location {
            Some(at) if f.alternate() => write!(f, " (at {at})"),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Context(err) => f.debug_tuple("Cause").field(err).finish(),
            Repr::Other(err) => f.debug_tuple("Cause").field(err).finish(),
        }
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.as_error().source()
    }
}

/// Two causes are equal when they are the same [`Error`], the same text given with
/// `Cause::from(&str)`/`String`, or clones of one cause.
impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Context(a), Repr::Context(b)) => a == b,
            (Repr::Other(a), Repr::Other(b)) => {
                Arc::ptr_eq(a, b)
                    || matches!(
                        (a.downcast_ref::<Message>(), b.downcast_ref::<Message>()),
                        (Some(a), Some(b)) if a.0 == b.0
                    )
            }
            _ => false,
        }
    }
}

impl PartialEq<Error> for Cause {
    fn eq(&self, other: &Error) -> bool {
        matches!(&self.repr, Repr::Context(err) if err == other)
    }
}

impl From<Error> for Cause {
    fn from(err: Error) -> Cause {
        Cause::new(Repr::Context(err))
    }
}

impl From<&str> for Cause {
    fn from(text: &str) -> Cause {
        Cause::from_error(Message(text.into()))
    }
}

impl From<String> for Cause {
    fn from(text: String) -> Cause {
        Cause::from_error(Message(text.into_boxed_str()))
    }
}

impl From<Box<dyn StdError + Send + Sync + 'static>> for Cause {
    fn from(err: Box<dyn StdError + Send + Sync + 'static>) -> Cause {
        Cause::new(Repr::Other(Arc::from(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(Error::Cancelled.to_string(), "context cancelled");
        assert_eq!(
            Error::DeadlineExceeded.to_string(),
            "context deadline exceeded"
        );
        assert!(Error::DeadlineExceeded.is_timeout());
        assert!(!Error::Cancelled.is_timeout());
    }

    #[test]
    fn io_error_kinds() {
        let io: std::io::Error = Error::DeadlineExceeded.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(
            io.get_ref().unwrap().downcast_ref::<Error>(),
            Some(&Error::DeadlineExceeded)
        );
        let io: std::io::Error = Error::Cancelled.into();
        assert_eq!(io.kind(), std::io::ErrorKind::Other);
    }

    #[test]
    fn cause_equality_and_downcast() {
        assert_eq!(Cause::from(Error::Cancelled), Error::Cancelled);
        assert_eq!(Cause::from("x"), Cause::from(String::from("x")));
        assert_ne!(Cause::from("x"), Cause::from("y"));
        assert_ne!(Cause::from("x"), Cause::from(Error::Cancelled));
        let io = Cause::from_error(std::io::Error::other("disk"));
        assert_eq!(io, io.clone());
        assert_eq!(
            io.downcast_ref::<std::io::Error>().unwrap().to_string(),
            "disk"
        );
        assert!(Cause::from(Error::DeadlineExceeded).is::<Error>());
        assert_eq!(
            format!("{:?}", Cause::from("boom")),
            "Cause(Message(\"boom\"))"
        );
    }
}
