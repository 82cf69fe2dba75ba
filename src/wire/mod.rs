//! Passive wire decoders: pure state machines fed the bytes of one connection, both
//! directions, in the order the relay saw them. No I/O, no clock, no async: the caller
//! stamps times. A decoder never fails the connection; what it cannot follow it gives up on.
//! One module here writes rather than reads: [`inject`], the byte half of trace context
//! propagation, pure like the decoders.

pub mod drain;
pub mod grpc;
pub mod h1;
pub mod h2;
pub mod headers;
pub mod inject;
pub mod sniff;
#[cfg(test)]
pub mod testutil;

/// Which way a chunk travelled: a connection fact (`crate::conn`), named here too because
/// every decoder takes one.
pub use crate::conn::Direction;
