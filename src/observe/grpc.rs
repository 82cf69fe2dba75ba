//! The gRPC session of one HTTP/2 connection: turns the passive decoder's stream events into
//! calls (one per stream) with the span contract's rpc attributes, the per-API payload
//! attributes from `schema`, and one event per delivered message of an event stream.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use opentelemetry_semantic_conventions::attribute::{
    RPC_METHOD, RPC_METHOD_ORIGINAL, RPC_RESPONSE_STATUS_CODE, RPC_SYSTEM_NAME,
};

use super::session::{Injected, Session, SessionCtx};
use crate::schema::containerd::{PROGRESS, STREAMING_STREAM};
use crate::schema::names::{self, GRPC_MESSAGE};
use crate::schema::pull::PullProgress;
use crate::schema::{self, MethodInfo, Schema, Side, any, grpc_status, rules};
use crate::trace::attr::{Attr, AttrValue};
use crate::trace::call::{Begun, Call, CallStart, RemoteParent, Shape, StreamEvent, ThinEnd};
use crate::trace::red::RPC_METHOD_OTHER;
use crate::trace::span::{SpanEventRecord, SpanId, SpanStatus, TraceId, new_span_id};
use crate::wire::Direction;
use crate::wire::grpc::{GrpcDecoder, GrpcEvent, Headers, Limits, Message, SkipReason, StreamEnd, StreamId};
use crate::wire::inject::Injection;

/// Largest rendered payload attached to a span when payload capture is on.
pub const CAPTURE_CAP: usize = 16 * 1024;
/// Payload events per call when capture is on (a long stream gets its first few only).
pub const CAPTURE_MAX_MESSAGES: usize = 8;

/// Streams that live as long as a client watches: never parents by time alone, and (for the
/// event streams) one event span per delivered message.
const LONG_LIVED: &[&str] = &[
    "containerd.services.events.v1.Events/Subscribe",
    "containerd.services.tasks.v1.Tasks/Wait",
    "runtime.v1.RuntimeService/GetContainerEvents",
    "runtime.v1alpha2.RuntimeService/GetContainerEvents",
];

/// The header fields this session reads, besides `:path` and `:status` (which the decoder
/// keeps for itself): the rest of each block is decoded for HPACK's table, never copied out.
const READ_FIELDS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "containerd-namespace",
    "traceparent",
    "tracestate",
];

/// Payload messages a call sampled out at its start keeps (raw, refcounted) for building its
/// attributes should its outcome keep it: a poll has one each way.
const THIN_MAX_MESSAGES: usize = 4;

/// Reason counted (with the skipped payloads) for a delivered event of an event stream that
/// load shedding left undecoded: it has no event span.
pub const EVENT_SHED: &str = "event_shed";

struct GrpcCall {
    span_id: SpanId,
    start: Instant,
    name: String,
    method: Option<Arc<MethodInfo>>,
    attributes: Vec<Attr>,
    messages: [u64; 2],
    bytes: [u64; 2],
    status: Option<(u32, String)>,
    /// `:status` of the response headers (or of a Trailers-Only response).
    http_status: Option<u16>,
    remote_parent: Option<RemoteParent>,
    own_trace: Option<TraceId>,
    shape: Shape,
    event_stream: bool,
    events: Vec<SpanEventRecord>,
    /// A containerd 2.x Streaming/Stream: its Progress messages folded per layer (bounded:
    /// `schema::pull`); a pull's `layer download` spans are its children.
    pull: Option<Box<PullProgress>>,
    /// Sampled out at its start (`Begun::SampledOut`): `attributes` stays empty until the
    /// end says to build the call whole after all.
    thin: Option<Box<Thin>>,
}

/// What a call sampled out at its start keeps to build its attributes lazily.
#[derive(Default)]
struct Thin {
    /// `containerd-namespace` of its request.
    namespace: Option<String>,
    /// Its first payloads, raw, in order.
    messages: Vec<(Side, Bytes)>,
}

