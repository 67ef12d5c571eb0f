//! Items the macros' generated code uses. Not public API: no stability promise, hidden from
//! the docs. Generated code names them as `::ctx_core::__private::...` (or
//! `<crate>::__private::...` with `crate = "..."`), never through the user's imports.
//!
//! The `#[diagnostic::on_unimplemented]` traits here are how a misuse the macro cannot see
//! syntactically (a return type that is not a `Result`, an error type without
//! `From<ctx_core::Error>`, a parameter called `ctx` that is not a context, a key field that
//! is not `Send + Sync`) becomes one error that names the fix, at the user's token.

use std::fmt;
use std::marker::PhantomData;

pub use std::future::Future;
pub use std::time::{Duration, Instant};

pub use crate::{CancelScope, Context, ContextKey, Error, Run, Scoped};

use crate::context::tree::Core;

// ---------------------------------------------------------------------------------------
// Deriving the child, when the function is called.

/// The ambient context: the parent in derive mode.
#[inline]
pub fn current() -> Context {
    Context::current()
}

/// The parent in accept mode: the `&Context` or `Context` parameter.
#[inline]
pub fn parent<P: AsParent + ?Sized>(param: &P) -> &Context {
    param.as_parent()
}

/// A context parameter of a `#[cancellable]` function.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `ctx_core::Context`, but `#[cancellable]` takes this parameter as the parent context",
    label = "expected `&Context` or `Context` (ctx_core's)",
    note = "`#[cancellable]` treats a parameter named `ctx`, or typed `Context` / `&Context`, as the parent context",
    note = "rename this parameter, or name the real context parameter with `#[cancellable(ctx = name)]`"
)]
pub trait AsParent {
    /// The context.
    fn as_parent(&self) -> &Context;
}

impl AsParent for Context {
    #[inline]
    fn as_parent(&self) -> &Context {
        self
    }
}

#[diagnostic::do_not_recommend]
impl<T: AsParent + ?Sized> AsParent for &T {
    #[inline]
    fn as_parent(&self) -> &Context {
        (**self).as_parent()
    }
}

/// `with_cancel`.
#[inline]
#[track_caller]
pub fn child(parent: &Context) -> CancelScope {
    parent.with_cancel()
}

/// `with_timeout`.
#[inline]
#[track_caller]
pub fn child_timeout(parent: &Context, timeout: impl TimeoutArg) -> CancelScope {
    parent.with_timeout(timeout.duration())
}

/// `with_deadline`.
#[inline]
#[track_caller]
pub fn child_deadline(parent: &Context, deadline: impl DeadlineArg) -> CancelScope {
    parent.with_deadline(deadline.instant())
}

/// The value of `timeout = <expr>`: a `Duration`.
#[diagnostic::on_unimplemented(
    message = "`timeout = ...` takes a `std::time::Duration`, not `{Self}`",
    label = "not a `Duration`",
    note = "write a `Duration` (`Duration::from_secs(n)`, `Duration::from_millis(n)`), or a Go duration string such as `timeout = \"30s\"`"
)]
pub trait TimeoutArg {
    /// The duration.
    fn duration(self) -> Duration;
}

impl TimeoutArg for Duration {
    #[inline(always)]
    fn duration(self) -> Duration {
        self
    }
}

/// The value of `deadline = <expr>`: an `Instant`.
#[diagnostic::on_unimplemented(
    message = "`deadline = ...` takes a `std::time::Instant`, not `{Self}`",
    label = "not an `Instant`",
    note = "write an `Instant` (`Instant::now() + Duration::from_secs(n)`), or `timeout = ...` for a duration counted from the call"
)]
pub trait DeadlineArg {
    /// The instant.
    fn instant(self) -> Instant;
}

impl DeadlineArg for Instant {
    #[inline(always)]
    fn instant(self) -> Instant {
        self
    }
}

/// Makes an `impl Future` returned by a rewritten `async fn` capture the lifetimes in `T`
/// (`(&'a (), &'b ())`), as the `async fn`'s own future does, on editions before 2024
/// too. Every type implements it, so it promises nothing else.
pub trait Captures<T: ?Sized> {}

impl<T: ?Sized, U: ?Sized> Captures<T> for U {}

// ---------------------------------------------------------------------------------------
// Running the body under the child.

/// Checks that the function returns `Result<T, E>` with `E: From<Error>`, and gives the
/// way to build its `Err` from an [`Error`]. Generated code calls this with the return type
/// as written (`returns::<Result<T, E>>()`, every token at the return type), so a failed
/// check is reported there; with `impl Trait` in the return type, `R` is inferred.
#[inline(always)]
pub fn returns<R: CancellableReturn>() -> fn(Error) -> R {
    R::from_cancelled
}

/// Runs a sync body with the child as `Context::current()`.
#[inline]
pub fn enter<'s, R>(
    scope: &'s CancelScope,
    returns: fn(Error) -> R,
    body: impl FnOnce(Child<'s, R>) -> R,
) -> R {
    let child = child_of(scope, returns);
    scope.context().enter(|| body(child))
}

