//! Code shared by the demo binary and the examples: the `Relay` gRPC service, and the bank
//! whose transfer `ctx_core::testing` explores.

pub mod bank;
pub mod relay;
