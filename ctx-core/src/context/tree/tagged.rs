//! One word that points at one of two types: a pointer to the second carries a tag in its
//! lowest bit, which both types' alignment leaves free (checked at compile time); null means
//! neither. `Core::ended` (a walk root, or where the core was ended) and `Core::owner` (a
//! core's own list, or a shard of its spread) are such words.

/// What a tagged word points at.
pub(super) enum Either<A, B> {
    Left(*const A),
    Right(*const B),
}

/// The word for `either`.
#[inline]
pub(super) fn encode<A, B>(either: Either<A, B>) -> *mut () {
    const {
        assert!(
            align_of::<A>() >= 2 && align_of::<B>() >= 2,
            "both pointees leave the tag bit free"
        );
    }
    match either {
        Either::Left(a) => a.cast_mut().cast(),
        Either::Right(b) => b.cast_mut().cast::<()>().map_addr(|addr| addr | 1),
    }
}

/// What `word` (made by [`encode`] with the same types, or null) points at.
#[inline]
pub(super) fn decode<A, B>(word: *mut ()) -> Option<Either<A, B>> {
    if word.is_null() {
        None
    } else if word.addr() & 1 == 1 {
        Some(Either::Right(word.map_addr(|addr| addr & !1).cast()))
    } else {
        Some(Either::Left(word.cast()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Either, decode, encode};

    #[test]
    fn a_word_reads_back_as_what_it_was_made_from() {
        let (a, b) = (7u64, 9u32);
        let word = encode::<u64, u32>(Either::Left(&a));
        assert!(matches!(decode::<u64, u32>(word), Some(Either::Left(p)) if std::ptr::eq(p, &a)));
        let word = encode::<u64, u32>(Either::Right(&b));
        assert!(matches!(decode::<u64, u32>(word), Some(Either::Right(p)) if std::ptr::eq(p, &b)));
        assert!(decode::<u64, u32>(std::ptr::null_mut()).is_none());
    }
}
