//! Attribute and derive macros for [`ctx_core`]: [`macro@cancellable`] and
//! [`derive@ContextKey`].
//!
//! Use them through `ctx_core` (feature `macros`, on by default), which re-exports both. The
//! generated code names everything it needs as `::ctx_core::__private::...` (or
//! `<crate>::__private::...` with `crate = "..."`), so it works whatever the user imported.
//!
//! [`ctx_core`]: https://docs.rs/ctx-core

#![warn(missing_docs)]

mod cancellable;
mod context_key;
mod duration;

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
/// # Functions of every shape
///
/// Sync and `async`, free functions, inherent and trait-impl methods with any receiver
/// (`self`, `&self`, `&mut self`, `self: Arc<Self>`), trait methods with a default body,
/// generics, lifetimes, `where` clauses, `impl Trait` in arguments and return type
/// (`-> Result<impl Iterator<Item = T>, E>`), `unsafe fn`, and methods of an
/// `#[async_trait]` impl (put `#[cancellable]` on the method, `#[async_trait]` on the impl).
///
/// An `async fn` becomes a `fn` returning `impl Future<Output = ...>`: the parent is read
/// and the child derived when the function is called (as `#[tracing::instrument]` creates
/// its span), not at the first poll, so the timeout counts from the call. The future is
/// `Send` whenever the original `async fn`'s would be, and it takes ownership of the
/// parameters as an `async fn` does.
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
///     __private::enter(&__ctx_scope, __private::returns::<Result<u64, Error>>(), |__ctx_child| {
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
/// compile-time check of the return type (its error points at the return type).
///
/// This async function:
///
/// ```ignore
/// #[cancellable]
/// async fn fetch(url: String) -> Result<Vec<u8>, Error> {
///     get(&url).await
/// }
/// ```
///
/// becomes:
///
/// ```ignore
/// fn fetch(url: String) -> impl Future<Output = Result<Vec<u8>, Error>> {
///     let __ctx_scope = __private::child(&__private::current()); // at the call
///     __private::scope(Context::clone(&__ctx_scope), async move {
///         let __ctx_scope = __ctx_scope; // cancelled when the body is done or dropped
///         let __ctx_child = __private::child_of(&__ctx_scope, __private::returns::<Result<Vec<u8>, Error>>());
///         if false {
///             return __ctx_child.cancelled(Error::Cancelled); // fixes the block's output type
///         }
///         let url = url; // moved in, as an `async fn` does
///         {
///             match __ctx_child.run(get(&url)).await {
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
/// a malformed, zero or negative duration; `timeout` with `deadline`; an unknown or
/// duplicate argument ("did you mean"); a relative `crate` path; a non-function item or a
/// `const fn`; a return type that is not a `Result`, or an error type without
/// `From<ctx_core::Error>`; two context parameters; `ctx = name` naming no parameter; a
/// parameter named `ctx` that is not a context.
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
/// that is not `Send + Sync` is an error at the field ("use `Arc` instead of `Rc`, ...").
#[proc_macro_derive(ContextKey, attributes(context_key))]
pub fn derive_context_key(input: TokenStream) -> TokenStream {
    context_key::derive(input.into()).into()
}

/// The path generated code names the runtime by: `crate = "..."` if given (it must be
/// absolute, or an error naming both fixes is recorded), else `::ctx_core`.
pub(crate) fn crate_path(
    krate: Option<darling::util::SpannedValue<syn::Path>>,
    errors: &mut darling::error::Accumulator,
) -> syn::Path {
    use quote::ToTokens;

    match krate {
        Some(path) if !is_absolute(&path) => {
            let written = path.to_token_stream().to_string().replace(' ', "");
            let first = path
                .segments
                .first()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            errors.push(
                darling::Error::custom(format!(
                    "`crate = \"{written}\"` is a relative path, which resolves differently in \
                     each module: write an absolute path, `crate = \"::{written}\"` if `{first}` \
                     is a crate, or `crate = \"crate::{written}\"` if it is a module of this crate"
                ))
                .with_span(&path.span()),
            );
            syn::parse_quote!(::ctx_core)
        }
        Some(path) => (*path).clone(),
        None => syn::parse_quote!(::ctx_core),
    }
}

/// `crate = "..."` must be absolute: `::name...` or `crate::...`.
pub(crate) fn is_absolute(path: &syn::Path) -> bool {
    path.leading_colon.is_some()
        || path
            .segments
            .first()
            .is_some_and(|segment| segment.ident == "crate")
}

/// `tokens` with every token (and group) at `span`: a failed bound on a call through these
/// tokens is then reported at `span`, on the user's code.
pub(crate) fn respan(
    tokens: proc_macro2::TokenStream,
    span: proc_macro2::Span,
) -> proc_macro2::TokenStream {
    use proc_macro2::TokenTree;
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut new =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                new.set_span(span);
                TokenTree::Group(new)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
