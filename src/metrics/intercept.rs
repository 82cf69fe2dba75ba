//! The counters of one intercept, kept by the relay and the observer, and their families. They
//! render in three parts ([`InterceptPart`]) because /metrics shows the decode budget and the
//! tracer's families between them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Counter, Family, FmtMetrics, Gauge};
use crate::wire::Direction;

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
    /// Of `bytes`, those moved with splice(2), never in user space (`relay::splice`).
    spliced: [Counter; 2],
    /// Directions that wanted to splice and were refused by the kernel (copy loop instead).
    pub splice_refused: Counter,
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
    /// GOAWAY frames the shutdown drain sent to HTTP/2 clients (two per drained connection).
    pub goaways_sent: Counter,
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
            spliced: Default::default(),
            splice_refused: Counter::default(),
            tap_give_ups: TapGiveUps::default(),
            sniffed: Default::default(),
            listening: AtomicBool::new(false),
            payload_sheds: Counter::default(),
            propagation_injected: Counter::default(),
            propagation_give_ups: Counter::default(),
            goaways_sent: Counter::default(),
            connections_refused: Counter::default(),
            decoder_give_ups: Mutex::new(BTreeMap::new()),
            payloads_skipped: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn add_bytes(&self, dir: Direction, n: usize) {
        self.bytes[dir.index()].add(n as u64);
    }

    /// `n` bytes relayed with splice: counted in both `bytes` and `spliced`.
    pub fn add_spliced(&self, dir: Direction, n: usize) {
        self.bytes[dir.index()].add(n as u64);
        self.spliced[dir.index()].add(n as u64);
    }

    pub fn spliced(&self, dir: Direction) -> u64 {
        self.spliced[dir.index()].get()
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

/// Where a family of the intercepts shows on /metrics, relative to the other components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterceptPart {
    /// Connections, bytes and tap give-ups: before the decode budget.
    Connections,
    /// Sniffing, shedding, propagation, decoder give-ups and skipped payloads: after the decode
    /// budget, before the tracer.
    Observers,
    /// Listener state: last.
    Listeners,
}

/// One part of every intercept's families.
pub struct Intercepts<'a> {
    pub all: &'a [Arc<InterceptMetrics>],
    pub part: InterceptPart,
}

impl FmtMetrics for Intercepts<'_> {
    fn fmt_metrics(&self, out: &mut String) {
        for (family, samples) in families(self.part) {
            family.header(out);
            for m in self.all {
                samples(&family, m, out);
            }
        }
    }
}

/// A per-intercept family and how to write one intercept's samples of it.
type PerIntercept = (Family, fn(&Family, &InterceptMetrics, &mut String));

/// The one sample of a family with only the intercept label.
fn one(f: &Family, m: &InterceptMetrics, out: &mut String, value: u64) {
    f.sample(out, &[("intercept", &m.name)], value);
}

/// One sample per label value of `label`.
fn by(f: &Family, m: &InterceptMetrics, out: &mut String, label: &str, values: &[(&str, u64)]) {
    for (v, n) in values {
        f.sample(out, &[("intercept", &m.name), (label, v)], n);
    }
}

fn families(part: InterceptPart) -> Vec<PerIntercept> {
    match part {
        InterceptPart::Connections => connection_families().to_vec(),
        InterceptPart::Observers => observer_families().to_vec(),
        InterceptPart::Listeners => vec![(
            Family::gauge(
                "runtime_tap_listener_up",
                "1 when the intercept's listener is bound and accepting.",
            ),
            |f, m, out| one(f, m, out, u64::from(m.listening.load(Ordering::Relaxed))),
        )],
    }
}

