//! Per-run records, medians across rounds, the table on stdout and the JSON file.

use serde::Serialize;

use crate::targets::Target;

/// How a workload counts its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Calls: calls/s, latency per call, CPU µs per call.
    Calls,
    /// Bytes: MB/s (10^6 B), latency = whole transfer, CPU ms per GiB.
    Bytes,
    /// Connections opened: conns/s, latency per connection (connect, handshake, one call),
    /// CPU µs per connection, RSS with all of them held.
    Conns,
}

/// One timed run of one target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub round: usize,
    pub error: Option<String>,
    pub ops: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    /// calls/s, MB/s or conns/s.
    pub rate: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub relay_cpu_s: Option<f64>,
    /// µs per call/connection, or ms per GiB.
    pub relay_cpu_per_op: Option<f64>,
    pub client_cpu_per_op: f64,
    pub rss_peak_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub pss_end_kib: Option<u64>,
    pub procs_end: Option<usize>,
    pub peak_reset: bool,
    pub spans: Option<u64>,
    pub expected_spans: Option<u64>,
    pub spans_after_close: Option<u64>,
}

/// One target on one workload, across rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub target: String,
    pub runs: usize,
    pub runs_ok: usize,
    pub error: Option<String>,
    /// Medians across the rounds that succeeded.
    pub rate: Option<f64>,
    /// Median over rounds of (this target's rate / direct's rate in the same round).
    pub ratio_to_direct: Option<f64>,
    pub p50_us: Option<f64>,
    /// None for the byte workloads: one transfer per round has no tail.
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Median over rounds of (this target's p50 − direct's p50 in the same round).
    pub added_p50_us: Option<f64>,
    pub relay_cpu_per_op: Option<f64>,
    pub client_cpu_per_op: Option<f64>,
    /// Tree VmRSS after start, before the workload's first connection.
    pub rss_idle_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub pss_end_kib: Option<u64>,
    /// Totals over rounds (decoding and export on only).
    pub spans: Option<u64>,
    pub expected_spans: Option<u64>,
    /// Of `spans`, those that arrived only once the client had closed its connections.
    pub spans_after_close: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    pub workload: String,
    pub description: String,
    pub unit: Unit,
    /// Calls per run, bytes per run, or connections.
    pub size: u64,
    pub concurrency: usize,
    pub summaries: Vec<Summary>,
    pub runs: Vec<TargetRuns>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetRuns {
    pub target: String,
    pub runs: Vec<Run>,
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Nearest-rank percentile of sorted `v`, microseconds.
pub fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

/// Summaries of every target of a workload from its runs, ratios against direct per round.
pub fn summarize(unit: Unit, runs: &[(Target, Vec<Run>)], rss_idle: &[(Target, Option<u64>)]) -> Vec<Summary> {
    let direct: Option<&Vec<Run>> = runs.iter().find(|(t, _)| *t == Target::Direct).map(|(_, r)| r);
    let direct_round = |round: usize| direct.and_then(|d| d.iter().find(|r| r.round == round && r.error.is_none()));
    runs.iter()
        .map(|(t, rs)| {
            let ok: Vec<&Run> = rs.iter().filter(|r| r.error.is_none()).collect();
            let med = |f: &dyn Fn(&Run) -> Option<f64>| median(ok.iter().filter_map(|r| f(r)).collect());
            let medk = |f: &dyn Fn(&Run) -> Option<u64>| {
                median(ok.iter().filter_map(|r| f(r).map(|v| v as f64)).collect()).map(|v| v as u64)
            };
            let tail = unit != Unit::Bytes;
            let spans: Vec<&Run> = ok.iter().copied().filter(|r| r.spans.is_some()).collect();
            Summary {
                target: t.name().to_string(),
                runs: rs.len(),
                runs_ok: ok.len(),
                error: rs.iter().find_map(|r| r.error.clone()),
                rate: med(&|r| Some(r.rate)),
                ratio_to_direct: med(&|r| direct_round(r.round).map(|d| r.rate / d.rate)),
                p50_us: med(&|r| Some(r.p50_us)),
                p90_us: if tail { med(&|r| Some(r.p90_us)) } else { None },
                p99_us: if tail { med(&|r| Some(r.p99_us)) } else { None },
                added_p50_us: med(&|r| direct_round(r.round).map(|d| r.p50_us - d.p50_us)),
                relay_cpu_per_op: med(&|r| r.relay_cpu_per_op),
                client_cpu_per_op: med(&|r| Some(r.client_cpu_per_op)),
                rss_idle_kib: rss_idle.iter().find(|(x, _)| x == t).and_then(|(_, v)| *v),
                rss_peak_kib: medk(&|r| r.rss_peak_kib),
                rss_end_kib: medk(&|r| r.rss_end_kib),
                pss_end_kib: medk(&|r| r.pss_end_kib),
                spans: (!spans.is_empty()).then(|| spans.iter().filter_map(|r| r.spans).sum()),
                expected_spans: (!spans.is_empty()).then(|| spans.iter().filter_map(|r| r.expected_spans).sum()),
                spans_after_close: (!spans.is_empty()).then(|| spans.iter().filter_map(|r| r.spans_after_close).sum()),
            }
        })
        .collect()
}

pub fn dur(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us.is_nan() => "-".into(),
        Some(us) if us.abs() < 1000.0 => format!("{us:.0}µs"),
        Some(us) if us.abs() < 1_000_000.0 => format!("{:.2}ms", us / 1000.0),
        Some(us) => format!("{:.2}s", us / 1e6),
    }
}

