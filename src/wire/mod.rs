//! Passive wire decoders: pure state machines fed the bytes of one connection, both
//! directions, in the order the relay saw them. No I/O, no clock, no async: the caller
//! stamps times. A decoder never fails the connection; what it cannot follow it gives up on.
//! One module here writes rather than reads: [`inject`], the byte half of trace context
//! propagation, pure like the decoders.

pub mod grpc;
pub mod h1;
pub mod h2;
pub mod headers;
pub mod inject;
pub mod sniff;
#[cfg(test)]
pub mod testutil;

/// Which way a chunk travelled through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client (downstream) to server (upstream): requests.
    ClientToServer,
    /// Server (upstream) to client (downstream): responses.
    ServerToClient,
}

impl Direction {
    /// Short label used in logs and metrics (`c2s`, `s2c`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "c2s",
            Direction::ServerToClient => "s2c",
        }
    }

    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// Index 0 for c2s, 1 for s2c, for per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}