/// The calls of one gRPC connection.
pub struct GrpcSession {
    ctx: SessionCtx,
    schema: Schema,
    decoder: GrpcDecoder,
    out: Vec<GrpcEvent>,
    /// This file's maps, the h2 decoder's streams and the RED series are Fx-hashed: keys are
    /// stream ids bounded by the stream limit and method paths from the descriptor pool, so
    /// SipHash's flood resistance buys nothing, and it cost about 1,600 instructions a call
    /// (3.6 %) on unary-c32 under callgrind (`benches/instructions`).
    calls: FxHashMap<StreamId, GrpcCall>,
    gave_up: Option<&'static str>,
    injected: Injected,
    /// Messages not decoded since the last `take_skipped`, by reason (a handful of labels).
    skipped: Vec<(&'static str, u64)>,
    /// Methods by `:path`: a connection calls the same few methods again and again, and
    /// resolving one (descriptor lookups, its rules) costs more than the rest of a call's start.
    methods: FxHashMap<String, Option<Arc<MethodInfo>>>,
    /// Payloads decoded for attributes (`schema::extract`), for tests: a call sampled out at
    /// its start decodes none.
    extracted: u64,
}

/// Paths a session remembers; calls past it resolve their method each time.
const MAX_REMEMBERED_METHODS: usize = 1024;

impl GrpcSession {
    pub fn new(ctx: SessionCtx, schema: Schema) -> GrpcSession {
        let mut decoder = GrpcDecoder::new(Limits::default());
        decoder.set_interest(interest(schema.clone(), ctx.conn.capture_payloads));
        decoder.keep_only_fields(READ_FIELDS);
        GrpcSession {
            ctx,
            schema,
            decoder,
            out: Vec::new(),
            calls: FxHashMap::default(),
            gave_up: None,
            injected: Injected::default(),
            skipped: Vec::new(),
            methods: FxHashMap::default(),
            extracted: 0,
        }
    }

    fn method(&mut self, path: &str) -> Option<Arc<MethodInfo>> {
        if let Some(known) = self.methods.get(path) {
            return known.clone();
        }
        let method = self.schema.method(path).map(Arc::new);
        if self.methods.len() < MAX_REMEMBERED_METHODS {
            self.methods.insert(path.to_owned(), method.clone());
        }
        method
    }

    fn handle(&mut self, at: Instant) {
        let mut events = std::mem::take(&mut self.out);
        for event in events.drain(..) {
            match event {
                GrpcEvent::RequestHeaders { stream, headers } => self.request_headers(stream, &headers, at),
                GrpcEvent::RequestMessage { stream, message } => self.message(stream, Side::Request, message, at),
                GrpcEvent::ResponseHeaders { stream, headers } => {
                    if let Some(call) = self.calls.get_mut(&stream) {
                        call.http_status = headers.get(":status").and_then(|s| s.trim().parse().ok());
                    }
                }
                GrpcEvent::ResponseMessage { stream, message } => self.message(stream, Side::Response, message, at),
                GrpcEvent::Trailers {
                    stream,
                    headers,
                    trailers_only,
                } => {
                    if let Some(call) = self.calls.get_mut(&stream) {
                        if trailers_only {
                            call.http_status = headers.get(":status").and_then(|s| s.trim().parse().ok());
                        }
                        // A code gRPC does not define is UNKNOWN (and a server error).
                        let code = headers
                            .get("grpc-status")
                            .and_then(|s| s.trim().parse::<u32>().ok())
                            .map(grpc_status::known_or_unknown);
                        // The message is recorded for failures only (`finish`).
                        let message = match headers.get("grpc-message") {
                            _ if code == Some(0) => String::new(),
                            Some(_) if crate::schema::redact::is_secret_header("grpc-message") => {
                                crate::schema::redact::REDACTED.to_owned()
                            }
                            m => m.map(percent_decode).unwrap_or_default(),
                        };
                        if let Some(code) = code {
                            call.status = Some((code, message));
                        }
                    }
                }
                GrpcEvent::StreamEnd { stream, end } => self.end(stream, end, at),
                GrpcEvent::MessageCut { reason, .. } => count_skipped(&mut self.skipped, reason),
                GrpcEvent::Anomaly(_) => {}
                GrpcEvent::GaveUp(reason) => {
                    self.gave_up = Some(reason.as_str());
                    self.end_all(at);
                }
            }
        }
        self.out = events;
    }

