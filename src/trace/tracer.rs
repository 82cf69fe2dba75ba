//! The tracer: where every session's calls end up. It hands them to the correlator (which
//! decides parents and holds a call until its trace is known), and submits the span records
//! it releases to the exporter without ever waiting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use opentelemetry_semantic_conventions::attribute::{NETWORK_TRANSPORT, SERVER_ADDRESS};

use crate::metrics::Counter;
use crate::trace::attr::{Attr, names};
use crate::trace::call::{Call, CallSink, CallStart, ConnMeta, StreamEvent};
use crate::trace::correlate::{CorrelateCounts, Correlator};
use crate::trace::export::Exporter;
use crate::trace::red::Red;
use crate::trace::remote::RemoteParentPolicy;
use crate::trace::sample::Sampler;
use crate::trace::span::{LinkRecord, SpanId, SpanKind, SpanRecord, SpanStatus, new_span_id, new_trace_id};

/// What the tracer counts (exported on /metrics).
#[derive(Debug, Default)]
pub struct TracerCounters {
    /// Calls that ended (each became exactly one submitted span or one counted drop).
    pub calls: Counter,
    /// Calls that ended incomplete (connection closed or decoding given up first).
    pub incomplete: Counter,
    /// Event spans made from event streams.
    pub events: Counter,
}

/// Turns calls into spans and hands them to the exporter.
pub struct Tracer {
    exporter: Exporter,
    correlator: Mutex<Correlator>,
    pub counters: TracerCounters,
    /// Call durations by intercept, method and status, for /metrics.
    pub red: Red,
}

/// How often held calls are looked at (deadlines, pod roots, retention).
const TICK: Duration = Duration::from_millis(200);

impl Tracer {
    pub fn new(exporter: Exporter, sampler: Sampler, remote: RemoteParentPolicy) -> Arc<Tracer> {
        Arc::new(Tracer {
            exporter,
            correlator: Mutex::new(Correlator::with_sampler(sampler).with_remote_policy(remote)),
            counters: TracerCounters::default(),
            red: Red::default(),
        })
    }

    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    fn correlator(&self) -> std::sync::MutexGuard<'_, Correlator> {
        self.correlator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the correlator decided so far.
    pub fn correlation(&self) -> CorrelateCounts {
        self.correlator().counts
    }

    fn submit(&self, spans: Vec<SpanRecord>) {
        for span in spans {
            self.exporter.submit(span);
        }
    }

    /// Drive deadlines until `stop`; then export everything still held.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let mut out = Vec::new();
            self.correlator().tick(SystemTime::now(), &mut out);
            self.submit(out);
        }
        self.flush();
    }

    /// Export every held call now (shutdown).
    pub fn flush(&self) {
        let mut out = Vec::new();
        self.correlator().flush(SystemTime::now(), &mut out);
        self.submit(out);
    }
}

impl CallSink for Tracer {
    fn started(&self, call: &CallStart) {
        let mut out = Vec::new();
        self.correlator().started(call, &mut out);
        self.submit(out);
    }

    fn learned(&self, span_id: SpanId, attributes: &[Attr]) {
        self.correlator().learned(span_id, attributes);
    }

    fn ended(&self, call: Call) {
        self.counters.calls.inc();
        self.red.record(&call);
        if call.incomplete {
            self.counters.incomplete.inc();
        }
        let mut out = Vec::new();
        self.correlator().ended(call, SystemTime::now(), &mut out);
        self.submit(out);
    }

    fn event(&self, event: StreamEvent) {
        self.counters.events.inc();
        let subscription = self.correlator().link_target(event.subscription);
        let links = subscription
            .map(|trace_id| {
                vec![LinkRecord {
                    trace_id,
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
    out.reserve(7);
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
