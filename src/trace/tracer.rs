//! The tracer: where every session's calls end up. It hands them to the correlator (which
//! decides parents and holds a call until its trace is known), and submits the span records
//! it releases to the exporter without ever waiting.
//!
//! It also renders the call and span families of /metrics. The correlator's counts are read
//! from a copy published after each of its operations, so a scrape never waits on the
//! correlator's lock, which every session's calls take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use opentelemetry_semantic_conventions::attribute::{NETWORK_TRANSPORT, SERVER_ADDRESS};

use crate::metrics::{Counter, Family, FmtMetrics};
use crate::trace::attr::{Attr, names};
use crate::trace::call::{Begun, Call, CallSink, CallStart, ConnMeta, StreamEvent, ThinEnd};
use crate::trace::correlate::{CorrelateCounts, Correlator};
use crate::trace::export::{Exporter, SPANS_DROPPED};
use crate::trace::pod_start::PodStarts;
use crate::trace::red::Red;
use crate::trace::remote::{CorrelationConfig, RemoteOutcome};
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
    /// Calls sampled out at their start and not kept by their outcome (drops `sampled_out`,
    /// with the correlator's).
    pub sampled_out_early: Counter,
}

/// Turns calls into spans and hands them to the exporter.
pub struct Tracer {
    exporter: Exporter,
    correlator: Mutex<Correlator>,
    /// The correlator's counts as of its last operation (see the module doc).
    counts: Mutex<CorrelateCounts>,
    /// Ended calls the correlator has not exported yet, as of its last tick (a gauge: taken
    /// each tick, not after every call, where counting it would cost the byte path).
    pending: AtomicU64,
    pub counters: TracerCounters,
    /// Call durations by intercept, method and status, for /metrics.
    pub red: Red,
    /// Pod start phases and SLI, for /metrics.
    pub pod_starts: PodStarts,
    /// Calls at least this slow are kept, also when sampled out at their start.
    slow: Duration,
    /// Told of every call span as it is submitted, with the trace the correlator gave it
    /// (the flight recorder waits for it), if set.
    on_submit: std::sync::OnceLock<SubmitHook>,
}

/// See [`Tracer::on_submit`].
pub type SubmitHook = Box<dyn Fn(&SpanRecord) + Send + Sync>;

/// How often held calls are looked at (deadlines, pod roots, retention).
const TICK: Duration = Duration::from_millis(200);

impl Tracer {
    pub fn new(exporter: Exporter, sampler: Sampler, correlation: &CorrelationConfig) -> Arc<Tracer> {
        let slow = sampler.slow();
        let correlator = Correlator::with_sampler(sampler)
            .with_remote_policy(correlation.remote_parent)
            .with_client_spans(correlation.client_spans);
        Arc::new(Tracer {
            slow,
            exporter,
            correlator: Mutex::new(correlator),
            counts: Mutex::new(CorrelateCounts::default()),
            pending: AtomicU64::new(0),
            counters: TracerCounters::default(),
            red: Red::default(),
            pod_starts: PodStarts::default(),
            on_submit: std::sync::OnceLock::new(),
        })
    }

    /// Have `hook` told of every span the correlator releases, before it is queued for
    /// export: the one place a call's trace id is known. Set once; it must not block (it
    /// runs under no lock, on the thread that ended the call or ticked). Returns false when
    /// a hook was set before.
    pub fn on_submit(&self, hook: SubmitHook) -> bool {
        self.on_submit.set(hook).is_ok()
    }

    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    fn correlator(&self) -> std::sync::MutexGuard<'_, Correlator> {
        self.correlator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the correlator, then publish its counts.
    fn correlate<R>(&self, f: impl FnOnce(&mut Correlator) -> R) -> R {
        let mut c = self.correlator();
        let r = f(&mut c);
        // Still under the correlator's lock, so that published counts never go backwards.
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = c.counts;
        r
    }

    /// What the correlator decided so far (as of its last operation), with the calls the
    /// tracer dropped at their end after sampling them out at their start.
    pub fn correlation(&self) -> CorrelateCounts {
        let mut counts = *self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.sampled_out += self.counters.sampled_out_early.get();
        counts
    }

    fn submit(&self, spans: Vec<SpanRecord>) {
        let hook = self.on_submit.get();
        for span in spans {
            if let Some(hook) = hook {
                hook(&span);
            }
            self.pod_starts.record(&span);
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
            let pending = self.correlate(|c| {
                c.tick(SystemTime::now(), &mut out);
                c.pending()
            });
            self.pending.store(pending as u64, Ordering::Relaxed);
            self.submit(out);
        }
        self.flush();
    }

    /// Export every held call now (shutdown).
    pub fn flush(&self) {
        let mut out = Vec::new();
        self.correlate(|c| c.flush(SystemTime::now(), &mut out));
        self.submit(out);
    }
}

impl CallSink for Tracer {
    fn started(&self, call: &CallStart) {
        let mut out = Vec::new();
        self.correlate(|c| c.started(call, &mut out));
        self.submit(out);
    }

    fn begin(&self, call: &CallStart) -> Begun {
        let mut out = Vec::new();
        let begun = self.correlate(|c| c.begin(call, &mut out));
        self.submit(out);
        begun
    }

