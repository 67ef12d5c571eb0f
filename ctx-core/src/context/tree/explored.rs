//! The tree's side of `testing::explore_cancellation` (feature `test-util`): a live core
//! being explored is in state [`EXPLORED`] instead of `LIVE`.
//!
//! So a check ([`check`]) stays one load and one compare: `LIVE` is the only state it
//! passes through at once, and an explored core takes the same out-of-line branch a done
//! one does, where the explorer counts the point (and may cancel the context there). Every
//! other reader treats `EXPLORED` as `LIVE`: `Core::read_state` maps it, and the tree's own
//! raw loads go through `core::is_live`. The state leaves `EXPLORED` as it leaves `LIVE`,
//! once, when the core ends (invariant 1); cores derived from an explored one are born
//! explored ([`inherit`]), before anything else can see them.

use std::panic::Location;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::core::{LIVE, error_of};
use super::{Core, Kind, Link};
use crate::context::Context;
use crate::context::error::Error;
use crate::sync::fence;

/// A live core whose checks are cancellation points of an exploration.
pub(in crate::context) const EXPLORED: u8 = 0x80;

/// What a check of `core` (the core of `ctx`) at `at` returns: its error once done. An
/// explored core reports the point to the explorer first, out of line.
#[inline(always)]
pub(in crate::context) fn check(
    core: &Core,
    ctx: &Context,
    at: &'static Location<'static>,
) -> Option<Error> {
    let state = core.state_word().load(Relaxed);
    if state == LIVE {
        return None;
    }
    if state == EXPLORED {
        return point(core, ctx, at);
    }
    fence(Acquire); // invariant 1, as `Core::read_state`
    error_of(state)
}

#[cold]
#[inline(never)]
fn point(core: &Core, ctx: &Context, at: &'static Location<'static>) -> Option<Error> {
    crate::context::testing::point(ctx, at);
    core.err() // done if the explorer cancelled here
}

/// Marks a new root's core explored (the explorer's own context, not yet shared).
pub(in crate::context) fn mark(core: &Core) {
    let _ = core
        .state_word()
        .compare_exchange(LIVE, EXPLORED, Relaxed, Relaxed);
}

/// Whether `core` is live and explored.
pub(in crate::context) fn is_explored(core: &Core) -> bool {
    core.state_word().load(Relaxed) == EXPLORED
}

/// A new node derived from `parent`: explored, if it has a core of its own and `parent`'s
/// is explored. Called before the node is armed or attached, so no one else sees its state.
#[inline]
pub(super) fn inherit(parent: &Link, kind: &Kind) {
    if let (Kind::Cancel(core), Some(parent)) = (kind, parent.core())
        && parent.state_word().load(Relaxed) == EXPLORED
    {
        core.state_word().store(EXPLORED, Relaxed);
    }
}
