//! Attribute and derive macros for [`ctx_core`]: [`macro@cancellable`] and
//! [`derive@ContextKey`].
//!
//! Use them through `ctx_core` (feature `macros`, on by default), which re-exports both. The
//! generated code names everything it needs as `::ctx_core::__private::...` (or
//! `<crate>::__private::...` with `crate = "..."`), so it works whatever the user imported,
//! and it is the same on every edition (2018, 2021, 2024).
//!
//! Besides running a function under its own child context, `#[cancellable]` rejects at
//! compile time what would quietly break the context chain (Go's `contextcheck` linter): a
//! body that starts a new root with `Context::background()`, `Context::todo()` or
//! `Context::default()`, and an async body that blocks its executor thread with
//! `std::thread::sleep` or `ctx.wait()`. See [the rules and their
//! limits](macro@cancellable#the-context-chain).
//!
//! Each macro is a pipeline, as thiserror's: parse (the arguments with darling, the item
//! into its shape) → validate (every check, every error collected) → expand; on any error,
//! a fallback emits the errors and the item (for the derive, a stub impl), so the errors are
//! the only ones the user sees.
//!
//! [`ctx_core`]: https://docs.rs/ctx-core

#![warn(missing_docs)]

mod cancellable;
mod common;
mod context_key;
mod duration;
mod fallback;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Runs a function under its own child context: derived when the function is called,
/// `Context::current()` for the whole body, cancelled on every exit, and checked at every
/// loop iteration and every `.await`.
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, Error, cancellable};
///
/// #[cancellable(timeout = "50ms")]
/// fn crunch(rows: &[u64]) -> Result<u64, Error> {
///     let mut total = 0;
///     for row in rows {
///         // <- a checkpoint here: returns Err(Error::DeadlineExceeded) once 50ms have passed
///         std::thread::sleep(Duration::from_millis(1));
///         total += row;
///     }
///     Ok(total)
/// }
///
/// assert_eq!(crunch(&[1, 2, 3]), Ok(6));
/// assert_eq!(crunch(&[1; 1_000]), Err(Error::DeadlineExceeded));
/// ```
///
/// # Accept or derive
///
/// The parent of the child is
/// - **accept**: the parameter of type `&Context` or `Context` (a path ending in `Context`),
///   or the one named by `ctx = name`. Inside the body that parameter's name refers to the
///   *child* (same type), so passing `ctx` on hands callees the deadline.
/// - **derive**: with no such parameter, `Context::current()` at the moment of the call.
///
/// Either way the child is `Context::current()` for the body (for async bodies, on every
/// poll), so nested `#[cancellable]` functions, and plain `Context::current()` calls, inherit
/// its deadline and cancellation:
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, Error, cancellable};
///
/// #[cancellable(timeout = "1h")]
/// fn outer(ctx: &Context) -> Result<bool, Error> {
///     inner() // derives from `ctx`, the child, through `Context::current()`
/// }
///
/// #[cancellable]
/// fn inner() -> Result<bool, Error> {
///     Ok(Context::current().deadline().is_some())
/// }
///
/// assert_eq!(outer(&Context::background()), Ok(true));
/// assert_eq!(inner(), Ok(false));
/// ```
///
/// # Arguments
///
/// | argument | meaning |
/// | --- | --- |
/// | `timeout = "1m30s"` | `with_timeout`, a Go `time.ParseDuration` string (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, fractions such as `"1.5h"`, sums such as `"1h30m"`), checked at compile time; must be positive |
/// | `timeout = <expr>` | `with_timeout(<expr>)`, an expression of type `Duration`; it may use the parameters |
/// | `deadline = <expr>` | `with_deadline(<expr>)`, an expression of type `Instant` |
/// | (neither) | `with_cancel()` |
/// | `ctx = name` | the parameter `name` is the parent (when the type does not say so, or there are two) |
/// | `checkpoints = "all"` | what to insert: `"all"` (the default), `"loops"`, `"awaits"` or `"none"` |
/// | `crate = "::path"` | where `ctx_core` is, for crates that re-export it; must be absolute (`::a::b` or `crate::a`) |
/// | `allow_detached` | the body may start a new context tree or spawn a task without its context (see [the context chain](#the-context-chain)) |
/// | `allow_blocking` | an async body may block its thread (see [blocking](#blocking-in-async-bodies)) |
///
/// A parent deadline earlier than the child's stands, as in Go.
///
/// # Checkpoints
///
/// - Every `loop`, `while`, `while let` and `for` body (labeled or not, `break value` or not)
///   begins with a checkpoint: once the child is done, the function returns
///   `Err(From::from(error))`, where `error` is `Error::Cancelled` or
///   `Error::DeadlineExceeded`. A checkpoint is one atomic load.
/// - Every `.await` in the body races its future against the child: when the child ends
///   first, the future is dropped on the spot and the function returns the same error.
///
/// Left alone, each for a reason: closures and async blocks (a `return` there would leave
/// them, not the function), nested items (other functions), macro invocations such as
/// `select!` (their tokens are not parsed), and const contexts.
///
/// # Return type
///
/// The function must return `Result<T, E>` with `E: From<ctx_core::Error>`, even when its
/// body has no checkpoint: `ctx_core::Error`, `std::io::Error`, `Box<dyn Error + Send +
/// Sync>`, or your own error with a `From` impl. Type aliases such as `io::Result<T>` work.
///
/// # Every exit cancels
///
/// The child's `CancelScope` lives until the body is done, so it is cancelled (and with it
/// anything derived from it: spawned work holding the child) when the function returns
/// normally, returns early, leaves with `?`, or panics; for an `async fn`, when its future
/// completes or is dropped.
///
/// # Functions of every shape, on every edition
///
/// Sync and `async`, free functions, inherent and trait-impl methods with any receiver
/// (`self`, `&self`, `&mut self`, `self: Arc<Self>`, `self: Pin<&mut Self>`), trait methods
/// with a default body, generics, lifetimes, `where` clauses, `impl Trait` in arguments and
/// return type (`-> Result<impl Iterator<Item = T>, E>`), `unsafe fn`, and methods of an
/// `#[async_trait]` impl (put `#[cancellable]` on the method, `#[async_trait]` on the impl);
/// in crates on edition 2018, 2021 or 2024 alike.
///
/// An `async fn` becomes a `fn` returning `impl Future<Output = ...>`: the parent is read
/// and the child derived when the function is called (as `#[tracing::instrument]` does for
/// a function that returns a future), not at the first poll, so the timeout counts from the
/// call. The future is `Send` whenever the original `async fn`'s would be, it takes ownership
/// of the parameters as an `async fn` does, and it captures every lifetime of the parameters
/// as an `async fn`'s future does: the rewrite names the elided ones (`&self` becomes
/// `&'__ctx0 self`) and lists them in a bound every type meets (`+ Captures<(&'__ctx0 (),)>`),
/// because before edition 2024 an `impl Future` return would not capture them (E0700).
///
/// One shape it cannot name: a lifetime hidden in a path, with no token to rewrite
/// (`Cow<str>` for `Cow<'_, str>`, `Formatter` for `Formatter<'_>`). On editions 2018 and
/// 2021, an async function with such a parameter fails with E0700; write the lifetime out,
/// `Cow<'_, str>` (the `elided_lifetimes_in_paths` lint finds them). On 2024 it compiles.
///
/// ```
/// use ctx_core::{Context, Error, cancellable};
///
/// struct Store(Vec<u32>);
///
/// impl Store {
///     #[cancellable(timeout = "5s")]
///     async fn sum(&self, ctx: &Context) -> Result<u32, Error> {
///         let mut total = 0;
///         for row in &self.0 {
///             total += ctx.run(async { *row }).await?; // and the `.await` races `ctx`
///         }
///         Ok(total)
///     }
/// }
///
/// fn assert_send<T: Send>(_: &T) {}
///
/// let store = Store(vec![1, 2, 3]);
/// let ctx = Context::background();
/// let future = store.sum(&ctx); // the child is derived here
/// assert_send(&future);
/// assert_eq!(futures::executor::block_on(future), Ok(6));
/// ```
///
/// # The context chain
///
/// A `#[cancellable]` function exists to hand its caller's deadline and cancellation on to
/// the work it does. Inside its body, starting a new root breaks that chain, so these are
/// compile errors (Go's `contextcheck` linter, done by the compiler), at the call:
///
/// - `Context::background()`, `Context::todo()`, `Context::default()`, in any path spelling
///   (`ctx_core::Context::background()`, `::ctx_core::Context::todo`, passed as a function
///   to `unwrap_or_else`, ...), and `<Context>::default()`, `<Context as Default>::default()`;
/// - `Default::default()` where the code says it makes a context:
///   `let c: Context = Default::default();`.
///
/// The message says what to pass on instead: the context parameter (the derived child), or
/// `Context::current()` in derive mode. To detach on purpose (a job that must outlive the
/// request), either derive a shield, `ctx.without_cancel()`, which keeps the values and drops
/// the deadline and cancellation, or opt the function out with `#[cancellable(allow_detached)]`.
///
/// ```compile_fail
/// use ctx_core::{Context, Error, cancellable};
///
/// #[cancellable(timeout = "1s")]
/// fn lookup(ctx: &Context) -> Result<bool, Error> {
///     Ok(Context::background().is_cancelled()) // error: the caller's deadline no longer reaches it
/// }
/// ```
///
/// Closures and async blocks in the body are checked too (their work is the function's);
/// nested functions are not (they are other functions). Macro arguments are checked when
/// they are comma-separated expressions (`println!`, `vec!`, `assert_eq!`, `join!`);
/// other macro bodies (`select!`) are not Rust expressions until expanded, and are not. The
/// check reads names, not types, so it cannot see through what the body does not spell out:
/// a `use` alias (`use ctx_core::Context as Ctx; Ctx::background()`), a type alias, a helper
/// function that returns a root, or `Default::default()` whose type is only inferred. And
/// another crate's type named `Context` is taken for ctx_core's.
///
/// Spawning breaks the chain too: tokio's task-locals do not follow `tokio::spawn`, so a task
/// spawned with it runs under no context (`Context::current()` there is the background), the
/// caller's deadline and cancellation never reach it, and it may outlive the request. These are
/// compile errors, whose message names the fix, `ctx_core::spawn` / `ctx_core::spawn_blocking`
/// (which run the task under the function's context), or `allow_detached` for work meant to
/// outlive the call:
///
/// - `tokio::spawn`, `tokio::task::spawn`, `tokio::task::spawn_blocking`, with or without a
///   leading `::` or a turbofish, called or passed as a function;
/// - `task::spawn` and `task::spawn_blocking` (the spelling after `use tokio::task;`: a module
///   named `task` is taken for tokio's);
/// - a name that a `use` item in the body binds to one of those
///   (`use tokio::task::spawn_blocking;`, `use tokio::task as t;`).
///
/// A spawn that carries a context by hand is not flagged: `tokio::spawn(ctx.scope(fut))`,
/// `spawn_blocking(move || ctx.enter(f))`. A bare `spawn(..)` or `spawn_blocking(..)` imported
/// outside the function is not flagged either
/// (`use ctx_core::spawn_blocking;`, the fix, is spelled the same at the call), nor are method
/// calls such as `Handle::current().spawn(..)` or `JoinSet::spawn`, whose receiver's type the
/// macro cannot know.
///
/// ```compile_fail
/// use ctx_core::{Error, cancellable};
///
/// #[cancellable(timeout = "1s")]
/// async fn refresh() -> Result<(), Error> {
///     tokio::spawn(async {}); // error: spawn with `ctx_core::spawn(..)` instead
///     Ok(())
/// }
/// ```
///
/// # Blocking in async bodies
///
/// An async body runs on an executor thread shared with other tasks. Blocking it stops them
/// all, and no checkpoint can interrupt a blocked thread: the function overruns its deadline
/// by as long as it blocks. So in an async `#[cancellable]` body (an `async fn`, or a method
/// of an `#[async_trait]` impl) these are compile errors:
///
/// - `std::thread::sleep(..)`, `thread::sleep(..)`, `::std::thread::sleep(..)`: sleep with
///   `tokio::time::sleep(..).await` (or your runtime's timer) instead, which the rewrite races
///   against the context, or race any future with `ctx.run(..).await`;
/// - `ctx.wait()` and `ctx.wait_timeout(..)` on the context parameter or on
///   `Context::current()`: await `ctx.done()` instead.
///
/// Async blocks in the body are checked; closures are not (a closure may run on a blocking
/// thread, as with `spawn_blocking(move || std::thread::sleep(d))`); nor are nested
/// functions, nor macro bodies other than comma-separated expressions. Sync bodies may
/// block: their loops are checkpoints. The check sees only these spellings: a `sleep`
/// imported with `use std::thread::sleep`, blocking I/O, locks, and helper functions that
/// block are out of its reach. `#[cancellable(allow_blocking)]` opts a function out.
///
/// # Expansion
///
/// This sync function:
///
/// ```ignore
/// #[cancellable(timeout = "1m30s")]
/// fn sum(ctx: &Context, rows: &[u64]) -> Result<u64, Error> {
///     let mut total = 0;
///     for row in rows {
///         total += row;
///     }
///     Ok(total)
/// }
/// ```
///
/// becomes (with `__private` the hidden module of `ctx_core`, and `__ctx_*` names that the
/// body cannot see):
///
/// ```ignore
/// fn sum(ctx: &Context, rows: &[u64]) -> Result<u64, Error> {
///     let __ctx_scope = __private::child_timeout(__private::parent(&ctx), Duration::new(90, 0));
///     __private::enter(&__ctx_scope, __private::returns::<Result<u64, Error>>(), move |__ctx_child| {
///         let ctx: &Context = __ctx_child.context();
///         {
///             let mut total = 0;
///             for row in rows {
///                 if let Some(r) = __ctx_child.checkpoint() {
///                     return r;
///                 }
///                 total += row;
///             }
///             Ok(total)
///         }
///     })
/// }
/// ```
///
/// `enter` runs the closure with the child as `Context::current()`; `returns::<R>()` is the
/// compile-time check of the return type (its error points at the return type). The closure
/// is `move` so that on edition 2018, where closures capture whole variables, the body can
/// still return what it borrows through a parameter.
///
/// This async function:
///
/// ```ignore
/// #[cancellable]
/// async fn fetch(client: &Client, url: String) -> Result<Vec<u8>, Error> {
///     client.get(&url).await
/// }
/// ```
///
/// becomes:
///
/// ```ignore
/// fn fetch<'__ctx0>(client: &'__ctx0 Client, url: String)
///     -> impl Future<Output = Result<Vec<u8>, Error>> + __private::Captures<(&'__ctx0 (),)>
/// {
///     let __ctx_scope = __private::child(&__private::current()); // at the call
///     __private::scoped(Context::clone(&__ctx_scope), async move {
///         let __ctx_scope = __ctx_scope; // cancelled when the body is done or dropped
///         let __ctx_child = __private::child_of(&__ctx_scope, __private::returns::<Result<Vec<u8>, Error>>());
///         if false {
///             return __ctx_child.cancelled(Error::Cancelled); // fixes the block's output type
///         }
///         let client = client; // moved in, as an `async fn` does
///         let url = url;
///         {
///             match __ctx_child.run(client.get(&url)).await {
///                 Ok(v) => v,
///                 Err(e) => return __ctx_child.cancelled(e),
///             }
///         }
///     })
/// }
/// ```
///
/// `scope` polls the body with the child as `Context::current()`; `run` is
/// `Context::run`, which drops the future when the context ends.
///
/// # Errors
///
/// Each misuse is one compile error that names the fix, at the offending token, and the
/// function is still emitted unchanged beside it (no follow-on errors):
/// a malformed, zero or negative duration, or one without a unit; `timeout` with `deadline`;
/// `deadline` given a string; an unknown or duplicate argument ("did you mean"); a
/// `checkpoints` value that is unknown or not quoted; `allow_detached = ..` with a value;
/// `allow_blocking` on a sync function; a relative `crate` path; `#[cancellable]` twice; a
/// non-function item, a `const fn`, or a trait method without a body; a plain `fn` that
/// returns a future (write `async fn`); no return type, a return type that is not a
/// `Result`, or an error type without `From<ctx_core::Error>`; two context parameters;
/// `ctx = name` naming no parameter, or one that is not a context; a parameter named `ctx`
/// that is not a context, or is `&mut Context`; a body that detaches from the caller's
/// context ([above](#the-context-chain)), or blocks in an async body
/// ([above](#blocking-in-async-bodies)).
#[proc_macro_attribute]
pub fn cancellable(attr: TokenStream, item: TokenStream) -> TokenStream {
    cancellable::cancellable(attr.into(), item.into()).into()
}

