//! `testing::explore_cancellation`.
