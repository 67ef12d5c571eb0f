//! The threads that run after-funcs.
//!
//! Go runs each `AfterFunc` in a goroutine of its own. A thread per after-func is too slow
//! here (10,000 deadlines expiring at once would start 10,000 threads, and the last would
//! start seconds late), so after-funcs run on a pool that keeps idle workers for a while and
//! grows only while every worker is busy:
//!
//! - `dispatch` queues `f` and wakes an idle worker; when there are more queued after-funcs
//!   than idle workers, it starts one more worker (one start at a time, so a burst of cheap
//!   after-funcs does not start a thread each: the workers drain it first).
//! - A worker that takes an after-func and still sees a backlog no idle worker will take
//!   starts another before it runs its own, so slow after-funcs keep the pool growing until
//!   each has a thread: a slow or blocking `f` delays no other for longer than a thread
//!   start.
//! - A worker idle for `IDLE` (10 s) exits.
//! - The pool never runs more than [`MAX_WORKERS`] (64) workers. Past that, after-funcs
//!   queue: when every worker is blocked in a slow `f`, the next after-func waits until one
//!   of them returns; every queued after-func runs once workers come free. (Go's goroutines
//!   make no such bound; an after-func that blocks for a long time should hand its work to a
//!   thread of its own.)
//!
//! `f` runs on the worker with no lock held. A panic in `f` is caught (the panic hook has
//! already reported it) and the worker goes on.
//!
//! Under loom each after-func still gets a thread of its own: the pool's idle timeout is
//! wall time, which loom does not model.

use super::AfterFn;

/// The most worker threads the pool runs at once.
#[cfg_attr(ctx_loom, allow(dead_code))]
pub(in crate::context) const MAX_WORKERS: usize = 64;

/// Queues `f` to run on the pool, at once.
#[cfg(not(ctx_loom))]
pub(in crate::context) fn dispatch(f: AfterFn) {
    pool::dispatch(f);
}

#[cfg(ctx_loom)]
pub(in crate::context) fn dispatch(f: AfterFn) {
    crate::sync::thread::spawn(f);
}

#[cfg(not(ctx_loom))]
mod pool {
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::{AfterFn, MAX_WORKERS};
    use crate::sync::lock;

    /// How long a worker waits for work before it exits.
    pub(super) const IDLE: Duration = Duration::from_secs(10);

    struct Pool {
        state: Mutex<State>,
        work: Condvar,
    }

    struct State {
        queue: VecDeque<AfterFn>,
        /// Workers running (idle, busy, or being started): at most `MAX_WORKERS`.
        workers: usize,
        /// The most workers that ever ran at once (for tests).
        #[cfg(test)]
        peak: usize,
        /// Workers waiting for work.
        idle: usize,
        /// Whether a worker is being started (it will take a job as soon as it runs).
        starting: bool,
    }