/// Makes a type a context key whose value is itself: `ctx.with_value(RequestId(7))`,
/// `ctx.value::<RequestId>()`.
///
/// ```
/// use ctx_core::{Context, ContextKey};
///
/// #[derive(ContextKey, Debug, PartialEq)]
/// struct RequestId(u64);
///
/// #[derive(ContextKey)]
/// enum Tier {
///     Free,
///     Paid { seats: u32 },
/// }
///
/// let ctx = Context::background().with_value(RequestId(7)).with_value(Tier::Free);
/// assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
/// assert_eq!(RequestId::from_context(&ctx), Some(&RequestId(7)));
/// assert_eq!(RequestId::NAME, "RequestId");
/// assert_eq!(ctx.to_string(), "context.Background.WithValue(RequestId).WithValue(Tier)");
/// ```
///
/// The type must be `Send + Sync + 'static`: a context is shared between threads and
/// outlives any borrow. Generic types are keys when their parameters are (each
/// instantiation is a key of its own), and `NAME` is the type's name as written.
/// `#[context_key(crate = "::path")]` points the generated code at a re-export of
/// `ctx_core`.
///
/// # Expansion
///
/// ```ignore
/// #[derive(ContextKey)]
/// struct RequestId(u64);
///
/// // becomes
/// impl ::ctx_core::__private::ContextKey for RequestId
/// where
///     for<'__ctx> RequestId: Send + Sync,
/// {
///     const NAME: &'static str = "RequestId";
/// }
/// const _: () = {
///     fn __ctx_assert_key_fields() {
///         ::ctx_core::__private::assert_key_field::<u64>(); // one per field, at the field
///     }
/// };
/// ```
///
/// The higher-ranked `where` clause defers the `Send + Sync` check to where the key is used,
/// so a field that is not `Send + Sync` is reported once, at that field, by its assertion.
///
/// # Errors
///
/// A lifetime parameter is an error at the lifetime ("store owned data instead"); a field
/// that is not `Send + Sync` is an error at the field ("use `Arc` instead of `Rc`, ...");
/// an unknown `#[context_key(..)]` argument or a relative `crate` path is an error at the
/// argument. Beside an error the derive still emits a stub `ContextKey` impl (with
/// `'static` for a lifetime parameter), so the places that use the type as a key report
/// nothing more.
#[proc_macro_derive(ContextKey, attributes(context_key))]
pub fn derive_context_key(input: TokenStream) -> TokenStream {
    context_key::derive(input.into()).into()
}
