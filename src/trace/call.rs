//! The call model: one gRPC stream or one HTTP exchange as the decoders saw it, in our own
//! types. Built by the protocol sessions in `observe`, handed to the `Tracer`, turned into a
//! span only at export. Times are wall-clock, taken from the tap's instants.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The connection facts every call carries, under the name the call model has always used.
pub use crate::conn::ConnMeta;
use crate::trace::attr::Attr;
use crate::trace::context;
use crate::trace::span::{SpanEventRecord, SpanId, SpanStatus, TraceId};

/// A W3C trace context a call carried in (`traceparent`, `tracestate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    pub trace_state: Option<String>,
}

impl RemoteParent {
    /// From a `traceparent` header value (`trace::context` reads it) and a `tracestate`.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<RemoteParent> {
        let tp = context::parse(traceparent)?;
        let trace_state = tracestate.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        Some(RemoteParent {
            trace_id: tp.trace_id,
            span_id: tp.span_id,
            sampled: tp.sampled,
            trace_state,
        })
    }
}

/// How a call's stream behaves, which decides whether it may parent other calls by time alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Request, then response: a unit of work.
    Unary,
    /// A stream that lives as long as a client watches (events, attach/exec sessions, logs -f,
    /// wait): never a parent by time alone (DESIGN.md, correlation).
    LongLived,
}

/// A call as it starts: enough for the correlator to know it is open.
#[derive(Clone, Debug)]
pub struct CallStart {
    pub span_id: SpanId,
    pub conn: Arc<ConnMeta>,
    pub name: String,
    pub start: SystemTime,
    pub shape: Shape,
    pub remote_parent: Option<RemoteParent>,
    /// Propagation forwarded this call's request with a `traceparent` naming this span in
    /// this trace: its trace is fixed at start (later evidence only adds links).
    pub own_trace: Option<TraceId>,
    /// What is known at start that ties calls together (ids in a request path).
    pub attributes: Vec<Attr>,
}

/// A finished call.
#[derive(Clone, Debug)]
pub struct Call {
    /// Assigned when the call started (event spans link to it before it ends).
    pub span_id: SpanId,
    pub conn: Arc<ConnMeta>,
    /// Span name: the full gRPC method, or `{METHOD} {route}`.
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Protocol and domain attributes (transport and peer attributes are added at export).
    pub attributes: Vec<Attr>,
    pub status: SpanStatus,
    /// The call was still open when its connection or the process ended.
    pub incomplete: bool,
    pub shape: Shape,
    pub remote_parent: Option<RemoteParent>,
    /// See [`CallStart::own_trace`].
    pub own_trace: Option<TraceId>,
    /// Span events (payload capture), already redacted.
    pub events: Vec<SpanEventRecord>,
    /// INTERNAL spans under this call's span, in its trace, synthesized from what the call
    /// carried (per-layer spans of an image pull); bounded by whoever made them.
    pub children: Vec<ChildSpan>,
}

/// A synthesized INTERNAL span under a call's span (`layer download`, `layer extract`).
#[derive(Clone, Debug, PartialEq)]
pub struct ChildSpan {
    pub name: &'static str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<Attr>,
}

/// A delivered event of an event stream: one INTERNAL span `event {topic}`, linked to the
/// subscription call's span.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    pub subscription: SpanId,
    pub conn: Arc<ConnMeta>,
    pub name: String,
    pub time: SystemTime,
    pub attributes: Vec<Attr>,
}

/// Converts the tap's monotonic instants to wall-clock times, from one reference taken at
/// start, so that all spans of the process share one clock and never go backwards.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    pub fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall + d,
            None => self.wall - self.instant.duration_since(at),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What became of a call at its start ([`CallSink::begin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begun {
    /// Tracked as a whole call: its attributes are built as it goes, as always.
    Tracked,
    /// Sampled out at its start (a poll thinned by rule that can be no parent and no child):
    /// the session keeps a minimal record and raw payloads, builds no attributes, and asks
    /// [`CallSink::thin_ended`] at the end whether the outcome keeps it after all.
    SampledOut,
}

/// The minimal record of a call sampled out at its start, as it ends: what its RED
/// histogram, its accounting and the keep-anyway rules (errors, slow calls) need.
#[derive(Debug)]
pub struct ThinEnd<'a> {
    pub span_id: SpanId,
    pub conn: &'a Arc<ConnMeta>,
    /// Span name (the full gRPC method).
    pub name: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The RED status label: the gRPC code's name, `incomplete` or `unset`.
    pub status: &'a str,
    /// The span would have status Error (a server error code).
    pub error: bool,
    pub incomplete: bool,
    /// `rpc.method` would be `_OTHER` (not a method of the pool).
    pub unknown_method: bool,
}

/// Where sessions hand their calls: the tracer (correlation and export) in the proxy, a
/// collecting vector in tests.
pub trait CallSink: Send + Sync {
    /// A call started (its request headers passed).
    fn started(&self, call: &CallStart);
    /// A call started, and the sink may sample it out at once (`Begun::SampledOut`): then
    /// `started` and `ended` are not called for it unless `thin_ended` says to build it.
    fn begin(&self, call: &CallStart) -> Begun {
        self.started(call);
        Begun::Tracked
    }
    /// A call sampled out at its start ended: true when it must be built whole after all
    /// (it failed, was slow, or can parent a call since) and handed to `ended`; false when
    /// the sink has counted it as a drop.
    fn thin_ended(&self, call: &ThinEnd<'_>) -> bool {
        let _ = call;
        true
    }
    /// An open call learned attributes (entity ids from its request payload, say).
    fn learned(&self, span_id: SpanId, attributes: &[Attr]) {
        let _ = (span_id, attributes);
    }
    /// A call ended.
    fn ended(&self, call: Call);
    /// An event stream delivered one event.
    fn event(&self, event: StreamEvent);
}
