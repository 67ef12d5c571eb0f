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

/// The bits of the 64-bit key summary that stand for key type `K`: two, from two parts of
/// its `TypeId`'s hash (one, when both parts agree).
///
/// A node's summary is its parent's with its own key's bits set, so a lookup for which any
/// of its bits is clear in the summary is a certain miss: Go's `DeepValue` benchmarks (an
/// absent key under a deep chain) answer in O(1). All bits set may be other keys' bits:
/// then the chain is walked. Two bits a key (a Bloom filter with two hash functions) make
/// that false walk rarer than one bit would for the few key types a service uses: with one
/// key type in the chain, 1 lookup in about 1,000 instead of 1 in 64 — the odds, fixed per
/// build, that a given absent key is always walked for.
#[inline]
pub(in crate::context) fn summary_bits<K: 'static>() -> u64 {
    let mut hasher = BitHasher(0);
    TypeId::of::<K>().hash(&mut hasher);
    (1 << (hasher.0 >> 58)) | (1 << ((hasher.0 >> 52) & 63))
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

#[cfg(test)]
mod tests {
    use super::summary_bits;

    /// Each key type sets one or two summary bits, and a key absent from a one-key chain is
    /// rarely mistaken for present (a walk, never a wrong answer): with one bit a key, about
    /// 1 pair in 64 would be; with two, about 1 in 1,000.
    #[test]
    fn two_bits_a_key_make_false_walks_rare() {
        macro_rules! masks {
            ($($k:ident)*) => {{
                $(struct $k;)*
                [$(summary_bits::<$k>()),*]
            }};
        }
        let masks = masks!(K1 K2 K3 K4 K5 K6 K7 K8 K9 K10 K11 K12 K13 K14 K15 K16 K17 K18
            K19 K20 K21 K22 K23 K24 K25 K26 K27 K28 K29 K30 K31 K32 K33 K34 K35 K36 K37 K38
            K39 K40 K41 K42 K43 K44 K45 K46 K47 K48 K49 K50 K51 K52 K53 K54 K55 K56 K57 K58
            K59 K60 K61 K62 K63 K64 K65 K66 K67 K68 K69 K70);
        assert!(masks.iter().all(|m| (1..=2).contains(&m.count_ones())));
        let pairs = masks.len() * (masks.len() - 1);
        let mistaken = (0..masks.len())
            .flat_map(|present| (0..masks.len()).map(move |absent| (present, absent)))
            .filter(|&(present, absent)| present != absent)
            .filter(|&(present, absent)| masks[present] & masks[absent] == masks[absent])
            .count();
        // One bit a key: about pairs / 64 (75); two: about pairs / 1,000 (5).
        assert!(mistaken < pairs / 160, "{mistaken} of {pairs} pairs");
    }
}
