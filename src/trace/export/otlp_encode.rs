//! OTLP/protobuf encoding of span records, written straight from our records into one buffer:
//! an `ExportTraceServiceRequest` (opentelemetry-proto's `collector/trace/v1`), one
//! `ResourceSpans` per service.
//!
//! Why not the SDK's path: turning a record into `SpanData`, which the exporter clones for
//! its retry and converts again into generated structs before prost encodes them, copied
//! every string three times and was a fifth of runtime-tap's CPU per call at high call rates
//! (benches/README.md). Here each string is copied once, into the request. The tests decode
//! what this writes with opentelemetry-proto's types and compare it with the SDK's conversion.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TraceState;

use crate::trace::attr::{Attr, AttrValue};
use crate::trace::span::{LinkRecord, SpanEventRecord, SpanKind, SpanRecord, SpanStatus};

const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const FIXED32: u8 = 5;

/// `SpanFlags`: the trace flags' sampled bit, and "whether the parent is remote is known".
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Encodes batches for one pipeline: the resource of each service and the scope are encoded
/// once and reused.
pub(super) struct Encoder {
    host_name: String,
    extra: Vec<(String, String)>,
    /// An encoded `Resource` message per service name.
    resources: Vec<(Arc<str>, Vec<u8>)>,
    /// The encoded `InstrumentationScope` message.
    scope: Vec<u8>,
}

impl Encoder {
    pub(super) fn new(host_name: String, extra: Vec<(String, String)>) -> Encoder {
        let mut scope = Vec::new();
        put_str(1, super::SCOPE_NAME, &mut scope);
        put_str(2, env!("CARGO_PKG_VERSION"), &mut scope);
        Encoder {
            host_name,
            extra,
            resources: Vec::new(),
            scope,
        }
    }

    fn resource(&mut self, service: &Arc<str>) -> usize {
        if let Some(i) = self.resources.iter().position(|(s, _)| s == service) {
            return i;
        }
        let mut out = Vec::new();
        for kv in super::sdk::resource_pairs(service, &self.host_name, &self.extra) {
            let kv = Attr::str(kv.0.to_owned(), kv.1.to_owned());
            put_len(1, kv_len(&kv), &mut out);
            put_kv(&kv, &mut out);
        }
        self.resources.push((Arc::clone(service), out));
        self.resources.len() - 1
    }

