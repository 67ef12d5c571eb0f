//! `ctx.value::<T>()` with a type that is not a context key.
use ctx_core::Context;

struct RequestId(u64);

fn main() {
    let ctx = Context::background();
    let _ = ctx.value::<RequestId>();
}