pub fn mib(k: Option<u64>) -> String {
    k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// The workload's table, as printed.
pub fn table(w: &WorkloadReport) -> String {
    let (rate, cpu) = match w.unit {
        Unit::Calls => ("calls/s", "CPU/call"),
        Unit::Bytes => ("MB/s", "CPU/GiB"),
        Unit::Conns => ("conns/s", "CPU/conn"),
    };
    let mut s = format!("== {}: {} ==\n", w.workload, w.description);
    s += &format!(
        "{:<11} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}  {}\n",
        "target", rate, "×direct", "p50", "p90", "p99", "+p50", cpu, "RSSidle", "RSSpeak", "PSSend", "spans"
    );
    for x in &w.summaries {
        if x.runs_ok == 0 {
            s += &format!("{:<11} error: {}\n", x.target, x.error.clone().unwrap_or_default());
            continue;
        }
        let cpu = match (w.unit, x.relay_cpu_per_op) {
            (_, None) => "-".to_string(),
            (Unit::Bytes, Some(ms)) => format!("{ms:.0}ms"),
            (_, Some(us)) => format!("{us:.1}µs"),
        };
        let spans = match (x.spans, x.expected_spans, x.spans_after_close) {
            (Some(a), Some(b), Some(c)) if c > 0 => format!("{a}/{b} ({c} at close)"),
            (Some(a), Some(b), _) => format!("{a}/{b}"),
            _ => "-".into(),
        };
        s += &format!(
            "{:<11} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}  {}{}\n",
            x.target,
            x.rate.map_or("-".into(), |r| format!("{r:.0}")),
            x.ratio_to_direct.map_or("-".into(), |r| format!("{r:.2}")),
            dur(x.p50_us),
            dur(x.p90_us),
            dur(x.p99_us),
            if x.target == "direct" {
                "-".into()
            } else {
                dur(x.added_p50_us)
            },
            cpu,
            mib(x.rss_idle_kib),
            mib(x.rss_peak_kib),
            mib(x.pss_end_kib),
            spans,
            if x.runs_ok < x.runs {
                format!(
                    "  ({} of {} runs failed: {})",
                    x.runs - x.runs_ok,
                    x.runs,
                    x.error.clone().unwrap_or_default()
                )
            } else {
                String::new()
            }
        );
    }
    s
}

/// `YYYY-MM-DD` and `HH:MM:SSZ` of now, UTC, from the system clock.
pub fn now_utc() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}
