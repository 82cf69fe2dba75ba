//! runtime-tap's own account of its calls and spans, read from its admin endpoint's /metrics
//! with a plain HTTP/1.1 GET (no client library: the text format is a line per series).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde::Serialize;

/// Longest a scrape may take (connect, request, whole answer).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two scrapes while waiting for the counts to settle.
const SETTLE_PERIOD: Duration = Duration::from_millis(100);

/// A loopback address for runtime-tap's admin endpoint: a port the kernel just handed out and
/// that nothing holds any more (runtime-tap binds it a moment later).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port for the admin endpoint")?;
    Ok(l.local_addr()?)
}

/// The series runtime-tap exports about calls and spans, summed over intercepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TapCounters {
    /// `runtime_tap_calls_total`: calls observed to their end.
    pub calls: u64,
    /// `runtime_tap_calls_incomplete_total`.
    pub calls_incomplete: u64,
    /// `runtime_tap_spans_submitted_total`: spans handed to the export queue.
    pub spans_submitted: u64,
    /// `runtime_tap_spans_exported_total`: spans every sink accepted.
    pub spans_exported: u64,
    /// `runtime_tap_spans_dropped_total`, by reason (every reason runtime-tap lists).
    pub spans_dropped: BTreeMap<String, u64>,
    /// `runtime_tap_export_queue_spans` (a gauge: not a difference in [`TapCounters::since`]).
    pub export_queue: u64,
    /// `runtime_tap_tap_give_ups_total`, by reason: connections whose decoding was given up,
    /// so that their later calls are neither spans nor drops.
    pub tap_give_ups: BTreeMap<String, u64>,
    /// `runtime_tap_decoder_give_ups_total`, by reason.
    pub decoder_give_ups: BTreeMap<String, u64>,
    /// `runtime_tap_payload_sheds_total`.
    pub payload_sheds: u64,
}

impl TapCounters {
    /// Spans dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.spans_dropped.values().sum()
    }

    /// Drops the export pipeline itself counts (the ones in its accounting identity
    /// `submitted == exported + queue_full + export_failed + shutdown` once the queue is empty).
    fn export_drops(&self) -> u64 {
        ["queue_full", "export_failed", "shutdown"]
            .iter()
            .filter_map(|r| self.spans_dropped.get(*r))
            .sum()
    }

    /// The counts since `before` (the queue gauge as it is now).
    pub fn since(&self, before: &TapCounters) -> TapCounters {
        let minus = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .collect()
        };
        TapCounters {
            calls: self.calls.saturating_sub(before.calls),
            calls_incomplete: self.calls_incomplete.saturating_sub(before.calls_incomplete),
            spans_submitted: self.spans_submitted.saturating_sub(before.spans_submitted),
            spans_exported: self.spans_exported.saturating_sub(before.spans_exported),
            spans_dropped: minus(&self.spans_dropped, &before.spans_dropped),
            export_queue: self.export_queue,
            tap_give_ups: minus(&self.tap_give_ups, &before.tap_give_ups),
            decoder_give_ups: minus(&self.decoder_give_ups, &before.decoder_give_ups),
            payload_sheds: self.payload_sheds.saturating_sub(before.payload_sheds),
        }
    }

    /// `reason=n` pairs, for the table.
    pub fn by_reason(m: &BTreeMap<String, u64>) -> String {
        if m.is_empty() {
            return "none".into();
        }
        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

/// GETs `http://{addr}/metrics` and reads the call and span series.
pub fn scrape(addr: SocketAddr) -> anyhow::Result<TapCounters> {
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("read http://{addr}/metrics"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("http://{addr}/metrics: no end of headers"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "http://{addr}/metrics: {}",
        head.lines().next().unwrap_or("")
    );
    // hyper answers a small body with a content-length, not chunked: the body is the text.
    ensure!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "http://{addr}/metrics: chunked answer not read"
    );
    Ok(parse(body))
}

/// The series of `text` (Prometheus text format) this benchmark reads.
fn parse(text: &str) -> TapCounters {
    let mut c = TapCounters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let value = value as u64;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let reason = || {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("reason=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        match name {
            "runtime_tap_calls_total" => c.calls += value,
            "runtime_tap_calls_incomplete_total" => c.calls_incomplete += value,
            "runtime_tap_spans_submitted_total" => c.spans_submitted += value,
            "runtime_tap_spans_exported_total" => c.spans_exported += value,
            "runtime_tap_export_queue_spans" => c.export_queue += value,
            "runtime_tap_payload_sheds_total" => c.payload_sheds += value,
            "runtime_tap_spans_dropped_total" => *c.spans_dropped.entry(reason()).or_default() += value,
            "runtime_tap_tap_give_ups_total" => *c.tap_give_ups.entry(reason()).or_default() += value,
            "runtime_tap_decoder_give_ups_total" => *c.decoder_give_ups.entry(reason()).or_default() += value,
            _ => {}
        }
    }
    c
}

/// Scrapes until runtime-tap's export has caught up (queue empty, every submitted span
/// exported or dropped) and two scrapes in a row agree, at most `timeout`. The last counts,
/// and whether they settled.
pub fn settle(addr: SocketAddr, timeout: Duration) -> anyhow::Result<(TapCounters, bool)> {
    let start = Instant::now();
    let mut last = scrape(addr)?;
    loop {
        std::thread::sleep(SETTLE_PERIOD);
        let now = scrape(addr)?;
        let caught_up = now.export_queue == 0 && now.spans_submitted == now.spans_exported + now.export_drops();
        if caught_up && now == last {
            return Ok((now, true));
        }
        if start.elapsed() > timeout {
            return Ok((now, false));
        }
        last = now;
    }
}