/// Polls an async body with the child as `Context::current()`, on every poll.
#[inline]
pub fn scoped<F: Future>(ctx: Context, body: F) -> Scoped<F> {
    Scoped::new(ctx, body)
}

/// The child as the body sees it: its context, its state resolved once (so a loop
/// checkpoint is a single atomic load), and how to build the function's `Err` from an
/// [`Error`]. `R` is the function's return type.
pub struct Child<'a, R> {
    ctx: &'a Context,
    core: &'a Core,
    cancelled: fn(Error) -> R,
    _returns: PhantomData<fn() -> R>,
}

/// Resolves the child (for an async body; [`enter`] does it for a sync one).
#[inline]
pub fn child_of<R>(scope: &CancelScope, returns: fn(Error) -> R) -> Child<'_, R> {
    let Some(core) = scope.context().core() else {
        unreachable!("a CancelScope's context has a core");
    };
    Child {
        ctx: scope.context(),
        core,
        cancelled: returns,
        _returns: PhantomData,
    }
}

impl<'a, R> Child<'a, R> {
    /// The derived context.
    #[inline(always)]
    pub fn context(self) -> &'a Context {
        self.ctx
    }

    /// A loop checkpoint: `Some(Err(..))` to return once the context is done. One atomic
    /// load while it is not.
    #[inline(always)]
    #[cfg_attr(feature = "test-util", track_caller)] // at the loop (`testing`)
    pub fn checkpoint(self) -> Option<R> {
        #[cfg(feature = "test-util")]
        let err = super::tree::explored::check(self.core, self.ctx, std::panic::Location::caller());
        #[cfg(not(feature = "test-util"))]
        let err = self.core.err();
        err.map(|err| self.cancelled(err))
    }

    /// The function's return value for a context that ended with `err`.
    #[cold]
    #[inline(never)]
    pub fn cancelled(self, err: Error) -> R {
        (self.cancelled)(err)
    }

    /// An `.await` raced against the context.
    #[inline]
    #[cfg_attr(feature = "test-util", track_caller)] // at the `.await` (`testing`)
    pub fn run<F: std::future::IntoFuture>(self, future: F) -> Run<'a, F::IntoFuture> {
        self.ctx.run(future)
    }
}

impl<R> Clone for Child<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Child<'_, R> {}

impl<R> fmt::Debug for Child<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Child").field(self.ctx).finish()
    }
}

/// The return type of a `#[cancellable]` function.
#[diagnostic::on_unimplemented(
    message = "`#[cancellable]` function must return `Result<_, E>` with `E: From<ctx_core::Error>`, not `{Self}`",
    label = "not a `Result`",
    note = "a cancelled `#[cancellable]` function returns `Err(From::from(ctx_core::Error))` from its checkpoints",
    note = "return `Result<T, E>`, e.g. `Result<{Self}, ctx_core::Error>`, or use `Context::current()` in a function without `#[cancellable]`"
)]
pub trait CancellableReturn: Sized {
    /// `Err(From::from(err))`.
    fn from_cancelled(err: Error) -> Self;
}

impl<T, E: CancellableError> CancellableReturn for Result<T, E> {
    #[inline]
    fn from_cancelled(err: Error) -> Self {
        Err(E::from_context_error(err))
    }
}

/// The error type of a `#[cancellable]` function.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` of a `#[cancellable]` function must implement `From<ctx_core::Error>`",
    label = "`{Self}` does not implement `From<ctx_core::Error>`",
    note = "a cancelled `#[cancellable]` function returns `Err(From::from(ctx_core::Error))`",
    note = "add `impl From<ctx_core::Error> for {Self}` (e.g. a `Cancelled` variant), or return an error type that has it: `ctx_core::Error`, `std::io::Error`, `Box<dyn std::error::Error + Send + Sync>`, `anyhow::Error`"
)]
pub trait CancellableError {
    /// `From::from(err)`.
    fn from_context_error(err: Error) -> Self;
}

#[diagnostic::do_not_recommend]
impl<E: From<Error>> CancellableError for E {
    #[inline]
    fn from_context_error(err: Error) -> Self {
        E::from(err)
    }
}

// ---------------------------------------------------------------------------------------
// #[derive(ContextKey)]

/// Generated code calls this once per field of a key type, spanned at the field's type.
#[inline(always)]
pub fn assert_key_field<T: KeyField + ?Sized>() {}

/// A field of a context key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be shared between threads, so it cannot be a field of a context key",
    label = "this field is not `Send + Sync`",
    note = "a context and its values are read from any thread: every field of a `#[derive(ContextKey)]` type must be `Send + Sync + 'static`",
    note = "use `Arc` instead of `Rc`, `Mutex`, `RwLock` or atomics instead of `Cell` and `RefCell`"
)]
pub trait KeyField {}

#[diagnostic::do_not_recommend]
impl<T: Send + Sync + 'static + ?Sized> KeyField for T {}