    /// Writes the request for `spans` (services in order of first appearance, spans in batch
    /// order within a service) into `out`, which is cleared first.
    pub(super) fn encode(&mut self, spans: &[SpanRecord], groups: &[(Arc<str>, Vec<usize>)], out: &mut Vec<u8>) {
        out.clear();
        // Each span's size is needed twice (its scope's length prefix, its own): sized once.
        let lens: Vec<usize> = spans.iter().map(span_len).collect();
        for (service, idx) in groups {
            let r = self.resource(service);
            let scope_spans_len =
                field_len(1, self.scope.len()) + idx.iter().map(|&i| field_len(2, lens[i])).sum::<usize>();
            let resource_spans_len = field_len(1, self.resources[r].1.len()) + field_len(2, scope_spans_len);
            put_len(1, resource_spans_len, out);
            put_len(1, self.resources[r].1.len(), out);
            out.extend_from_slice(&self.resources[r].1);
            put_len(2, scope_spans_len, out);
            put_len(1, self.scope.len(), out);
            out.extend_from_slice(&self.scope);
            for &i in idx {
                put_span(&spans[i], lens[i], out);
            }
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `tracestate` as the SDK would export it: parsed and written back, or dropped if invalid.
fn trace_state(raw: Option<&str>) -> String {
    raw.and_then(|ts| ts.parse::<TraceState>().ok())
        .map(|ts| ts.header())
        .unwrap_or_default()
}

fn kind(k: SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

fn span_len(s: &SpanRecord) -> usize {
    let ts = s
        .trace_state
        .as_deref()
        .map_or(0, |raw| str_len(3, &trace_state(Some(raw))));
    field_len(1, 16)
        + field_len(2, 8)
        + ts
        + if s.parent.is_some() { field_len(4, 8) } else { 0 }
        + str_len(5, &s.name)
        + 1
        + varint_len(kind(s.kind))
        + 2 * (1 + 8)
        + s.attributes.iter().map(|a| field_len(9, kv_len(a))).sum::<usize>()
        + s.events.iter().map(|e| field_len(11, event_len(e))).sum::<usize>()
        + s.links.iter().map(|l| field_len(13, link_len(l))).sum::<usize>()
        + field_len(15, status_len(&s.status))
        + 2
        + 4
}

/// Writes `s` as a `spans` field of a `ScopeSpans`; `len` is its [`span_len`].
fn put_span(s: &SpanRecord, len: usize, out: &mut Vec<u8>) {
    put_len(2, len, out);
    put_bytes(1, &s.trace_id, out);
    put_bytes(2, &s.span_id, out);
    if let Some(raw) = s.trace_state.as_deref() {
        put_str(3, &trace_state(Some(raw)), out);
    }
    if let Some(p) = &s.parent {
        put_bytes(4, &p.span_id, out);
    }
    put_str(5, &s.name, out);
    put_key(6, VARINT, out);
    put_varint(kind(s.kind), out);
    put_key(7, FIXED64, out);
    out.extend_from_slice(&nanos(s.start).to_le_bytes());
    put_key(8, FIXED64, out);
    out.extend_from_slice(&nanos(s.end).to_le_bytes());
    for a in &s.attributes {
        put_len(9, kv_len(a), out);
        put_kv(a, out);
    }
    for e in &s.events {
        put_len(11, event_len(e), out);
        put_key(1, FIXED64, out);
        out.extend_from_slice(&nanos(e.time).to_le_bytes());
        put_str(2, &e.name, out);
        for a in &e.attributes {
            put_len(3, kv_len(a), out);
            put_kv(a, out);
        }
    }
    for l in &s.links {
        put_len(13, link_len(l), out);
        put_bytes(1, &l.trace_id, out);
        put_bytes(2, &l.span_id, out);
        for a in &l.attributes {
            put_len(4, kv_len(a), out);
            put_kv(a, out);
        }
        put_key(6, FIXED32, out);
        out.extend_from_slice(&(FLAG_SAMPLED | FLAG_HAS_IS_REMOTE).to_le_bytes());
    }
    put_len(15, status_len(&s.status), out);
    put_status(&s.status, out);
    let remote = s.parent.is_some_and(|p| p.remote);
    let flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | if remote { FLAG_IS_REMOTE } else { 0 };
    put_key(16, FIXED32, out);
    out.extend_from_slice(&flags.to_le_bytes());
}

fn event_len(e: &SpanEventRecord) -> usize {
    1 + 8 + str_len(2, &e.name) + e.attributes.iter().map(|a| field_len(3, kv_len(a))).sum::<usize>()
}

fn link_len(l: &LinkRecord) -> usize {
    field_len(1, 16) + field_len(2, 8) + l.attributes.iter().map(|a| field_len(4, kv_len(a))).sum::<usize>() + 1 + 4
}

fn status_len(s: &SpanStatus) -> usize {
    match s {
        SpanStatus::Unset => 0,
        SpanStatus::Error(msg) => str_len(2, msg) + 1 + 1,
    }
}

fn put_status(s: &SpanStatus, out: &mut Vec<u8>) {
    if let SpanStatus::Error(msg) = s {
        put_str(2, msg, out);
        put_key(3, VARINT, out);
        put_varint(2, out);
    }
}

fn kv_len(a: &Attr) -> usize {
    str_len(1, &a.key) + field_len(2, any_len(&a.value))
}

fn put_kv(a: &Attr, out: &mut Vec<u8>) {
    put_str(1, &a.key, out);
    put_len(2, any_len(&a.value), out);
    match &a.value {
        // A oneof member is written even when it holds its type's default.
        AttrValue::Str(s) => put_bytes(1, s.as_bytes(), out),
        AttrValue::Bool(b) => {
            put_key(2, VARINT, out);
            put_varint(u64::from(*b), out);
        }
        AttrValue::Int(i) => {
            put_key(3, VARINT, out);
            put_varint(*i as u64, out);
        }
        AttrValue::Double(d) => {
            put_key(4, FIXED64, out);
            out.extend_from_slice(&d.to_le_bytes());
        }
        AttrValue::StrList(list) => {
            put_len(5, array_len(list), out);
            for s in list {
                put_len(1, field_len(1, s.len()), out);
                put_bytes(1, s.as_bytes(), out);
            }
        }
    }
}

fn any_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => field_len(1, s.len()),
        AttrValue::Bool(_) => 2,
        AttrValue::Int(i) => 1 + varint_len(*i as u64),
        AttrValue::Double(_) => 1 + 8,
        AttrValue::StrList(list) => field_len(5, array_len(list)),
    }
}

fn array_len(list: &[String]) -> usize {
    list.iter().map(|s| field_len(1, field_len(1, s.len()))).sum()
}

/// Size of a length-delimited field whose body is `len` bytes (tags here are below 16, but
/// 16 itself, `flags`, is written by hand).
fn field_len(_tag: u32, len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A string field as proto3 writes it: absent when empty.
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(tag, s.len()) }
}

fn put_str(tag: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        put_bytes(tag, s.as_bytes(), out);
    }
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    put_len(tag, b.len(), out);
    out.extend_from_slice(b);
}

fn put_len(tag: u32, len: usize, out: &mut Vec<u8>) {
    put_key(tag, LEN, out);
    put_varint(len as u64, out);
}

fn put_key(tag: u32, wire_type: u8, out: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | u32::from(wire_type)), out);
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits per byte; 0 still takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}