fn connection_families() -> [PerIntercept; 10] {
    [
        (
            Family::counter("runtime_tap_connections_accepted_total", "Client connections accepted."),
            |f, m, out| one(f, m, out, m.accepted.get()),
        ),
        (
            Family::gauge("runtime_tap_connections_active", "Client connections open now."),
            |f, m, out| one(f, m, out, m.active.get()),
        ),
        (
            Family::counter(
                "runtime_tap_accept_errors_total",
                "Failed accept calls (for example out of file descriptors).",
            ),
            |f, m, out| one(f, m, out, m.accept_errors.get()),
        ),
        (
            Family::counter(
                "runtime_tap_upstream_connect_failures_total",
                "Client connections closed because the upstream could not be reached.",
            ),
            |f, m, out| one(f, m, out, m.upstream_connect_failures.get()),
        ),
        (
            Family::counter(
                "runtime_tap_relay_errors_total",
                "Connections ended by a read or write error on either side.",
            ),
            |f, m, out| one(f, m, out, m.relay_errors.get()),
        ),
        (
            Family::counter(
                "runtime_tap_connections_refused_total",
                "Client connections closed at once without relaying, by reason (limit = max_connections open).",
            ),
            |f, m, out| by(f, m, out, "reason", &[("limit", m.connections_refused.get())]),
        ),
        (
            Family::counter(
                "runtime_tap_bytes_total",
                "Bytes relayed, by direction (c2s = client to upstream).",
            ),
            |f, m, out| {
                let values = [Direction::ClientToServer, Direction::ServerToClient].map(|d| (d.as_str(), m.bytes(d)));
                by(f, m, out, "direction", &values);
            },
        ),
        (
            Family::counter(
                "runtime_tap_spliced_bytes_total",
                "Of the bytes relayed, those moved with splice(2) on directions nothing decodes, by direction.",
            ),
            |f, m, out| {
                let values = [Direction::ClientToServer, Direction::ServerToClient].map(|d| (d.as_str(), m.spliced(d)));
                by(f, m, out, "direction", &values);
            },
        ),
        (
            Family::counter(
                "runtime_tap_splice_refused_total",
                "Directions that would have spliced but the kernel refused splice(2); they use the copy loop.",
            ),
            |f, m, out| one(f, m, out, m.splice_refused.get()),
        ),
        (
            Family::counter(
                "runtime_tap_tap_give_ups_total",
                "Connections whose decoding was given up while bytes kept flowing, by reason.",
            ),
            |f, m, out| {
                let g = &m.tap_give_ups;
                by(
                    f,
                    m,
                    out,
                    "reason",
                    &[
                        ("queue_full", g.queue_full.get()),
                        ("decode_memory", g.decode_memory.get()),
                    ],
                );
            },
        ),
    ]
}

fn observer_families() -> [PerIntercept; 7] {
    [
        (
            Family::counter(
                "runtime_tap_protocols_sniffed_total",
                "Connections by the protocol seen in their first client bytes.",
            ),
            |f, m, out| {
                let values = Protocol::ALL.map(|p| (p.as_str(), m.sniffed(p).get()));
                by(f, m, out, "protocol", &values);
            },
        ),
        (
            Family::counter(
                "runtime_tap_payload_sheds_total",
                "Times decoding of payloads was paused on a connection to catch up with the relay.",
            ),
            |f, m, out| one(f, m, out, m.payload_sheds.get()),
        ),
        (
            Family::counter(
                "runtime_tap_propagation_injected_total",
                "Requests forwarded with a traceparent added (propagate_context on).",
            ),
            |f, m, out| one(f, m, out, m.propagation_injected.get()),
        ),
        (
            Family::counter(
                "runtime_tap_propagation_give_ups_total",
                "Connections whose propagation rewriter could not follow them and stopped rewriting (bytes forwarded unchanged).",
            ),
            |f, m, out| one(f, m, out, m.propagation_give_ups.get()),
        ),
        (
            Family::counter(
                "runtime_tap_goaways_sent_total",
                "GOAWAY frames runtime-tap sent to HTTP/2 clients while draining at shutdown (two per drained connection).",
            ),
            |f, m, out| one(f, m, out, m.goaways_sent.get()),
        ),
        (
            Family::counter(
                "runtime_tap_decoder_give_ups_total",
                "Connections whose decoder gave up (bytes still relayed), by reason.",
            ),
            |f, m, out| by(f, m, out, "reason", &m.decoder_give_ups()),
        ),
        (
            Family::counter(
                "runtime_tap_payloads_skipped_total",
                "Payloads a rule or capture wanted but that were not decoded (too large, not \
                 decompressible, cut by a reset or close: truncated...), by reason; their calls are \
                 still spans. event_shed: a delivered event left undecoded by load shedding, which \
                 therefore has no event span.",
            ),
            |f, m, out| by(f, m, out, "reason", &m.payloads_skipped_by_reason()),
        ),
    ]
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
        let mut text = String::new();
        Intercepts {
            all: &[m],
            part: InterceptPart::Observers,
        }
        .fmt_metrics(&mut text);
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
