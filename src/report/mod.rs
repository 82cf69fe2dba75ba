//! `runtime-tap report`: answers "why was it slow" from a span file (OTLP/JSON lines, see
//! [`read`]) with no tracing backend. It leads with what operators ask most: pod starts (per
//! phase, and the slowest pods whole), image pulls (per image and layer by layer) and container
//! starts (each layer's self time). Then per service and span name: count, p50/p90/p99/max
//! duration and error rate; the slowest operations (root spans) with the self time of each
//! layer and their span tree; and apart, the long-lived streams (event subscriptions, attach,
//! `logs -f`), whose duration is how long someone watched, never a slow operation. `--html`
//! writes the same as a self-contained page with a latency histogram per method and a
//! timeline of the slowest traces.
//!
//! Percentiles are nearest-rank: the p-th percentile of n sorted durations is the value at
//! rank ⌈p·n/100⌉ (1-based), always one of the observed durations, never interpolated.
//!
//! Self time of a layer in an operation = its spans' durations minus the union (not the sum)
//! of their children's intervals, summed per service over the root's tree as found in the file
//! (DESIGN.md "Self time").

pub mod html;
pub mod pods;
pub mod pulls;
pub mod read;
pub mod series;
pub mod starts;
pub mod text;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::trace::attr::names;
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus, TraceId};
use crate::trace::tree::{SpanTree, duration};

/// Slowest operations shown by default.
pub const DEFAULT_TOP: usize = 10;
/// Text width of the span trees by default.
pub const DEFAULT_WIDTH: usize = 100;

/// `runtime-tap report` arguments.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The span file: JSON lines, one OTLP/JSON ExportTraceServiceRequest per line (runtime-tap's
    /// `[export] file`, or an OpenTelemetry Collector file exporter's output).
    pub file: PathBuf,
    /// Also write a self-contained HTML page (histograms, timeline) to this path.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// How many of the slowest operations (root spans) to show.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOP)]
    pub top: usize,
    /// Width of the span trees in the text report.
    #[arg(long, value_name = "COLUMNS", default_value_t = DEFAULT_WIDTH)]
    pub width: usize,
}

