//! [`AfterFunc`]: a function scheduled to run once a context is done.

use std::fmt;

use crate::Context;
use crate::context::tree::{AfterFn, dispatch_after_func};
use crate::sync::{AtomicBool, Mutex, lock};

/// A function registered with [`Context::after_func`]; [`stop`](AfterFunc::stop) it to
/// keep it from running. Dropping an `AfterFunc` does not stop it.
#[must_use = "an AfterFunc does nothing when dropped; keep it to be able to stop the function"]
pub struct AfterFunc {
    state: State,
    stopped: AtomicBool,
}

enum State {
    /// Registered in the context's core under this key.
    Registered { ctx: Context, key: usize },
    /// The context can never end: `f` is held here and never runs.
    Never(Mutex<Option<AfterFn>>),
    /// The context was already done: `f` was started at registration.
    Started,
}

pub(in crate::context) fn register(ctx: &Context, f: AfterFn) -> AfterFunc {
    let state = match ctx.core() {
        None => State::Never(Mutex::new(Some(f))),
        Some(core) => match core.register_after(f) {
            Ok(key) => State::Registered {
                ctx: ctx.clone(),
                key,
            },
            Err(f) => {
                dispatch_after_func(f);
                State::Started
            }
        },
    };
    AfterFunc {
        state,
        stopped: AtomicBool::new(false),
    }
}

impl AfterFunc {
    /// Stops the function from running. Returns true if this call stopped it; false if it
    /// had already been started (the context was done) or `stop` was called before. Does
    /// not wait for a started function to finish. Go's `stop()`.
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// let scope = Context::background().with_cancel();
    /// let after = scope.after_func(|| unreachable!("stopped before the cancel"));
    /// assert!(after.stop());
    /// assert!(!after.stop(), "only the first stop stops it");
    /// scope.cancel();
    /// ```
    pub fn stop(&self) -> bool {
        if self.stopped.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return false;
        }
        match &self.state {
            State::Registered { ctx, key } => {
                ctx.core().is_some_and(|core| core.deregister_after(*key))
            }
            State::Never(f) => lock(f).take().is_some(),
            State::Started => false,
        }
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterFunc")
            .field(
                "stopped",
                &self.stopped.load(std::sync::atomic::Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}
