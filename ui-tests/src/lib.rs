//! Shared helpers for the trybuild suite (the cases live under `tests/ui`).
