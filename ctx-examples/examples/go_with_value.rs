//! Go's `ExampleWithValue`: a value stored in a context, and a lookup that misses.
//!
//! Go keys values by an `any` and asks each package to define an unexported key type so
//! that keys never collide; the lookup then needs a type assertion. Here the key *is* the
//! type: `value::<Language>()` returns `Option<&Language>`, no two packages' keys can
//! collide, and asking for a type that is not a key does not compile.

use std::fmt;

use ctx_core::{Context, ContextKey};

struct Language(&'static str);

impl ContextKey for Language {
    const NAME: &'static str = "Language";
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

struct Color(&'static str);

impl ContextKey for Color {
    const NAME: &'static str = "Color";
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Prints the value of key `K` in `ctx`, or that there is none; returns whether found.
fn f<K: ContextKey + fmt::Display>(ctx: &Context) -> bool {
    match ctx.value::<K>() {
        Some(v) => println!("found value: {v}"),
        None => println!("key not found: {}", K::NAME),
    }
    ctx.value::<K>().is_some()
}

fn main() {
    let ctx = Context::background().with_value(Language("Go"));

    assert!(f::<Language>(&ctx));
    assert!(!f::<Color>(&ctx));

    assert_eq!(ctx.value::<Language>().map(|l| l.0), Some("Go"));
    assert_eq!(ctx.to_string(), "context.Background.WithValue(Language)");
}
