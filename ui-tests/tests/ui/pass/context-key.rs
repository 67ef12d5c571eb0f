//! `#[derive(ContextKey)]` on structs, enums and generic types, and with a crate path.
#![deny(warnings)]
#![allow(dead_code)]

use std::sync::Arc;

use ctx_core::{Context, ContextKey};

#[derive(ContextKey)]
struct RequestId(u64);

#[derive(ContextKey)]
struct User {
    name: String,
    roles: Arc<[String]>,
}

#[derive(ContextKey)]
enum Tier {
    Free,
    Paid { seats: u32 },
}

#[derive(ContextKey)]
struct Tagged<T: Clone, const N: usize>([T; N]);

#[derive(ContextKey)]
struct Static(&'static str);

mod reexport {
    pub use ctx_core as ctx;
}

#[derive(ContextKey)]
#[context_key(crate = "crate::reexport::ctx")]
struct ThroughReexport;

fn main() {
    let ctx = Context::background()
        .with_value(RequestId(1))
        .with_value(Tier::Paid { seats: 2 })
        .with_value(Tagged([1u8; 2]))
        .with_value(ThroughReexport);
    assert_eq!(ctx.value::<RequestId>().map(|id| id.0), Some(1));
    assert!(ctx.value::<Tagged<u8, 2>>().is_some());
    assert!(ctx.value::<User>().is_none());
    assert_eq!(<Tier as ContextKey>::NAME, "Tier");
}
