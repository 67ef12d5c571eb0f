//! Typed context keys, and the per-node summary that answers most lookups of an absent key
//! without walking the chain.

use std::any::TypeId;
use std::hash::{Hash, Hasher};

use crate::Context;

/// A type whose values can be stored in a [`Context`]: the key is the type itself.
///
/// Go keys values by an `any` and asks users to define unexported key types to avoid
/// collisions; here the type *is* the key, so lookups are typed and collisions impossible.
/// Derive it (with the default `macros` feature) on a newtype:
///
/// ```
/// # #[cfg(feature = "macros")] fn main() {
/// use ctx_core::{Context, ContextKey};
///
/// #[derive(ContextKey, Debug, PartialEq)]
/// struct RequestId(u64);
///
/// let ctx = Context::background().with_value(RequestId(7));
/// assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
/// assert_eq!(RequestId::from_context(&ctx), Some(&RequestId(7)));
/// assert_eq!(ctx.to_string(), "context.Background.WithValue(RequestId)");
/// # }
/// # #[cfg(not(feature = "macros"))] fn main() {}
/// ```
///
/// or implement it by hand:
///
/// ```
/// struct TenantId(String);
/// impl ctx_core::ContextKey for TenantId {
///     const NAME: &'static str = "TenantId";
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a context key",
    label = "not a context key",
    note = "only types that implement `ContextKey` can be stored in or read from a `Context`",
    note = "derive it on a newtype: `#[derive(ContextKey)] struct MyKey(...);`"
)]
pub trait ContextKey: Send + Sync + 'static {
    /// The key's name, as `Display` for a context shows it: `WithValue(NAME)`.
    const NAME: &'static str;

    /// The value of this key in `ctx`, innermost first: shorthand for `ctx.value::<Self>()`.
    fn from_context(ctx: &Context) -> Option<&Self>
    where
        Self: Sized,
    {
        ctx.value::<Self>()
    }
}

/// The bit of the 64-bit key summary that stands for key type `K`.
///
/// A node's summary is its parent's with its own key's bit set, so a lookup whose bit is
/// clear in the summary is a certain miss: Go's `DeepValue` benchmarks (an absent key under a
/// deep chain) answer in O(1). A set bit may be another key's: then the chain is walked.
#[inline]
pub(in crate::context) fn summary_bit<K: 'static>() -> u64 {
    let mut hasher = BitHasher(0);
    TypeId::of::<K>().hash(&mut hasher);
    1 << (hasher.0 >> 58)
}

/// Folds whatever `TypeId` feeds it into one well-mixed word.
struct BitHasher(u64);

impl Hasher for BitHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}
