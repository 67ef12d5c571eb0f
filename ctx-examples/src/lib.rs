//! Code shared by the demo binary and the examples: the `Relay` gRPC service.

pub mod relay;
