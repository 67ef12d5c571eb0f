//! A context key with a lifetime parameter. Used below, it shows no follow-on errors: the
//! derive emits a stub impl beside the error.
use ctx_core::ContextKey;

#[derive(ContextKey)]
struct User<'a> {
    name: &'a str,
}

fn main() {
    // The type is still a key where it is used: no follow-on "not a context key" errors.
    let ctx = ctx_core::Context::background().with_value(User { name: "gopher" });
    let _ = ctx.value::<User>().map(|user| user.name);
}
