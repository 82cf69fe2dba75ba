//! The tracer: where every session's calls end up. It keeps the calls that are open (so event
//! spans can link to their subscription, and the correlator can find parents), turns finished
//! calls into span records with their transport and peer attributes, and submits them to the
//! exporter without ever waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_semantic_conventions::attribute::{NETWORK_TRANSPORT, SERVER_ADDRESS};

use crate::metrics::Counter;
use crate::trace::attr::{Attr, names};
use crate::trace::call::{Call, CallSink, CallStart, ConnMeta, StreamEvent};
use crate::trace::export::Exporter;
use crate::trace::span::{
    LinkRecord, ParentRef, SpanId, SpanKind, SpanRecord, SpanStatus, TraceId, new_span_id, new_trace_id,
};

/// Open calls tracked at once; past it the oldest bookkeeping is forgotten (its span still
/// exports, only event links and parent lookups lose it). Bounds memory under a flood of
/// streams that never end.
pub const MAX_OPEN_CALLS: usize = 65_536;

/// What the tracer counts (exported on /metrics).
#[derive(Debug, Default)]
pub struct TracerCounters {
    /// Calls that ended (each became exactly one submitted span or one counted drop).
    pub calls: Counter,
    /// Calls that ended incomplete (connection closed or decoding given up first).
    pub incomplete: Counter,
    /// Event spans made from event streams.
    pub events: Counter,
    /// Calls dropped because their incoming trace context said not sampled.
    pub not_sampled: Counter,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    trace_id: TraceId,
}

/// Turns calls into spans and hands them to the exporter.
pub struct Tracer {
    exporter: Exporter,
    open: Mutex<HashMap<SpanId, Open>>,
    pub counters: TracerCounters,
}

impl Tracer {
    pub fn new(exporter: Exporter) -> Arc<Tracer> {
        Arc::new(Tracer {
            exporter,
            open: Mutex::new(HashMap::new()),
            counters: TracerCounters::default(),
        })
    }

    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SpanId, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The span record of a finished call: its own attributes, then transport and peers.
    fn span_of(&self, call: Call, trace_id: TraceId) -> SpanRecord {
        let mut attributes = call.attributes;
        conn_attributes(&call.conn, &mut attributes);
        if call.incomplete {
            attributes.push(Attr::bool(names::INCOMPLETE, true));
        }
        let (parent, trace_state) = match &call.remote_parent {
            Some(rp) => (
                Some(ParentRef {
                    span_id: rp.span_id,
                    remote: true,
                }),
                rp.trace_state.clone(),
            ),
            None => (None, None),
        };
        if parent.is_some() {
            attributes.push(Attr::str(names::LINK, "traceparent"));
        }
        SpanRecord {
            trace_id,
            span_id: call.span_id,
            parent,
            trace_state,
            name: call.name,
            kind: SpanKind::Server,
            start: call.start,
            end: call.end.max(call.start),
            attributes,
            events: call.events,
            links: Vec::new(),
            status: call.status,
            service: Arc::clone(&call.conn.service),
        }
    }
}

impl CallSink for Tracer {
    fn started(&self, call: &CallStart) {
        let trace_id = call
            .remote_parent
            .as_ref()
            .map(|rp| rp.trace_id)
            .unwrap_or_else(new_trace_id);
        let mut open = self.open();
        if open.len() >= MAX_OPEN_CALLS {
            // Forget an arbitrary entry: correctness of links degrades, memory does not grow.
            if let Some(k) = open.keys().next().copied() {
                open.remove(&k);
            }
        }
        open.insert(call.span_id, Open { trace_id });
    }

    fn ended(&self, call: Call) {
        self.counters.calls.inc();
        if call.incomplete {
            self.counters.incomplete.inc();
        }
        let opened = self.open().remove(&call.span_id);
        if call.remote_parent.as_ref().is_some_and(|rp| !rp.sampled) {
            // The caller's trace is not sampled: respect it, and count it (never silent).
            self.counters.not_sampled.inc();
            return;
        }
        let trace_id = match (&call.remote_parent, opened) {
            (Some(rp), _) => rp.trace_id,
            (None, Some(o)) => o.trace_id,
            (None, None) => new_trace_id(),
        };
        let span = self.span_of(call, trace_id);
        self.exporter.submit(span);
    }

    fn event(&self, event: StreamEvent) {
        self.counters.events.inc();
        let subscription = self.open().get(&event.subscription).copied();
        let links = subscription
            .map(|o| {
                vec![LinkRecord {
                    trace_id: o.trace_id,
                    span_id: event.subscription,
                    attributes: Vec::new(),
                }]
            })
            .unwrap_or_default();
        let mut attributes = event.attributes;
        conn_attributes(&event.conn, &mut attributes);
        self.exporter.submit(SpanRecord {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            parent: None,
            trace_state: None,
            name: event.name,
            kind: SpanKind::Internal,
            start: event.time,
            end: event.time,
            attributes,
            events: Vec::new(),
            links,
            status: SpanStatus::Unset,
            service: Arc::clone(&event.conn.service),
        });
    }
}

/// Transport and peer attributes every span of a connection carries.
pub fn conn_attributes(conn: &ConnMeta, out: &mut Vec<Attr>) {
    out.push(Attr::str(NETWORK_TRANSPORT, conn.transport));
    out.push(Attr::str(SERVER_ADDRESS, conn.upstream.clone()));
    out.push(Attr::str(names::LISTEN, conn.listen.clone()));
    if let Some(p) = &conn.client {
        out.push(Attr::int(names::CLIENT_PID, i64::from(p.pid)));
        if let Some(exe) = &p.executable {
            out.push(Attr::str(names::CLIENT_EXECUTABLE, exe.clone()));
        }
    }
    if let Some(p) = &conn.server {
        out.push(Attr::int(names::SERVER_PID, i64::from(p.pid)));
        if let Some(exe) = &p.executable {
            out.push(Attr::str(names::SERVER_EXECUTABLE, exe.clone()));
        }
    }
}