    fn request_headers(&mut self, stream: StreamId, headers: &Headers, at: Instant) {
        let path = headers.get(":path").unwrap_or("");
        let method = self.method(path);
        let name = match &method {
            Some(m) => m.full_name.clone(),
            None => path.trim_start_matches('/').to_string(),
        };
        // A traceparent propagation added names this call itself, not a remote parent.
        let identity = self.injected.take(headers.get("traceparent"));
        let remote_parent = headers
            .get("traceparent")
            .filter(|_| identity.is_none())
            .and_then(|tp| RemoteParent::parse(tp, headers.get("tracestate")));
        let long_lived = LONG_LIVED.contains(&name.as_str());
        // A containerd 2.x stream lives as long as a Transfer reads it (a pull's credentials
        // stream until the connection closes): never a parent by time alone, and no event spans.
        let shape = if long_lived || name == STREAMING_STREAM {
            Shape::LongLived
        } else {
            Shape::Unary
        };
        let event_stream = long_lived && !name.ends_with("Tasks/Wait");
        if event_stream {
            // The drain at shutdown does not wait for a subscription (the client renews it).
            self.ctx.long_lived.mark(stream);
        }
        let mut call = GrpcCall {
            span_id: identity.map_or_else(new_span_id, |(_, span)| span),
            own_trace: identity.map(|(trace, _)| trace),
            start: at,
            event_stream,
            pull: (name == STREAMING_STREAM).then(Box::default),
            name,
            method,
            attributes: Vec::new(),
            messages: [0; 2],
            bytes: [0; 2],
            status: None,
            http_status: None,
            remote_parent,
            shape,
            events: Vec::new(),
            thin: None,
        };
        let begun = self.ctx.sink.begin(&CallStart {
            span_id: call.span_id,
            conn: self.ctx.conn.clone(),
            name: call.name.clone(),
            start: self.ctx.clock.wall(at),
            shape,
            remote_parent: call.remote_parent.clone(),
            own_trace: call.own_trace,
            attributes: Vec::new(),
        });
        let namespace = headers.get("containerd-namespace");
        match begun {
            Begun::Tracked => call.attributes = start_attributes(&call.name, call.method.is_some(), namespace),
            Begun::SampledOut => {
                call.thin = Some(Box::new(Thin {
                    namespace: namespace.map(str::to_owned),
                    messages: Vec::new(),
                }))
            }
        }
        // A stream id reused after an unseen end would leave its old call open: end it first.
        if let Some(old) = self.calls.insert(stream, call) {
            self.finish(old, at, true);
        }
    }

