//! runtime-tap's own counters, rendered in the Prometheus text format by the admin endpoint.
//! Labels come from small fixed sets (intercept name, direction, protocol, reason), never from
//! paths or ids, so the series count stays bounded whatever the traffic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::wire::Direction;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the observer of a connection stopped decoding it.
#[derive(Debug, Default)]
pub struct TapGiveUps {
    /// The tap queue overflowed: the observer fell behind the relay.
    pub queue_full: Counter,
    /// The process-wide decode memory budget could not take more (shedding step 2).
    pub decode_memory: Counter,
}

/// Protocols the sniffer tells apart: the sniffer's own enum, one list of labels.
pub use crate::wire::sniff::Protocol;

/// The counters of one intercept.
#[derive(Debug)]
pub struct InterceptMetrics {
    pub name: String,
    pub accepted: Counter,
    pub active: Gauge,
    pub accept_errors: Counter,
    pub upstream_connect_failures: Counter,
    pub relay_errors: Counter,
    bytes: [Counter; 2],
    pub tap_give_ups: TapGiveUps,
    sniffed: [Counter; 3],
    /// The listener is bound and accepting.
    pub listening: AtomicBool,
    /// Times a connection's observer stopped decoding payloads to catch up (shedding step 1).
    pub payload_sheds: Counter,
    /// Requests forwarded with a `traceparent` added (propagation on).
    pub propagation_injected: Counter,
    /// Connections whose propagation rewriter stopped rewriting (bytes forwarded unchanged).
    pub propagation_give_ups: Counter,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: Counter,
    /// Connections whose decoder gave up, by the decoder's reason label.
    decoder_give_ups: Mutex<BTreeMap<&'static str, u64>>,
    /// Payloads (gRPC messages, HTTP bodies and stream lines) a rule or capture wanted but
    /// that were not decoded, by the session's reason label.
    payloads_skipped: Mutex<BTreeMap<&'static str, u64>>,
}