    /// A call sampled out at its start: kept whole if it failed, was slow or was promoted
    /// since (the correlator says); otherwise its RED histogram and its accounting are all it
    /// costs: one call, one `sampled_out` drop.
    fn thin_ended(&self, call: &ThinEnd<'_>) -> bool {
        let promoted = self.correlate(|c| c.thin_ended(call.span_id));
        if promoted || call.error || call.end.duration_since(call.start).unwrap_or_default() >= self.slow {
            return true;
        }
        self.counters.calls.inc();
        if call.incomplete {
            self.counters.incomplete.inc();
        }
        self.red.record_parts(
            &call.conn.service,
            call.name,
            call.unknown_method,
            std::borrow::Cow::Borrowed(call.status),
            call.start,
            call.end,
        );
        self.counters.sampled_out_early.inc();
        false
    }

    fn learned(&self, span_id: SpanId, attributes: &[Attr]) {
        self.correlate(|c| c.learned(span_id, attributes));
    }

    fn ended(&self, call: Call) {
        self.counters.calls.inc();
        self.red.record(&call);
        if call.incomplete {
            self.counters.incomplete.inc();
        }
        let mut out = Vec::new();
        self.correlate(|c| c.ended(call, SystemTime::now(), &mut out));
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

impl FmtMetrics for Tracer {
    /// The tracer's, the export pipeline's and the correlator's families, interleaved in the
    /// order /metrics has always shown them.
    fn fmt_metrics(&self, out: &mut String) {
        let counts = self.correlation();
        let export = self.exporter.counters();
        self.counters.fmt_metrics(out);
        fmt_pod_spans(&counts, out);
        export.fmt_flow(out);
        // Sampling's drops are samples of the export pipeline's drop family: right after it,
        // so that family's samples stay together as the text format requires.
        fmt_correlation(&counts, out);
        self.red.fmt_metrics(out);
        export.fmt_queue(out);
        self.pod_starts.fmt_metrics(out);
        let pending = Family::gauge(
            "runtime_tap_correlator_pending_calls",
            "Ended calls not exported yet: deciding their parent or held for its trace (as of the last tick).",
        );
        pending.header(out);
        pending.sample(out, &[], self.pending.load(Ordering::Relaxed));
    }
}

impl FmtMetrics for TracerCounters {
    fn fmt_metrics(&self, out: &mut String) {
        for (family, counter) in [
            (
                Family::counter(
                    "runtime_tap_calls_total",
                    "Calls observed to their end (each is one exported span or one counted drop).",
                ),
                &self.calls,
            ),
            (
                Family::counter(
                    "runtime_tap_calls_incomplete_total",
                    "Calls that ended with their connection or decoder, before their response ended.",
                ),
                &self.incomplete,
            ),
            (
                Family::counter("runtime_tap_event_spans_total", "Event spans made from event streams."),
                &self.events,
            ),
        ] {
            family.header(out);
            family.sample(out, &[], counter.get());
        }
    }
}

fn fmt_pod_spans(k: &CorrelateCounts, out: &mut String) {
    let family = Family::counter(
        "runtime_tap_pod_spans_total",
        "Synthesized pod start root spans (no call of their own).",
    );
    family.header(out);
    family.sample(out, &[], k.pod_roots);
    let family = Family::counter(
        "runtime_tap_child_spans_total",
        "Spans synthesized under an exported call: per-layer spans of image pulls (no call of their own).",
    );
    family.header(out);
    family.sample(out, &[], k.child_spans);
    let family = Family::counter(
        "runtime_tap_client_spans_total",
        "CLIENT spans made above calls from clients behind no other intercept ([correlation] client_spans; no call of their own).",
    );
    family.header(out);
    family.sample(out, &[], k.client_spans);
}

/// The calls sampling dropped (under the export pipeline's drop family, which they follow),
/// the correlator's parent decisions and what became of remote parents.
fn fmt_correlation(k: &CorrelateCounts, out: &mut String) {
    SPANS_DROPPED.sample(out, &[("reason", &"sampled_out")], k.sampled_out);
    SPANS_DROPPED.sample(out, &[("reason", &"not_sampled")], k.not_sampled);
    let links = Family::counter(
        "runtime_tap_correlations_total",
        "Calls by how their parent was decided (runtime_tap.link).",
    );
    links.header(out);
    for (link, n) in [
        ("entity", k.by_entity),
        ("stream", k.by_stream),
        ("temporal", k.temporal),
        ("outlived", k.outlived),
        ("ambiguous", k.ambiguous),
        ("root", k.roots),
        ("late", k.late),
        ("evicted", k.evicted),
    ] {
        links.sample(out, &[("link", &link)], n);
    }
    let remote = Family::counter(
        "runtime_tap_remote_parents_total",
        "Calls that carried a client's traceparent, by what became of it (config correlation.remote_parent).",
    );
    remote.header(out);
    for outcome in RemoteOutcome::ALL {
        remote.sample(out, &[("outcome", &outcome.as_str())], k.remote.get(outcome));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::export::ExportConfig;

    /// A scrape while a session's call holds the correlator renders at once, from the
    /// published counts.
    #[tokio::test(flavor = "current_thread")]
    async fn a_scrape_never_waits_on_the_correlator() {
        let export = ExportConfig {
            // A sink is required; the export task never runs (no await), so nothing is written.
            file: Some(std::env::temp_dir().join(format!("runtime-tap-tracer-{}.json", std::process::id()))),
            ..ExportConfig::default()
        };
        let (exporter, _handle) = Exporter::start(export, "host".into()).unwrap();
        let tracer = Tracer::new(exporter, Sampler::keep_all(), &CorrelationConfig::default());
        let held = tracer.correlator();
        let scraper = Arc::clone(&tracer);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = String::new();
            scraper.fmt_metrics(&mut out);
            let _ = tx.send(out);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the scrape waited on the correlator's lock");
        drop(held);
        assert!(
            out.contains("runtime_tap_correlations_total{link=\"root\"} 0\n"),
            "{out}"
        );
    }
}
