//! The interrupt guard SQLite needs, whoever drives the connection (rusqlite in the caller's
//! thread, or sqlx's worker thread): `sqlite3_interrupt` issued from
//! [`Context::after_func`](crate::Context::after_func), never after the call that armed it
//! has returned.
//!
//! 1. the after-func interrupts only while it holds the guard's mutex and the guard is
//!    *armed*;
//! 2. before the call returns (or unwinds) it stops the after-func, and if that came too
//!    late, takes the mutex and disarms the guard;
//! 3. so every interrupt from this call happens before the call returns, and none after:
//!    the flag it sets is cleared by SQLite when the next statement starts on an otherwise
//!    idle connection, so it never reaches a later statement.
//!
//! While the work runs on after the context ended (it ignored an interrupted statement and
//! started another), the after-func interrupts again every [`REPEAT`], so no statement
//! outlives the context by more than that.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::{AfterFunc, Context};

/// How often the after-func repeats the interrupt while the work keeps running after the
/// context ended.
const REPEAT: Duration = Duration::from_millis(1);

/// Interrupts through `interrupt` while armed, from the moment `ctx` ends; disarmed by
/// [`Armed::disarm`] or on drop.
pub(super) fn arm(ctx: &Context, interrupt: impl Fn() + Send + 'static) -> Armed {
    let guard = Arc::new(Guard::default());
    let after = {
        let guard = Arc::clone(&guard);
        ctx.after_func(move || guard.interrupt_while_armed(&interrupt))
    };
    Armed { after, guard }
}

/// What the after-func and the call share: whether interrupting is still allowed, and
/// whether it happened.
#[derive(Default)]
struct Guard {
    state: Mutex<GuardState>,
    /// Signalled on disarm, so a repeating after-func stops at once.
    disarmed: Condvar,
}

#[derive(Default)]
struct GuardState {
    /// Set once, before the call returns; until then, interrupting is allowed.
    disarmed: bool,
    /// Whether the after-func interrupted the connection.
    interrupted: bool,
}

impl Guard {
    fn lock(&self) -> MutexGuard<'_, GuardState> {
        // Nothing panics while holding it (`interrupt` only calls `sqlite3_interrupt`).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The after-func: interrupt, and again every [`REPEAT`] until disarmed. Every
    /// interrupt happens with the lock held and the guard armed: that is what keeps it
    /// from outliving the call.
    fn interrupt_while_armed(&self, interrupt: &dyn Fn()) {
        let mut state = self.lock();
        while !state.disarmed {
            interrupt();
            state.interrupted = true;
            state = self
                .disarmed
                .wait_timeout(state, REPEAT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// An armed guard; disarms on drop (on unwind, or when an async call's future is dropped).
pub(super) struct Armed {
    after: AfterFunc,
    guard: Arc<Guard>,
}

impl Armed {
    /// Disarms; returns whether the connection was interrupted by this guard. After it
    /// returns, no interrupt from this guard can happen.
    pub(super) fn disarm(self) -> bool {
        self.disarm_now()
    }

    fn disarm_now(&self) -> bool {
        if self.after.stop() {
            // The after-func will never run: nothing was or will be interrupted.
            return false;
        }
        // It ran, runs, or is about to. Once we hold the lock it is not inside
        // `interrupt()`, and after we disarm it never will be.
        let mut state = self.guard.lock();
        state.disarmed = true;
        self.guard.disarmed.notify_all();
        state.interrupted
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // Idempotent: after `disarm`, `stop` is false and the state already disarmed.
        self.disarm_now();
    }
}