impl InterceptMetrics {
    pub fn new(name: &str) -> Arc<InterceptMetrics> {
        Arc::new(InterceptMetrics {
            name: name.to_string(),
            accepted: Counter::default(),
            active: Gauge::default(),
            accept_errors: Counter::default(),
            upstream_connect_failures: Counter::default(),
            relay_errors: Counter::default(),
            bytes: Default::default(),
            tap_give_ups: TapGiveUps::default(),
            sniffed: Default::default(),
            listening: AtomicBool::new(false),
            payload_sheds: Counter::default(),
            propagation_injected: Counter::default(),
            propagation_give_ups: Counter::default(),
            connections_refused: Counter::default(),
            decoder_give_ups: Mutex::new(BTreeMap::new()),
            payloads_skipped: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn add_bytes(&self, dir: Direction, n: usize) {
        self.bytes[dir.index()].add(n as u64);
    }

    pub fn bytes(&self, dir: Direction) -> u64 {
        self.bytes[dir.index()].get()
    }

    pub fn sniffed(&self, p: Protocol) -> &Counter {
        &self.sniffed[p as usize]
    }

    /// Count a decoder giving up on a connection; `reason` is one of a decoder's fixed labels.
    pub fn decoder_give_up(&self, reason: &'static str) {
        count(&self.decoder_give_ups, reason, 1);
    }

    /// Decoder give-ups so far, by reason.
    pub fn decoder_give_ups(&self) -> Vec<(&'static str, u64)> {
        snapshot(&self.decoder_give_ups)
    }

    /// Count `n` payloads skipped for `reason`, one of a session's fixed labels.
    pub fn payloads_skipped(&self, reason: &'static str, n: u64) {
        count(&self.payloads_skipped, reason, n);
    }

    /// Payloads skipped so far, by reason.
    pub fn payloads_skipped_by_reason(&self) -> Vec<(&'static str, u64)> {
        snapshot(&self.payloads_skipped)
    }
}

fn count(map: &Mutex<BTreeMap<&'static str, u64>>, label: &'static str, n: u64) {
    *map.lock().unwrap_or_else(|p| p.into_inner()).entry(label).or_default() += n;
}

fn snapshot(map: &Mutex<BTreeMap<&'static str, u64>>) -> Vec<(&'static str, u64)> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect()
}

/// Every metric source of the process, for the admin endpoint.
#[derive(Default, Clone)]
pub struct Registry {
    pub intercepts: Vec<Arc<InterceptMetrics>>,
    /// Call and span accounting, when decoding runs.
    pub tracer: Option<Arc<crate::trace::tracer::Tracer>>,
    /// The process-wide decode memory budget.
    pub decode_budget: Option<Arc<crate::relay::budget::DecodeBudget>>,
}

impl Registry {
    /// Render in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let per_intercept: [Family; 5] = [
            (
                "runtime_tap_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                |m| m.accepted.get(),
            ),
            (
                "runtime_tap_connections_active",
                "gauge",
                "Client connections open now.",
                |m| m.active.get(),
            ),
            (
                "runtime_tap_accept_errors_total",
                "counter",
                "Failed accept calls (for example out of file descriptors).",
                |m| m.accept_errors.get(),
            ),
            (
                "runtime_tap_upstream_connect_failures_total",
                "counter",
                "Client connections closed because the upstream could not be reached.",
                |m| m.upstream_connect_failures.get(),
            ),
            (
                "runtime_tap_relay_errors_total",
                "counter",
                "Connections ended by a read or write error on either side.",
                |m| m.relay_errors.get(),
            ),
        ];
        for (name, kind, help, get) in per_intercept {
            header(&mut out, name, kind, help);
            for m in &self.intercepts {
                let _ = writeln!(out, "{name}{{intercept=\"{}\"}} {}", m.name, get(m));
            }
        }
        header(
            &mut out,
            "runtime_tap_connections_refused_total",
            "counter",
            "Client connections closed at once without relaying, by reason (limit = max_connections open).",
        );
        for m in &self.intercepts {
            let _ = writeln!(
                out,
                "runtime_tap_connections_refused_total{{intercept=\"{}\",reason=\"limit\"}} {}",
                m.name,
                m.connections_refused.get()
            );
        }
        header(
            &mut out,
            "runtime_tap_bytes_total",
            "counter",
            "Bytes relayed, by direction (c2s = client to upstream).",
        );
        for m in &self.intercepts {
            for dir in [Direction::ClientToServer, Direction::ServerToClient] {
                let _ = writeln!(
                    out,
                    "runtime_tap_bytes_total{{intercept=\"{}\",direction=\"{}\"}} {}",
                    m.name,
                    dir.as_str(),
                    m.bytes(dir)
                );
            }
        }
        header(
            &mut out,
            "runtime_tap_tap_give_ups_total",
            "counter",
            "Connections whose decoding was given up while bytes kept flowing, by reason.",
        );
        for m in &self.intercepts {
            let _ = writeln!(
                out,
                "runtime_tap_tap_give_ups_total{{intercept=\"{}\",reason=\"queue_full\"}} {}",
                m.name,
                m.tap_give_ups.queue_full.get()
            );
            let _ = writeln!(
                out,
                "runtime_tap_tap_give_ups_total{{intercept=\"{}\",reason=\"decode_memory\"}} {}",
                m.name,
                m.tap_give_ups.decode_memory.get()
            );
        }
        if let Some(budget) = &self.decode_budget {
            render_budget(&mut out, budget);
        }
        header(
            &mut out,
            "runtime_tap_protocols_sniffed_total",
            "counter",
            "Connections by the protocol seen in their first client bytes.",
        );
        for m in &self.intercepts {
            for p in Protocol::ALL {
                let _ = writeln!(
                    out,
                    "runtime_tap_protocols_sniffed_total{{intercept=\"{}\",protocol=\"{}\"}} {}",
                    m.name,
                    p.as_str(),
                    m.sniffed(p).get()
                );
            }
        }
        header(
            &mut out,
            "runtime_tap_payload_sheds_total",
            "counter",
            "Times decoding of payloads was paused on a connection to catch up with the relay.",
        );
        for m in &self.intercepts {
            let _ = writeln!(
                out,
                "runtime_tap_payload_sheds_total{{intercept=\"{}\"}} {}",
                m.name,
                m.payload_sheds.get()
            );
        }
        header(
            &mut out,
            "runtime_tap_propagation_injected_total",
            "counter",
            "Requests forwarded with a traceparent added (propagate_context on).",
        );
        for m in &self.intercepts {
            let _ = writeln!(
                out,
                "runtime_tap_propagation_injected_total{{intercept=\"{}\"}} {}",
                m.name,
                m.propagation_injected.get()
            );
        }
        header(
            &mut out,
            "runtime_tap_propagation_give_ups_total",
            "counter",
            "Connections whose propagation rewriter could not follow them and stopped rewriting (bytes forwarded unchanged).",
        );
        for m in &self.intercepts {
            let _ = writeln!(
                out,
                "runtime_tap_propagation_give_ups_total{{intercept=\"{}\"}} {}",
                m.name,
                m.propagation_give_ups.get()
            );
        }
        header(
            &mut out,
            "runtime_tap_decoder_give_ups_total",
            "counter",
            "Connections whose decoder gave up (bytes still relayed), by reason.",
        );
        for m in &self.intercepts {
            for (reason, n) in m.decoder_give_ups() {
                let _ = writeln!(
                    out,
                    "runtime_tap_decoder_give_ups_total{{intercept=\"{}\",reason=\"{reason}\"}} {n}",
                    m.name
                );
            }
        }
        header(
            &mut out,
            "runtime_tap_payloads_skipped_total",
            "counter",
            "Payloads a rule or capture wanted but that were not decoded (too large, not \
             decompressible, cut by a reset or close: truncated...), by reason; their calls are \
             still spans. event_shed: a delivered event left undecoded by load shedding, which \
             therefore has no event span.",
        );
        for m in &self.intercepts {
            for (reason, n) in m.payloads_skipped_by_reason() {
                let _ = writeln!(
                    out,
                    "runtime_tap_payloads_skipped_total{{intercept=\"{}\",reason=\"{reason}\"}} {n}",
                    m.name
                );
            }
        }
        if let Some(tracer) = &self.tracer {
            render_tracer(&mut out, tracer);
        }
        header(
            &mut out,
            "runtime_tap_listener_up",
            "gauge",
            "1 when the intercept's listener is bound and accepting.",
        );
        for m in &self.intercepts {
            let _ = writeln!(
                out,
                "runtime_tap_listener_up{{intercept=\"{}\"}} {}",
                m.name,
                u8::from(m.listening.load(Ordering::Relaxed))
            );
        }
        out
    }