    fn message(&mut self, stream: StreamId, side: Side, message: Message, at: Instant) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        let i = match side {
            Side::Request => 0,
            Side::Response => 1,
        };
        call.messages[i] += 1;
        call.bytes[i] += message.len;
        let event = call.event_stream && side == Side::Response;
        if let Some(thin) = &mut call.thin {
            // Sampled out at its start: the payload is kept raw, decoded only if kept.
            if let Some(reason) = message.skipped {
                count_skipped(&mut self.skipped, reason);
            }
            if let Some(data) = message.data
                && thin.messages.len() < THIN_MAX_MESSAGES
            {
                thin.messages.push((side, data));
            }
            return;
        }
        match message.skipped {
            // An event stream's payloads are always wanted: under shedding, a delivered event
            // has no event span, and that is counted.
            Some(SkipReason::PayloadsOff) if event => count(&mut self.skipped, EVENT_SHED),
            Some(reason) => count_skipped(&mut self.skipped, reason),
            None => {}
        }
        let (Some(method), Some(data)) = (&call.method, &message.data) else {
            return;
        };
        if event {
            let mut attributes = Vec::new();
            let _ = schema::extract(&self.schema, method, side, data, &mut attributes);
            let topic = attributes
                .iter()
                .find(|a| a.key == names::CONTAINERD_EVENT_TOPIC)
                .and_then(|a| match &a.value {
                    AttrValue::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| cri_event_type(&self.schema, method, data));
            self.ctx.sink.event(StreamEvent {
                subscription: call.span_id,
                conn: self.ctx.conn.clone(),
                name: format!("event {topic}"),
                time: self.ctx.clock.wall(at),
                attributes,
            });
            return;
        }
        if schema::wants_payload(method, side) {
            // First value wins: a response's copy of an id never overwrites the request's.
            let before = call.attributes.len();
            self.extracted += 1;
            let _ = schema::extract(&self.schema, method, side, data, &mut call.attributes);
            if let Some(pull) = &mut call.pull
                && side == Side::Response
                && rules::any_type_url(data).map(any::type_name) == Some(PROGRESS)
            {
                pull.containerd_attrs(&call.attributes, self.ctx.clock.wall(at));
            }
            if (side == Side::Request || call.name == STREAMING_STREAM) && call.attributes.len() > before {
                // Ids in a request are known while the call runs: its children can use them.
                // A containerd 2.x stream's progress names the image its Transfer saved.
                self.ctx.sink.learned(call.span_id, &call.attributes[before..]);
            }
            // Every rule of this side has its value and later ones cannot change it: the
            // stream's further messages (a Content/Write's chunks) are walked, not decoded.
            if !self.ctx.conn.capture_payloads && schema::rules_satisfied(method, side, &call.attributes) {
                let dir = match side {
                    Side::Request => Direction::ClientToServer,
                    Side::Response => Direction::ServerToClient,
                };
                self.decoder.skip_payloads(stream, dir, SkipReason::RulesSatisfied);
            }
        }
        if self.ctx.conn.capture_payloads && call.events.len() < CAPTURE_MAX_MESSAGES {
            let body = schema::render_json(&self.schema, method.message(side), data, CAPTURE_CAP);
            let name = match side {
                Side::Request => "request",
                Side::Response => "response",
            };
            call.events.push(SpanEventRecord {
                name: name.to_string(),
                time: self.ctx.clock.wall(at),
                attributes: vec![Attr::str(names::CAPTURE_BODY, body)],
            });
        }
    }

    fn end(&mut self, stream: StreamId, end: StreamEnd, at: Instant) {
        let Some(mut call) = self.calls.remove(&stream) else {
            return;
        };
        if call.event_stream {
            self.ctx.long_lived.unmark(stream);
        }
        // No grpc-status but an HTTP status other than 200: an intermediary (or a server that
        // is not gRPC) answered; gRPC clients map the HTTP status, and so do we.
        if call.status.is_none()
            && let Some(http) = call.http_status.filter(|s| *s != 200)
        {
            call.status = Some((
                grpc_status::from_http_status(http),
                format!("http status {http} without grpc-status"),
            ));
        }
        let incomplete = match end {
            StreamEnd::Complete => false,
            // A reset after the trailers is how some servers close a stream: not a failure.
            StreamEnd::Reset { code, by } => {
                if call.status.is_none() {
                    call.status = Some((
                        grpc_status::from_reset(code, by == Direction::ClientToServer),
                        format!("stream reset (http/2 error code {code})"),
                    ));
                }
                false
            }
            StreamEnd::GoAway | StreamEnd::ConnectionClosed => call.status.is_none(),
        };
        self.finish(call, at, incomplete);
    }

    fn end_all(&mut self, at: Instant) {
        let open: Vec<GrpcCall> = self.calls.drain().map(|(_, c)| c).collect();
        for call in open {
            self.finish(call, at, true);
        }
    }