/// Reads the file, prints the text report on stdout (colour when stdout is a terminal) and
/// writes the HTML page when asked.
///
/// # Errors
///
/// When the file cannot be read or the page cannot be written.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let file = read::read(&args.file).with_context(|| format!("span file {}", args.file.display()))?;
    let report = Report::build(args.file.display().to_string(), file, args.top);
    let color = std::io::stdout().is_terminal();
    print!("{}", text::render(&report, args.width, color));
    if let Some(out) = &args.html {
        std::fs::write(out, html::render(&report)).with_context(|| format!("html page {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Latency of one span name in one service.
#[derive(Debug, Clone)]
pub struct MethodStats {
    pub service: Arc<str>,
    /// The span name and every duration, ascending.
    pub series: series::Series,
    /// Spans with status Error (OTLP code 2).
    pub errors: usize,
}

/// A method's count, percentiles and max are its series'.
impl std::ops::Deref for MethodStats {
    type Target = series::Series;
    fn deref(&self) -> &series::Series {
        &self.series
    }
}

impl MethodStats {
    /// The span name.
    pub fn name(&self) -> &str {
        &self.series.label
    }

    /// Errors over count, 0..=1.
    pub fn error_rate(&self) -> f64 {
        if self.durations.is_empty() {
            0.0
        } else {
            self.errors as f64 / self.durations.len() as f64
        }
    }
}

/// The nearest-rank percentile of ascending `sorted`: the value at rank ⌈p·n/100⌉ (at least
/// 1). Zero for no values.
pub fn nearest_rank(sorted: &[Duration], p: u32) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p.min(100) as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// One of the slowest operations: a root span and its trace.
#[derive(Debug)]
pub struct Slow {
    /// Every span of the root's trace in the file.
    pub trace: Vec<SpanRecord>,
    /// Index of the root in `trace`.
    pub root: usize,
    pub duration: Duration,
    /// Self time per service over the root's tree, in order of first appearance.
    pub self_times: Vec<(Arc<str>, Duration)>,
}

impl Slow {
    pub fn root(&self) -> &SpanRecord {
        &self.trace[self.root]
    }
}

/// Everything the text and HTML reports show.
#[derive(Debug)]
pub struct Report {
    pub source: String,
    pub spans: usize,
    pub traces: usize,
    /// Root spans (no parent in the file).
    pub operations: usize,
    pub lines: usize,
    pub bad_lines: usize,
    pub bad_spans: usize,
    pub duplicates: usize,
    pub first_errors: Vec<String>,
    /// Earliest start and latest end over all spans.
    pub window: Option<(SystemTime, SystemTime)>,
    pub pod_starts: pods::PodStarts,
    /// The slowest pod starts, slowest first.
    pub slowest_pods: Vec<Slow>,
    pub pulls: pulls::Pulls,
    pub container_starts: starts::ContainerStarts,
    /// Per service and span name, ordered by service then name; long-lived streams apart.
    pub methods: Vec<MethodStats>,
    /// The slowest operations, slowest first; never a long-lived stream.
    pub slowest: Vec<Slow>,
    /// Long-lived streams per service and span name (`runtime_tap.long_lived`).
    pub long_lived: Vec<MethodStats>,
}

impl Report {
    /// Computes the report over a read file, keeping the `top` slowest operations.
    pub fn build(source: String, file: read::SpanFile, top: usize) -> Report {
        let spans = file.spans.len();
        let window = file
            .spans
            .iter()
            .map(|s| (s.start, s.end))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        // A CLIENT span repeats its SERVER child's call (same name, same times): its latency
        // is counted once, on the server's side.
        let (long, short): (Vec<&SpanRecord>, Vec<&SpanRecord>) = file
            .spans
            .iter()
            .filter(|s| s.kind != SpanKind::Client)
            .partition(|s| s.attr_true(names::LONG_LIVED));
        let methods = method_stats(short);
        let long_lived = method_stats(long);

        // Spans per trace, in file order.
        let mut index: HashMap<TraceId, usize> = HashMap::new();
        let mut traces: Vec<Vec<SpanRecord>> = Vec::new();
        for s in file.spans {
            let i = *index.entry(s.trace_id).or_insert_with(|| {
                traces.push(Vec::new());
                traces.len() - 1
            });
            traces[i].push(s);
        }
        // Every root of every trace, slowest first (ties: earlier first).
        let mut roots: Vec<(usize, usize)> = Vec::new();
        for (t, spans) in traces.iter().enumerate() {
            roots.extend(SpanTree::new(spans).roots().iter().map(|&r| (t, r)));
        }
        let operations = roots.len();
        let root = |&(t, r): &(usize, usize)| &traces[t][r];
        roots.sort_by(|a, b| {
            duration(root(b))
                .cmp(&duration(root(a)))
                .then(root(a).start.cmp(&root(b).start))
        });
        let slowest_of = |keep: &dyn Fn(&SpanRecord) -> bool| -> Vec<Slow> {
            roots
                .iter()
                .filter(|tr| keep(root(tr)))
                .take(top)
                .map(|&(t, r)| Slow::of(traces[t].clone(), r))
                .collect()
        };
        let slowest = slowest_of(&|s| !s.attr_true(names::LONG_LIVED));
        let slowest_pods = slowest_of(&|s| s.name == pods::POD_START);
        let pod_starts = pods::PodStarts::of(roots.iter().map(root));
        let container_starts = starts::ContainerStarts::of(roots.iter().map(|&(t, r)| (traces[t].as_slice(), r)));
        let pulls = pulls::Pulls::of(&traces, top);

        Report {
            source,
            spans,
            traces: traces.len(),
            operations,
            lines: file.lines,
            bad_lines: file.bad_lines,
            bad_spans: file.bad_spans,
            duplicates: file.duplicates,
            first_errors: file.first_errors,
            window,
            pod_starts,
            slowest_pods,
            pulls,
            container_starts,
            methods,
            slowest,
            long_lived,
        }
    }
}

impl Slow {
    /// The root `r` of `trace`, with each layer's self time under it.
    fn of(trace: Vec<SpanRecord>, r: usize) -> Slow {
        // The correlator's exact per-layer self time when the root carries it (a pod start's
        // kubelet gaps are known only there), else computed from the spans in the file.
        let self_times = crate::trace::export::waterfall::self_times(&SpanTree::new(&trace), r)
            .into_iter()
            .map(|(svc, d)| (Arc::from(svc), d))
            .collect();
        Slow {
            duration: duration(&trace[r]),
            trace,
            root: r,
            self_times,
        }
    }
}

/// Latency per service and span name, ordered by service then name.
fn method_stats(spans: Vec<&SpanRecord>) -> Vec<MethodStats> {
    let mut by_method: HashMap<(Arc<str>, &str), MethodStats> = HashMap::new();
    for s in spans {
        let m = by_method
            .entry((Arc::clone(&s.service), s.name.as_str()))
            .or_insert_with(|| MethodStats {
                service: Arc::clone(&s.service),
                series: series::Series {
                    label: s.name.clone(),
                    durations: Vec::new(),
                },
                errors: 0,
            });
        m.series.durations.push(duration(s));
        if matches!(s.status, SpanStatus::Error(_)) {
            m.errors += 1;
        }
    }
    let mut methods: Vec<MethodStats> = by_method.into_values().collect();
    methods.iter_mut().for_each(|m| m.series.durations.sort());
    methods.sort_by(|a, b| (&a.service, a.name()).cmp(&(&b.service, b.name())));
    methods
}

/// Milliseconds with three decimals, as both reports print durations.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_nanos() as f64 / 1e6)
}

/// A byte count, or `-` when unknown.
pub fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// Bytes per second as MB/s (10^6 bytes) with one decimal, or `-` when unknown.
pub fn mbps(bytes_per_second: Option<f64>) -> String {
    bytes_per_second.map_or("-".into(), |r| format!("{:.1}", r / 1e6))
}

/// RFC 3339 UTC with milliseconds: `2023-11-14T22:13:20.000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm), days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_observed_values() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(nearest_rank(&v, 50), Duration::from_millis(5));
        assert_eq!(nearest_rank(&v, 90), Duration::from_millis(9));
        assert_eq!(nearest_rank(&v, 99), Duration::from_millis(10));
        assert_eq!(nearest_rank(&v, 100), Duration::from_millis(10));
        assert_eq!(nearest_rank(&v[..1], 1), Duration::from_millis(1));
        assert_eq!(nearest_rank(&[], 50), Duration::ZERO);
        let three: Vec<Duration> = (1..=3).map(Duration::from_millis).collect();
        assert_eq!(nearest_rank(&three, 50), Duration::from_millis(2));
    }

    /// A CLIENT span (`client_spans`) repeats its SERVER child's call: one method row, one
    /// operation, and the layers' self time from the root (the client's at 0).
    #[test]
    fn a_calls_client_span_is_not_counted_twice() {
        use crate::trace::attr::Attr;
        use crate::trace::span::{ParentRef, SpanKind};
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
        let span = |id: u8, parent: Option<u8>, kind: SpanKind, service: &str| SpanRecord {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent: parent.map(|p| ParentRef {
                span_id: [p; 8],
                remote: false,
            }),
            trace_state: None,
            name: "POST /containers/{id}/start".into(),
            kind,
            start: at(0),
            end: at(10),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: SpanStatus::Unset,
            service: Arc::from(service),
        };
        let mut client = span(1, None, SpanKind::Client, "docker");
        client.attributes = vec![
            Attr::double("runtime_tap.self_time_ms.docker", 0.0),
            Attr::double("runtime_tap.self_time_ms.dockerd", 10.0),
        ];
        let file = read::SpanFile {
            spans: vec![client, span(2, Some(1), SpanKind::Server, "dockerd")],
            lines: 1,
            bad_lines: 0,
            first_errors: Vec::new(),
            bad_spans: 0,
            duplicates: 0,
        };
        let r = Report::build("t".into(), file, 5);
        assert_eq!(r.methods.len(), 1);
        assert_eq!(&*r.methods[0].service, "dockerd");
        assert_eq!(r.methods[0].series.durations.len(), 1);
        assert_eq!(r.operations, 1);
        assert_eq!(r.container_starts.durations.durations, vec![Duration::from_millis(10)]);
        let layers: Vec<(&str, Duration)> = r.slowest[0].self_times.iter().map(|(s, d)| (&**s, *d)).collect();
        assert_eq!(
            layers,
            vec![("docker", Duration::ZERO), ("dockerd", Duration::from_millis(10))]
        );
    }

    #[test]
    fn rfc3339_is_civil_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
