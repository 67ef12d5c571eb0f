//! Expansion snapshots: what each macro generates for representative inputs, pretty-printed.
//! Update with `UPDATE_EXPECT=1 cargo test -p ctx-macros`.

use expect_test::{Expect, expect};
use proc_macro2::TokenStream;

fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}

fn cancellable(attr: TokenStream, item: TokenStream, expected: Expect) {
    expected.assert_eq(&pretty(crate::cancellable::cancellable(attr, item)));
}

fn context_key(input: TokenStream, expected: Expect) {
    expected.assert_eq(&pretty(crate::context_key::derive(input)));
}

use quote::quote;

#[test]
fn sync_derive_mode_with_timeout() {
    // Input: a sync fn with no context parameter, a literal timeout, a loop.
    // Output: the child is derived from `Context::current()` at the call; the body runs in
    // a closure under `enter`; the loop starts with a checkpoint.
    cancellable(
        quote!(timeout = "1m30s"),
        quote! {
            pub fn sum(rows: &[u64]) -> Result<u64, Error> {
                let mut total = 0;
                for row in rows {
                    total += row;
                }
                Ok(total)
            }
        },
        expect![[r#"
            pub fn sum(rows: &[u64]) -> Result<u64, Error> {
                let __ctx_scope = ::ctx_core::__private::child_timeout(
                    &::ctx_core::__private::current(),
                    ::ctx_core::__private::Duration::new(90u64, 0u32),
                );
                ::ctx_core::__private::enter(
                    &__ctx_scope,
                    ::ctx_core::__private::returns::<Result<u64, Error>>(),
                    move |__ctx_child| {
                        {
                            let mut total = 0;
                            for row in rows {
                                if let ::core::option::Option::Some(__ctx_return) = __ctx_child
                                    .checkpoint()
                                {
                                    return __ctx_return;
                                }
                                total += row;
                            }
                            Ok(total)
                        }
                    },
                )
            }
        "#]],
    );
}

#[test]
fn async_accept_mode() {
    // Input: an async fn whose `ctx: &Context` parameter is the parent.
    // Output: a fn returning `impl Future`; the child is derived at the call; inside the
    // async block `ctx` is the child, the other parameters are moved in as an `async fn`
    // would, and each `.await` races the context.
    cancellable(
        quote!(),
        quote! {
            async fn fetch(ctx: &Context, url: String, mut tries: u32) -> Result<Vec<u8>, Error> {
                loop {
                    tries -= 1;
                    match get(ctx, &url).await {
                        Ok(body) => return Ok(body),
                        Err(e) if tries == 0 => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        },
        expect![[r#"
            #[allow(unknown_lints, mismatched_lifetime_syntaxes, refining_impl_trait)]
            fn fetch<'__ctx0>(
                ctx: &'__ctx0 Context,
                url: String,
                tries: u32,
            ) -> impl ::core::future::Future<
                Output = Result<Vec<u8>, Error>,
            > + ::ctx_core::__private::Captures<(&'__ctx0 (),)> {
                let __ctx_scope = ::ctx_core::__private::child(::ctx_core::__private::parent(&ctx));
                ::ctx_core::__private::scoped(
                    ::ctx_core::__private::Context::clone(&__ctx_scope),
                    async move {
                        let __ctx_scope = __ctx_scope;
                        let __ctx_child = ::ctx_core::__private::child_of(
                            &__ctx_scope,
                            ::ctx_core::__private::returns::<Result<Vec<u8>, Error>>(),
                        );
                        if false {
                            return __ctx_child.cancelled(::ctx_core::__private::Error::Cancelled);
                        }
                        #[allow(unused_variables, unused_mut)]
                        let ctx: &::ctx_core::__private::Context = __ctx_child.context();
                        let url = url;
                        let mut tries = tries;
                        {
                            loop {
                                if let ::core::option::Option::Some(__ctx_return) = __ctx_child
                                    .checkpoint()
                                {
                                    return __ctx_return;
                                }
                                tries -= 1;
                                match match __ctx_child.run(get(ctx, &url)).await {
                                    ::core::result::Result::Ok(__ctx_value) => __ctx_value,
                                    ::core::result::Result::Err(__ctx_err) => {
                                        return __ctx_child.cancelled(__ctx_err);
                                    }
                                } {
                                    Ok(body) => return Ok(body),
                                    Err(e) if tries == 0 => return Err(e),
                                    Err(_) => {}
                                }
                            }
                        }
                    },
                )
            }
        "#]],
    );
}

#[test]
fn method_with_deadline_and_crate_path() {
    // Input: a method with `deadline = <expr>`, `checkpoints = "loops"` and a re-exported
    // crate path.
    // Output: `with_deadline(<expr>)`; paths through `::my::ctx::__private`.
    cancellable(
        quote!(
            deadline = self.until,
            checkpoints = "loops",
            crate = "::my::ctx"
        ),
        quote! {
            fn step(&mut self) -> Result<(), Error> {
                while self.pending() {
                    self.advance();
                }
                Ok(())
            }
        },
        expect![[r#"
            fn step(&mut self) -> Result<(), Error> {
                let __ctx_scope = ::my::ctx::__private::child_deadline(
                    &::my::ctx::__private::current(),
                    self.until,
                );
                ::my::ctx::__private::enter(
                    &__ctx_scope,
                    ::my::ctx::__private::returns::<Result<(), Error>>(),
                    move |__ctx_child| {
                        {
                            while self.pending() {
                                if let ::core::option::Option::Some(__ctx_return) = __ctx_child
                                    .checkpoint()
                                {
                                    return __ctx_return;
                                }
                                self.advance();
                            }
                            Ok(())
                        }
                    },
                )
            }
        "#]],
    );
}

#[test]
fn async_trait_shape() {
    // Input: what `#[async_trait]` makes of `async fn get(&self, ctx: &Context) -> Result<u8, E>`.
    // Output: the `Box::pin(async move { .. })` body is wrapped like an async fn's.
    cancellable(
        quote!(timeout = "5s"),
        quote! {
            fn get<'life0, 'life1, 'async_trait>(
                &'life0 self,
                ctx: &'life1 Context,
            ) -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<u8, E>> + ::core::marker::Send + 'async_trait>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let __self = self;
                    let ctx = ctx;
                    let __ret: Result<u8, E> = { __self.fetch(ctx).await };
                    #[allow(unreachable_code)]
                    __ret
                })
            }
        },
        expect![[r#"
            fn get<'life0, 'life1, 'async_trait>(
                &'life0 self,
                ctx: &'life1 Context,
            ) -> ::core::pin::Pin<
                Box<
                    dyn ::core::future::Future<
                        Output = Result<u8, E>,
                    > + ::core::marker::Send + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                let __ctx_scope = ::ctx_core::__private::child_timeout(
                    ::ctx_core::__private::parent(&ctx),
                    ::ctx_core::__private::Duration::new(5u64, 0u32),
                );
                Box::pin(
                    ::ctx_core::__private::scoped(
                        ::ctx_core::__private::Context::clone(&__ctx_scope),
                        async move {
                            let __ctx_scope = __ctx_scope;
                            let __ctx_child = ::ctx_core::__private::child_of(
                                &__ctx_scope,
                                ::ctx_core::__private::returns::<Result<u8, E>>(),
                            );
                            if false {
                                return __ctx_child
                                    .cancelled(::ctx_core::__private::Error::Cancelled);
                            }
                            #[allow(unused_variables, unused_mut)]
                            let ctx: &::ctx_core::__private::Context = __ctx_child.context();
                            {
                                let __self = self;
                                let ctx = ctx;
                                let __ret: Result<u8, E> = {
                                    match __ctx_child.run(__self.fetch(ctx)).await {
                                        ::core::result::Result::Ok(__ctx_value) => __ctx_value,
                                        ::core::result::Result::Err(__ctx_err) => {
                                            return __ctx_child.cancelled(__ctx_err);
                                        }
                                    }
                                };
                                #[allow(unreachable_code)] __ret
                            }
                        },
                    ),
                )
            }
        "#]],
    );
}

#[test]
fn misuse_emits_errors_and_the_item_unchanged() {
    // Input: a malformed argument, and a `const fn`.
    // Output: both errors (the function's own checks run even when the arguments fail to
    // parse), and the function exactly as written.
    cancellable(
        quote!(timeout = "10"),
        quote! {
            const fn f(ctx: &Context) -> Result<(), Error> { Ok(()) }
        },
        expect![[r#"
            ::core::compile_error! {
                "missing unit in duration \"10\": every number needs a unit, as in \"30s\" or \"1m30s\" (units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`)"
            }
            ::core::compile_error! {
                "`#[cancellable]` cannot be used on a `const fn`: deriving and checking a context happens at run time; remove `const`"
            }
            const fn f(ctx: &Context) -> Result<(), Error> {
                Ok(())
            }
        "#]],
    );
}

#[test]
fn misuses_in_the_body_are_all_reported() {
    // Input: an async body that detaches twice and blocks once.
    // Output: the three errors, in source order, and the function as written.
    cancellable(
        quote!(),
        quote! {
            async fn f(ctx: &Context) -> Result<(), Error> {
                let root = Context::background();
                std::thread::sleep(PAUSE);
                let todo: Context = Default::default();
                Ok(())
            }
        },
        expect![[r#"
            ::core::compile_error! {
                "`Context::background()` inside `#[cancellable]` function `f` starts a new context tree: the caller's deadline and cancellation no longer reach the work done under it. Pass on `ctx` (the function's context, derived from the caller's) instead; to detach on purpose, use `ctx.without_cancel()` (keeps the values, drops the deadline and cancellation), or write `#[cancellable(allow_detached)]` on the function"
            }
            ::core::compile_error! {
                "`std::thread::sleep(..)` blocks the executor thread inside async `#[cancellable]` function `f`: no other task on that thread runs until it returns, and the function's context cannot interrupt it. Sleep without blocking: `tokio::time::sleep(..).await` (or your runtime's timer; the `.await` is raced against the context), or wait on a future raced against the context with `ctx.run(..).await`; or, to block anyway, write `#[cancellable(allow_blocking)]` on the function"
            }
            ::core::compile_error! {
                "`Default::default()` as a `Context` inside `#[cancellable]` function `f` starts a new context tree: the caller's deadline and cancellation no longer reach the work done under it. Pass on `ctx` (the function's context, derived from the caller's) instead; to detach on purpose, use `ctx.without_cancel()` (keeps the values, drops the deadline and cancellation), or write `#[cancellable(allow_detached)]` on the function"
            }
            async fn f(ctx: &Context) -> Result<(), Error> {
                let root = Context::background();
                std::thread::sleep(PAUSE);
                let todo: Context = Default::default();
                Ok(())
            }
        "#]],
    );
}

#[test]
fn async_fn_with_every_kind_of_lifetime() {
    // Input: `&mut self`, a reference argument, an explicit lifetime, an `impl Trait`
    // argument, a return type with an elided lifetime.
    // Output: the elided lifetimes named (`'__ctx0`, `'__ctx1`), every lifetime listed in
    // `Captures`, the lints that the rewrite itself would trip allowed.
    cancellable(
        quote!(),
        quote! {
            pub async fn get<'a, T: Send>(&mut self, key: &str, other: &'a T, f: impl Fn(&T) -> bool) -> Result<&u8, Error> {
                Ok(&self.bytes[0])
            }
        },
        expect![[r#"
            #[allow(unknown_lints, mismatched_lifetime_syntaxes, refining_impl_trait)]
            pub fn get<'__ctx0, '__ctx1, 'a, T: Send>(
                &'__ctx0 mut self,
                key: &'__ctx1 str,
                other: &'a T,
                f: impl Fn(&T) -> bool,
            ) -> impl ::core::future::Future<
                Output = Result<&u8, Error>,
            > + ::ctx_core::__private::Captures<(&'__ctx0 (), &'__ctx1 (), &'a ())> {
                let __ctx_scope = ::ctx_core::__private::child(&::ctx_core::__private::current());
                ::ctx_core::__private::scoped(
                    ::ctx_core::__private::Context::clone(&__ctx_scope),
                    async move {
                        let __ctx_scope = __ctx_scope;
                        let __ctx_child = ::ctx_core::__private::child_of(
                            &__ctx_scope,
                            ::ctx_core::__private::returns::<Result<&u8, Error>>(),
                        );
                        if false {
                            return __ctx_child.cancelled(::ctx_core::__private::Error::Cancelled);
                        }
                        let key = key;
                        let other = other;
                        let f = f;
                        { Ok(&self.bytes[0]) }
                    },
                )
            }
        "#]],
    );
}

#[test]
fn derive_context_key() {
    // Input: a newtype key.
    // Output: the impl (NAME = the type's name) and the per-field assertion.
    context_key(
        quote! {
            struct RequestId(u64);
        },
        expect![[r##"
            #[automatically_derived]
            impl ::ctx_core::__private::ContextKey for RequestId
            where
                for<'__ctx> RequestId: ::core::marker::Send + ::core::marker::Sync,
            {
                const NAME: &'static str = "RequestId";
            }
            #[doc(hidden)]
            const _: () = {
                #[allow(dead_code, clippy::extra_unused_type_parameters)]
                fn __ctx_assert_key_fields() {
                    ::ctx_core::__private::assert_key_field::<u64>();
                }
            };
        "##]],
    );
}

#[test]
fn derive_context_key_generic() {
    // Input: a generic key with a custom crate path.
    // Output: type parameters bound by `Send + Sync + 'static`.
    context_key(
        quote! {
            #[context_key(crate = "::my::ctx")]
            enum Tenant<T: Clone> where T: Default { One(T), Many(Vec<T>) }
        },
        expect![[r##"
            #[automatically_derived]
            impl<
                T: Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
            > ::my::ctx::__private::ContextKey for Tenant<T>
            where
                T: Default,
                for<'__ctx> Tenant<T>: ::core::marker::Send + ::core::marker::Sync,
            {
                const NAME: &'static str = "Tenant";
            }
            #[doc(hidden)]
            const _: () = {
                #[allow(dead_code, clippy::extra_unused_type_parameters)]
                fn __ctx_assert_key_fields<
                    T: Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
                >()
                where
                    T: Default,
                {
                    ::my::ctx::__private::assert_key_field::<T>();
                    ::my::ctx::__private::assert_key_field::<Vec<T>>();
                }
            };
        "##]],
    );
}

#[test]
fn derive_context_key_fallback() {
    // Input: a key with a lifetime parameter (an error) and an unknown argument (another).
    // Output: both errors, and a stub impl for `User<'static, T>`, so that the places that
    // use it as a key report nothing more.
    context_key(
        quote! {
            #[context_key(name = "user")]
            struct User<'a, T: 'a> where T: Clone { name: &'a str, extra: T }
        },
        expect![[r#"
            ::core::compile_error! {
                "Unknown field: `name` (`#[context_key]` takes only `crate = \"::path\"`, for crates that re-export ctx_core; the key's `NAME` is always its type's name)"
            }
            ::core::compile_error! {
                "a context key must be `'static`, but `User` borrows through lifetime parameter `'a`: a context can outlive any borrow, so store owned data instead (`String` for `&str`, `Arc<T>` or `Box<T>` for `&T`)"
            }
            #[automatically_derived]
            impl<
                T: 'static + ::core::marker::Send + ::core::marker::Sync + 'static,
            > ::ctx_core::__private::ContextKey for User<'static, T>
            where
                T: Clone,
                for<'__ctx> User<'static, T>: ::core::marker::Send + ::core::marker::Sync,
            {
                const NAME: &'static str = "User";
            }
        "#]],
    );
}
