//! One finished span of our own call model, ready for export. Built after the fact with
//! explicit ids, parent and times; only `trace::export` turns it into OpenTelemetry types.

use std::sync::Arc;
use std::time::SystemTime;

use crate::trace::attr::{Attr, AttrValue};

/// A W3C trace id: 16 bytes, never all zero.
pub type TraceId = [u8; 16];
/// A W3C span id: 8 bytes, never all zero.
pub type SpanId = [u8; 8];

/// Hashes span ids for the correlator's maps. Its keys are ids this process drew at random
/// ([`new_span_id`]), never chosen by a peer, so their bytes are already a good hash and
/// SipHash's flooding resistance buys nothing; it cost a tenth of the correlator's time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanIdHasher(u64);

impl std::hash::Hasher for SpanIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_usize(&mut self, _len: usize) {
        // The length prefix of an array key is always 8: nothing to mix in.
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map or set keyed by span ids (see [`SpanIdHasher`]).
pub type SpanIdMap<V> = std::collections::HashMap<SpanId, V, std::hash::BuildHasherDefault<SpanIdHasher>>;
pub type SpanIdSet = std::collections::HashSet<SpanId, std::hash::BuildHasherDefault<SpanIdHasher>>;

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The parent span, `None` for a root span.
    pub parent: Option<ParentRef>,
    /// W3C `tracestate` kept from an incoming `traceparent`, exported as is.
    pub trace_state: Option<String>,
    /// Name from the span contract: the full gRPC method, `{METHOD} {route}`, `pod start`...
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<Attr>,
    pub events: Vec<SpanEventRecord>,
    pub links: Vec<LinkRecord>,
    pub status: SpanStatus,
    /// The intercept's name: `service.name` of the resource this span is exported in.
    pub service: Arc<str>,
}

impl SpanRecord {
    /// The value of attribute `key`, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
    }

    /// A string attribute's value.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            AttrValue::Str(v) => Some(v),
            _ => None,
        }
    }

    /// A number attribute's value, integer or double (files of older versions wrote whole
    /// milliseconds as integers).
    pub fn attr_f64(&self, key: &str) -> Option<f64> {
        match *self.attr(key)? {
            AttrValue::Int(v) => Some(v as f64),
            AttrValue::Double(v) => Some(v),
            _ => None,
        }
    }

    /// Whether a bool attribute is present and true.
    pub fn attr_true(&self, key: &str) -> bool {
        matches!(self.attr(key), Some(AttrValue::Bool(true)))
    }
}

/// The parent of a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentRef {
    pub span_id: SpanId,
    /// True when the parent came from an incoming `traceparent` (another process's span).
    pub remote: bool,
}

/// Span kinds runtime-tap emits: SERVER for calls, INTERNAL for synthesized spans, CLIENT for
/// the client's side of a call from a process behind no other intercept (`client_spans`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Internal,
    Client,
}

/// Span status. runtime-tap never sets OK: a call that did not fail is left unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    /// Error with its description (`grpc-message`, the daemon's message...).
    Error(String),
}

/// A timestamped event inside a span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEventRecord {
    pub name: String,
    pub time: SystemTime,
    pub attributes: Vec<Attr>,
}

/// A link from a span to another span (an event span to its subscription, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub attributes: Vec<Attr>,
}

/// A new random trace id, never all zero.
pub fn new_trace_id() -> TraceId {
    loop {
        let id: TraceId = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A new random span id, never all zero.
pub fn new_span_id() -> SpanId {
    loop {
        let id: SpanId = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Lowercase hex of an id, as in `traceparent` and OTLP/JSON.
pub fn hex(id: &[u8]) -> String {
    use std::fmt::Write;
    id.iter().fold(String::with_capacity(id.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_non_zero() {
        let (a, b) = (new_trace_id(), new_trace_id());
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
        let (c, d) = (new_span_id(), new_span_id());
        assert_ne!(c, [0; 8]);
        assert_ne!(c, d);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0a, 0xff]), "000aff");
    }
}
