//! An unknown `#[context_key(..)]` argument. Used below, the key shows no follow-on errors:
//! the derive emits a stub impl beside the error.
use ctx_core::{Context, ContextKey};

#[derive(ContextKey, Debug, PartialEq)]
#[context_key(name = "request-id")]
struct RequestId(u64);

fn main() {
    let ctx = Context::background().with_value(RequestId(7));
    assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
    assert_eq!(RequestId::NAME, "RequestId");
}