    fn finish(&mut self, mut call: GrpcCall, at: Instant, incomplete: bool) {
        if let Some(thin) = call.thin.take() {
            if !self.thin_kept(&call, at, incomplete) {
                return;
            }
            // Kept by its outcome: built as it would have been from its start.
            call.attributes = start_attributes(&call.name, call.method.is_some(), thin.namespace.as_deref());
            if let Some(method) = &call.method {
                for (side, data) in &thin.messages {
                    if schema::wants_payload(method, *side) {
                        self.extracted += 1;
                        let _ = schema::extract(&self.schema, method, *side, data, &mut call.attributes);
                    }
                }
            }
        }
        let mut status = SpanStatus::Unset;
        if let Some((code, message)) = &call.status {
            let code_name = grpc_status::name(*code);
            call.attributes.push(Attr::str(RPC_RESPONSE_STATUS_CODE, code_name));
            if *code != 0 && !message.is_empty() {
                call.attributes.push(Attr::str(GRPC_MESSAGE, message.clone()));
            }
            if grpc_status::is_server_error(*code) {
                status = SpanStatus::Error(if message.is_empty() {
                    code_name.to_string()
                } else {
                    message.clone()
                });
            }
        }
        call.attributes.extend(crate::schema::pull::grpc_progress(&call.name));
        let start = self.ctx.clock.wall(call.start);
        let end = self.ctx.clock.wall(at.max(call.start));
        // A pull's progress stream: its layers (a partial breakdown if it stopped early).
        let children = call
            .pull
            .take()
            .map(|p| p.finish(start, end, &mut call.attributes))
            .unwrap_or_default();
        call.attributes
            .push(Attr::int(names::REQUEST_MESSAGES, call.messages[0] as i64));
        call.attributes
            .push(Attr::int(names::RESPONSE_MESSAGES, call.messages[1] as i64));
        call.attributes
            .push(Attr::int(names::REQUEST_BYTES, call.bytes[0] as i64));
        call.attributes
            .push(Attr::int(names::RESPONSE_BYTES, call.bytes[1] as i64));
        self.ctx.sink.ended(Call {
            span_id: call.span_id,
            conn: self.ctx.conn.clone(),
            name: call.name,
            start,
            // Never before it started: a session dropped without `closed` ends its calls at
            // `Instant::now()`, which fed (fuzzed) instants can pass (found by fuzzing).
            end,
            attributes: call.attributes,
            status,
            incomplete,
            shape: call.shape,
            remote_parent: call.remote_parent,
            own_trace: call.own_trace,
            events: call.events,
            children,
        });
    }
}

impl Session for GrpcSession {
    fn data(&mut self, dir: Direction, at: Instant, bytes: Bytes) {
        if self.gave_up.is_some() {
            return;
        }
        self.decoder.feed_bytes(dir, bytes, &mut self.out);
        self.handle(at);
    }

    fn eof(&mut self, dir: Direction, at: Instant) {
        if self.gave_up.is_some() {
            return;
        }
        self.decoder.eof(dir, &mut self.out);
        self.handle(at);
    }

    fn closed(&mut self, at: Instant) {
        if self.gave_up.is_none() {
            self.decoder.eof(Direction::ClientToServer, &mut self.out);
            self.decoder.eof(Direction::ServerToClient, &mut self.out);
            self.handle(at);
        }
        self.end_all(at);
    }

    fn injected(&mut self, injection: Injection) {
        self.injected.push(injection);
    }

    fn payloads(&mut self, on: bool) {
        self.decoder.set_payloads(on);
    }

    fn gave_up(&self) -> Option<&'static str> {
        self.gave_up
    }