    static POOL: Pool = Pool {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            workers: 0,
            #[cfg(test)]
            peak: 0,
            idle: 0,
            starting: false,
        }),
        work: Condvar::new(),
    };

    impl State {
        /// Whether queued work exceeds what idle and starting workers will take, so one more
        /// worker should start now (and the pool is below `MAX_WORKERS`); marks it starting
        /// and counts it.
        fn needs_worker(&mut self) -> bool {
            let grow = !self.starting && self.queue.len() > self.idle && self.workers < MAX_WORKERS;
            if grow {
                self.starting = true;
                self.workers += 1;
                #[cfg(test)]
                {
                    self.peak = self.peak.max(self.workers);
                }
            }
            grow
        }
    }

    pub(super) fn dispatch(f: AfterFn) {
        let grow = {
            let mut state = lock(&POOL.state);
            state.queue.push_back(f);
            if state.idle > 0 {
                POOL.work.notify_one();
            }
            state.needs_worker()
        };
        if grow {
            start_worker();
        }
    }

    fn start_worker() {
        let started = std::thread::Builder::new()
            .name("ctx-after-func".into())
            .spawn(work);
        if let Err(err) = started {
            // The queued after-funcs wait for a running worker, or for the next dispatch to
            // try again.
            let mut state = lock(&POOL.state);
            state.starting = false;
            state.workers -= 1;
            eprintln!("ctx: could not start an after_func worker thread: {err}");
        }
    }

    fn work() {
        let mut state = lock(&POOL.state);
        state.starting = false;
        loop {
            let f = loop {
                if let Some(f) = state.queue.pop_front() {
                    break Some(f);
                }
                state.idle += 1;
                let (guard, waited) = POOL
                    .work
                    .wait_timeout(state, IDLE)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                state = guard;
                state.idle -= 1;
                if waited.timed_out() && state.queue.is_empty() {
                    break None;
                }
            };
            let Some(f) = f else {
                state.workers -= 1;
                return;
            };
            let grow = state.needs_worker();
            drop(state);
            if grow {
                start_worker();
            }
            // The hook has reported a panic; the worker goes on with the next after-func.
            crate::context::tree::discard(
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).err(),
            );
            state = lock(&POOL.state);
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::sync::{Arc, Condvar, Mutex, mpsc};
        use std::time::{Duration, Instant};

        use super::{MAX_WORKERS, POOL, dispatch};
        use crate::sync::lock;

        /// 300 after-funcs that block start at most `MAX_WORKERS` threads; the rest queue,
        /// and every one of them runs once the blocked ones return.
        #[test]
        fn blocking_after_funcs_start_at_most_max_workers_and_all_run() {
            const FUNCS: usize = 300;
            let gate = Arc::new((Mutex::new(false), Condvar::new()));
            let running = Arc::new(AtomicUsize::new(0));
            let most_running = Arc::new(AtomicUsize::new(0));
            let (done_tx, done_rx) = mpsc::channel();
            for i in 0..FUNCS {
                let (gate, running, most_running, done_tx) = (
                    gate.clone(),
                    running.clone(),
                    most_running.clone(),
                    done_tx.clone(),
                );
                dispatch(Box::new(move || {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most_running.fetch_max(now, SeqCst);
                    let (open, opened) = &*gate;
                    let mut open = open.lock().unwrap();
                    while !*open {
                        open = opened.wait(open).unwrap();
                    }
                    drop(open);
                    running.fetch_sub(1, SeqCst);
                    done_tx.send(i).unwrap();
                }));
            }
            // Wait until the pool stops growing (every worker it may start is blocked), or
            // give up looking after a generous while.
            let started = Instant::now();
            let mut last = (0, Instant::now());
            while started.elapsed() < Duration::from_secs(20) {
                let now = running.load(SeqCst);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if now > 0 && last.1.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let peak = lock(&POOL.state).peak;
            assert!(peak <= MAX_WORKERS, "the pool ran {peak} workers at once");
            assert!(
                most_running.load(SeqCst) <= MAX_WORKERS,
                "{} after-funcs ran at once",
                most_running.load(SeqCst)
            );
            assert!(running.load(SeqCst) > 0, "the blocked after-funcs started");
            let (open, opened) = &*gate;
            *open.lock().unwrap() = true;
            opened.notify_all();
            let mut ran: Vec<usize> = (0..FUNCS)
                .map(|_| {
                    done_rx
                        .recv_timeout(Duration::from_secs(60))
                        .expect("a queued after-func never ran")
                })
                .collect();
            ran.sort_unstable();
            assert_eq!(ran, (0..FUNCS).collect::<Vec<_>>());
            assert!(lock(&POOL.state).peak <= MAX_WORKERS);
        }

        /// A blocked after-func delays no other: the pool grows around it.
        #[test]
        fn a_blocked_after_func_delays_no_other() {
            // Four after-funcs that block until all four run at once (each needs a worker of
            // its own), then one that must run while they are still blocked.
            let blockers = 4;
            let gate = std::sync::Arc::new(std::sync::Barrier::new(blockers + 1));
            for _ in 0..blockers {
                let gate = gate.clone();
                dispatch(Box::new(move || {
                    gate.wait();
                }));
            }
            let (done_tx, done_rx) = mpsc::channel();
            dispatch(Box::new(move || done_tx.send("ran").unwrap()));
            assert_eq!(
                done_rx.recv_timeout(Duration::from_secs(30)),
                Ok("ran"),
                "an after-func waited behind blocked ones"
            );
            gate.wait(); // releases the blockers: every one was running, on its own worker
        }

        /// A panicking after-func does not take its worker's later work with it.
        #[test]
        fn a_panicking_after_func_spares_the_rest() {
            let (tx, rx) = mpsc::channel();
            for i in 0..50 {
                let tx = tx.clone();
                dispatch(Box::new(move || {
                    if i % 5 == 0 {
                        panic!("after-func {i} panics on purpose");
                    }
                    tx.send(i).unwrap();
                }));
            }
            let mut got: Vec<i32> = (0..40)
                .map(|_| {
                    rx.recv_timeout(Duration::from_secs(30))
                        .expect("after-funcs stopped running")
                })
                .collect();
            got.sort();
            let want: Vec<i32> = (0..50).filter(|i| i % 5 != 0).collect();
            assert_eq!(got, want);
        }
    }
}
