//! The trybuild suite of the ctx macros (the cases live under `tests/ui`, the run-time
//! behaviour in `tests/behaviour.rs`), and in `edition2018/` and `edition2021/` the crates
//! that compile the same files on those editions.