    fn take_skipped(&mut self, report: &mut dyn FnMut(&'static str, u64)) {
        for (label, n) in self.skipped.drain(..) {
            report(label, n);
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.decoder.buffered_bytes()
    }
}

impl GrpcSession {
    /// A call sampled out at its start ended: whether its outcome (or the correlator) keeps it
    /// whole after all; if not, the sink has counted it.
    fn thin_kept(&self, call: &GrpcCall, at: Instant, incomplete: bool) -> bool {
        let code = call.status.as_ref().map(|(code, _)| *code);
        let status = match code {
            _ if incomplete => "incomplete",
            Some(code) => grpc_status::name(code),
            None => "unset",
        };
        let start = self.ctx.clock.wall(call.start);
        self.ctx.sink.thin_ended(&ThinEnd {
            span_id: call.span_id,
            conn: &self.ctx.conn,
            name: &call.name,
            start,
            end: self.ctx.clock.wall(at.max(call.start)),
            status,
            error: code.is_some_and(grpc_status::is_server_error),
            incomplete,
            unknown_method: call.method.is_none(),
        })
    }
}

/// The attributes a call has from its start: the rpc names and its containerd namespace.
fn start_attributes(name: &str, known: bool, namespace: Option<&str>) -> Vec<Attr> {
    // Room for what `finish` adds (status, message, four counts) and the transport and
    // peer attributes added at export, so the list is allocated once.
    let mut attributes = Vec::with_capacity(18);
    attributes.push(Attr::str(RPC_SYSTEM_NAME, "grpc"));
    if known {
        attributes.push(Attr::str(RPC_METHOD, name.to_owned()));
    } else {
        // Not a method the pool knows: the conventions' `_OTHER`, which also keeps the
        // RED metrics' method labels bounded by the pool, whatever paths clients send.
        attributes.push(Attr::str(RPC_METHOD, RPC_METHOD_OTHER));
        attributes.push(Attr::str(RPC_METHOD_ORIGINAL, name.to_owned()));
    }
    if let Some(ns) = namespace {
        attributes.push(Attr::str(names::CONTAINERD_NAMESPACE, ns));
    }
    attributes
}

/// Which payloads of a call to `path` anything needs: the schema's rules, event streams,
/// payload capture. Remembered per path (bounded), since every call of a method asks the same.
fn interest(schema: Schema, capture: bool) -> crate::wire::grpc::Interest {
    const MAX_REMEMBERED: usize = 1024;
    let mut known: FxHashMap<String, [bool; 2]> = FxHashMap::default();
    Box::new(move |path: &str| {
        if let Some(want) = known.get(path) {
            return *want;
        }
        let want = match schema.method(path) {
            Some(m) => {
                let events = LONG_LIVED.contains(&m.full_name.as_str());
                [
                    capture || schema::wants_payload(&m, Side::Request),
                    capture || events || schema::wants_payload(&m, Side::Response),
                ]
            }
            None => [false, false],
        };
        if known.len() < MAX_REMEMBERED {
            known.insert(path.to_string(), want);
        }
        want
    })
}

impl Drop for GrpcSession {
    /// A session dropped without `closed` (its observer task cancelled): its open calls still
    /// end, once, as incomplete, as an HTTP session's do (found by fuzzing).
    fn drop(&mut self) {
        if !self.calls.is_empty() {
            self.end_all(Instant::now());
        }
    }
}

/// Count a message whose payload was not decoded. Skipped for want of interest (or because
/// the rules already have their values) is not a loss, and shedding is counted on its own.
fn count_skipped(counts: &mut Vec<(&'static str, u64)>, reason: SkipReason) {
    if !matches!(reason, SkipReason::PayloadsOff | SkipReason::RulesSatisfied) {
        count(counts, reason.as_str());
    }
}

/// Add one to `label`'s count.
fn count(counts: &mut Vec<(&'static str, u64)>, label: &'static str) {
    match counts.iter_mut().find(|(l, _)| *l == label) {
        Some((_, n)) => *n += 1,
        None => counts.push((label, 1)),
    }
}

/// The event type of a CRI `GetContainerEvents` message (`CONTAINER_STARTED_EVENT`).
fn cri_event_type(schema: &Schema, method: &MethodInfo, data: &[u8]) -> String {
    let _ = schema;
    use prost_reflect::ReflectMessage as _;
    prost_reflect::DynamicMessage::decode(method.output.clone(), data)
        .ok()
        .and_then(|m| {
            let field = m.descriptor().get_field_by_name("container_event_type")?;
            let number = m.get_field(&field).as_enum_number()?;
            let kind = field.kind();
            let e = kind.as_enum()?;
            Some(e.get_value(number)?.name().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(&h), Some(&l)) = (bytes[i], bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
