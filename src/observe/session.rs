//! What a protocol session is: the calls of one connection, assembled from one wire decoder's
//! events and handed to a `CallSink`. The observer drives it; it never touches the relay.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::trace::call::{CallSink, Clock, ConnMeta};
use crate::wire::Direction;

/// What every session of a connection is given.
#[derive(Clone)]
pub struct SessionCtx {
    pub conn: Arc<ConnMeta>,
    pub sink: Arc<dyn CallSink>,
    pub clock: Clock,
}

/// One connection's protocol session, fed in relay order.
pub trait Session: Send {
    /// A chunk the relay wrote onward, read at `at`.
    fn data(&mut self, dir: Direction, at: Instant, bytes: Bytes);
    /// One direction half-closed at `at`.
    fn eof(&mut self, dir: Direction, at: Instant);
    /// The connection is over at `at`: calls still open end as incomplete.
    fn closed(&mut self, at: Instant);
    /// Load shedding: `false` stops decoding payloads (message and body contents) while heads,
    /// frames and message boundaries are still followed; `true` resumes.
    fn payloads(&mut self, on: bool);
    /// Why the decoder gave up on this connection, once it has (a metrics label).
    fn gave_up(&self) -> Option<&'static str>;
}