    /// Ready when every listener is bound.
    pub fn ready(&self) -> bool {
        self.intercepts.iter().all(|m| m.listening.load(Ordering::Relaxed))
    }
}

/// A per-intercept series: name, type, help, and how to read it.
type Family = (&'static str, &'static str, &'static str, fn(&InterceptMetrics) -> u64);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_budget(out: &mut String, budget: &crate::relay::budget::DecodeBudget) {
    for (name, help, value) in [
        (
            "runtime_tap_decode_memory_bytes",
            "Decode state buffered now, all connections: tap queues plus decoder buffers.",
            budget.used(),
        ),
        (
            "runtime_tap_decode_memory_peak_bytes",
            "The most decode state ever buffered at once.",
            budget.peak(),
        ),
        (
            "runtime_tap_decode_memory_limit_bytes",
            "relay.decode_memory_limit: past 75% payloads are shed, at it connections give up decoding.",
            budget.limit(),
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn render_tracer(out: &mut String, tracer: &crate::trace::tracer::Tracer) {
    use crate::trace::export::DropReason;
    let c = &tracer.counters;
    header(
        out,
        "runtime_tap_calls_total",
        "counter",
        "Calls observed to their end (each is one exported span or one counted drop).",
    );
    let _ = writeln!(out, "runtime_tap_calls_total {}", c.calls.get());
    header(
        out,
        "runtime_tap_calls_incomplete_total",
        "counter",
        "Calls that ended with their connection or decoder, before their response ended.",
    );
    let _ = writeln!(out, "runtime_tap_calls_incomplete_total {}", c.incomplete.get());
    header(
        out,
        "runtime_tap_event_spans_total",
        "counter",
        "Event spans made from event streams.",
    );
    let _ = writeln!(out, "runtime_tap_event_spans_total {}", c.events.get());
    header(
        out,
        "runtime_tap_pod_spans_total",
        "counter",
        "Synthesized pod start root spans (no call of their own).",
    );
    let _ = writeln!(out, "runtime_tap_pod_spans_total {}", tracer.correlation().pod_roots);
    let e = tracer.exporter().counters();
    header(
        out,
        "runtime_tap_spans_submitted_total",
        "counter",
        "Spans handed to the export queue.",
    );
    let _ = writeln!(out, "runtime_tap_spans_submitted_total {}", e.submitted);
    header(
        out,
        "runtime_tap_spans_exported_total",
        "counter",
        "Spans every configured sink accepted.",
    );
    let _ = writeln!(out, "runtime_tap_spans_exported_total {}", e.exported);
    header(
        out,
        "runtime_tap_spans_dropped_total",
        "counter",
        "Spans or calls dropped, by reason.",
    );
    for reason in [DropReason::QueueFull, DropReason::ExportFailed, DropReason::Shutdown] {
        let _ = writeln!(
            out,
            "runtime_tap_spans_dropped_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            e.dropped(reason)
        );
    }
    tracer.red.render(out);
    let k = tracer.correlation();
    let _ = writeln!(
        out,
        "runtime_tap_spans_dropped_total{{reason=\"sampled_out\"}} {}",
        k.sampled_out
    );
    let _ = writeln!(
        out,
        "runtime_tap_spans_dropped_total{{reason=\"not_sampled\"}} {}",
        k.not_sampled
    );
    header(
        out,
        "runtime_tap_correlations_total",
        "counter",
        "Calls by how their parent was decided (runtime_tap.link).",
    );
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
        let _ = writeln!(out, "runtime_tap_correlations_total{{link=\"{link}\"}} {n}");
    }
    header(
        out,
        "runtime_tap_remote_parents_total",
        "counter",
        "Calls that carried a client's traceparent, by what became of it (config correlation.remote_parent).",
    );
    for outcome in crate::trace::remote::RemoteOutcome::ALL {
        let _ = writeln!(
            out,
            "runtime_tap_remote_parents_total{{outcome=\"{}\"}} {}",
            outcome.as_str(),
            k.remote.get(outcome)
        );
    }
    header(
        out,
        "runtime_tap_export_queue_spans",
        "gauge",
        "Spans waiting in the export queue.",
    );
    let _ = writeln!(out, "runtime_tap_export_queue_spans {}", e.queued);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_payloads_add_up_per_intercept_and_reason() {
        let m = InterceptMetrics::new("dockerd");
        m.payloads_skipped("too_large", 2);
        m.payloads_skipped("body_not_decoded", 1);
        m.payloads_skipped("too_large", 3);
        let text = Registry {
            intercepts: vec![m],
            ..Registry::default()
        }
        .render();
        assert!(
            text.contains("# TYPE runtime_tap_payloads_skipped_total counter"),
            "{text}"
        );
        assert!(text.contains("runtime_tap_payloads_skipped_total{intercept=\"dockerd\",reason=\"too_large\"} 5\n"));
        assert!(
            text.contains("runtime_tap_payloads_skipped_total{intercept=\"dockerd\",reason=\"body_not_decoded\"} 1\n")
        );
    }
}
