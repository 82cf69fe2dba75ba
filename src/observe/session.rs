//! What a protocol session is: the calls of one connection, assembled from one wire decoder's
//! events and handed to a `CallSink`. The observer drives it; it never touches the relay.
//!
//! The relay offers each chunk to the tap as soon as it reads it, before writing it onward
//! (`relay::copy`): that keeps the two directions in causal order here (a response never
//! arrives before the request bytes it answers). A chunk fed to a session may therefore not
//! be written yet, and never will be if the write fails; a session only reads what passed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::trace::call::{CallSink, Clock, ConnMeta, RemoteParent};
use crate::trace::span::{SpanId, TraceId};
use crate::wire::Direction;
use crate::wire::inject::Injection;

/// What every session of a connection is given.
#[derive(Clone)]
pub struct SessionCtx {
    pub conn: Arc<ConnMeta>,
    pub sink: Arc<dyn CallSink>,
    pub clock: Clock,
    /// Where the session marks the connection's event subscriptions for the relay's drain.
    pub long_lived: crate::conn::LongLived,
}

/// One connection's protocol session, fed in relay order.
pub trait Session: Send {
    /// A chunk the relay read at `at` and is writing onward (offered before the write).
    fn data(&mut self, dir: Direction, at: Instant, bytes: Bytes);
    /// Propagation added a `traceparent` with these ids to a request in the client bytes
    /// that follow: the call that carries it takes this identity (not a remote parent).
    fn injected(&mut self, injection: Injection);
    /// One direction half-closed at `at`.
    fn eof(&mut self, dir: Direction, at: Instant);
    /// The connection is over at `at`: calls still open end as incomplete.
    fn closed(&mut self, at: Instant);
    /// Load shedding: `false` stops decoding payloads (message and body contents) while heads,
    /// frames and message boundaries are still followed; `true` resumes.
    fn payloads(&mut self, on: bool);
    /// Why the decoder gave up on this connection, once it has (a metrics label).
    fn gave_up(&self) -> Option<&'static str>;
    /// Bytes the session buffers now (partial frames and heads, messages, bodies), counted
    /// against the process-wide decode budget.
    fn buffered_bytes(&self) -> usize {
        0
    }
    /// Hands over the payloads skipped since the last call, as (reason label, count), and
    /// forgets them.
    fn take_skipped(&mut self, _report: &mut dyn FnMut(&'static str, u64)) {}
}

/// The identities propagation gave to requests not yet seen by the decoder, bounded.
#[derive(Debug, Default)]
pub struct Injected(std::collections::VecDeque<Injection>);

/// Identities announced and not yet matched to a request; past it the oldest is dropped
/// (only when the decoder is far behind; that call then reads its traceparent as remote).
pub const MAX_PENDING_INJECTED: usize = 1024;

impl Injected {
    pub fn push(&mut self, injection: Injection) {
        if self.0.len() >= MAX_PENDING_INJECTED {
            self.0.pop_front();
        }
        self.0.push_back(injection);
    }

    /// The identity a request's `traceparent` names, when propagation put it there.
    pub fn take(&mut self, traceparent: Option<&str>) -> Option<(TraceId, SpanId)> {
        let remote = RemoteParent::parse(traceparent?, None)?;
        let i = self
            .0
            .iter()
            .position(|j| j.trace_id == remote.trace_id && j.span_id == remote.span_id)?;
        let j = self.0.remove(i)?;
        Some((j.trace_id, j.span_id))
    }
}
