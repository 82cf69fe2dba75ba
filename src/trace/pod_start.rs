//! Pod start histograms on /metrics: each synthesized `pod start` root's phases and its SLI, read
//! from the root's attributes as the tracer submits it (so /metrics and the spans never
//! disagree). The SLI histogram has kubelet's buckets for `kubelet_pod_start_sli_duration_seconds`
//! (kubernetes pkg/kubelet/metrics), so the two can be compared bucket by bucket.

use std::sync::Mutex;

use crate::metrics::{BoundHistogram, Family, FmtMetrics};
use crate::trace::attr::{AttrValue, names};
use crate::trace::span::{SpanKind, SpanRecord};

/// kubelet's buckets for `kubelet_pod_start_sli_duration_seconds`, in seconds.
pub const KUBELET_SLI_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0,
    600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// Phase buckets: the call buckets below half a second (a create or start takes milliseconds),
/// then kubelet's, so that `phase="total"` reads against kubelet's histograms too.
pub const PHASE_BUCKETS: [f64; 34] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0,
    30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

const DURATION: Family = Family::histogram(
    "runtime_tap_pod_start_duration_seconds",
    "Pod starts (synthesized pod start roots) by phase: each phase's wall time, counted once where calls overlap; kubelet = no call of the pod in flight; total = the root.",
);
const SLI: Family = Family::histogram(
    "runtime_tap_pod_start_sli_duration_seconds",
    "Pod startup SLI as the Kubernetes SLO defines it: pod start minus image pulls (buckets of kubelet_pod_start_sli_duration_seconds).",
);

/// The `phase` label values and the root attribute each is read from (`total` is the span's).
const PHASES: [(&str, Option<&str>); 7] = [
    ("sandbox", Some(names::POD_START_SANDBOX_MS)),
    ("image_pull", Some(names::POD_START_IMAGE_PULL_MS)),
    ("image_check", Some(names::POD_START_IMAGE_CHECK_MS)),
    ("create", Some(names::POD_START_CREATE_MS)),
    ("start", Some(names::POD_START_START_MS)),
    ("kubelet", Some(names::POD_START_KUBELET_MS)),
    ("total", None),
];

struct Inner {
    phases: Vec<BoundHistogram>,
    sli: BoundHistogram,
}

/// The pod start histograms.
pub struct PodStarts {
    inner: Mutex<Inner>,
}

impl Default for PodStarts {
    fn default() -> Self {
        PodStarts {
            inner: Mutex::new(Inner {
                phases: PHASES.iter().map(|_| BoundHistogram::new(&PHASE_BUCKETS)).collect(),
                sli: BoundHistogram::new(&KUBELET_SLI_BUCKETS),
            }),
        }
    }
}

impl PodStarts {
    /// Count `span` if it is a pod start root; any other span is ignored.
    pub fn record(&self, span: &SpanRecord) {
        if span.kind != SpanKind::Internal || span.name != names::POD_START {
            return;
        }
        let seconds = |key: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| match a.value {
                    AttrValue::Double(ms) => Some(ms / 1_000.0),
                    _ => None,
                })
        };
        let total = span.end.duration_since(span.start).unwrap_or_default().as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (h, (_, key)) in inner.phases.iter_mut().zip(PHASES) {
            match key {
                Some(key) => {
                    if let Some(s) = seconds(key) {
                        h.observe(s);
                    }
                }
                None => h.observe(total),
            }
        }
        if let Some(s) = seconds(names::POD_START_SLI_MS) {
            inner.sli.observe(s);
        }
    }
}

impl FmtMetrics for PodStarts {
    fn fmt_metrics(&self, out: &mut String) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        DURATION.header(out);
        for (h, (phase, _)) in inner.phases.iter().zip(PHASES) {
            DURATION.bound_histogram_series(out, &format!("phase=\"{phase}\""), h);
        }
        SLI.header(out);
        SLI.bound_histogram_series(out, "", &inner.sli);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::attr::Attr;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn root(name: &str, kind: SpanKind, total_ms: u64, attrs: Vec<Attr>) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent: None,
            trace_state: None,
            name: name.into(),
            kind,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH + Duration::from_millis(total_ms),
            attributes: attrs,
            events: Vec::new(),
            links: Vec::new(),
            status: crate::trace::span::SpanStatus::Unset,
            service: Arc::from("kubelet"),
        }
    }

    #[test]
    fn pod_start_roots_fill_the_phase_and_sli_histograms_with_kubelets_buckets() {
        let p = PodStarts::default();
        p.record(&root(
            names::POD_START,
            SpanKind::Internal,
            2_500,
            vec![
                Attr::double(names::POD_START_SANDBOX_MS, 300.0),
                Attr::double(names::POD_START_IMAGE_PULL_MS, 1_800.0),
                Attr::double(names::POD_START_KUBELET_MS, 0.25),
                Attr::double(names::POD_START_SLI_MS, 700.0),
            ],
        ));
        // A call span of the same name is no pod start.
        p.record(&root(names::POD_START, SpanKind::Server, 1, vec![]));
        let mut out = String::new();
        p.fmt_metrics(&mut out);
        for line in [
            "# TYPE runtime_tap_pod_start_duration_seconds histogram",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"sandbox\",le=\"0.25\"} 0",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"sandbox\",le=\"0.5\"} 1",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"image_pull\",le=\"1\"} 0",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"image_pull\",le=\"2\"} 1",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"kubelet\",le=\"0.0005\"} 1",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"total\",le=\"2\"} 0",
            "runtime_tap_pod_start_duration_seconds_bucket{phase=\"total\",le=\"3\"} 1",
            "runtime_tap_pod_start_duration_seconds_count{phase=\"total\"} 1",
            "runtime_tap_pod_start_duration_seconds_count{phase=\"create\"} 0",
            "# TYPE runtime_tap_pod_start_sli_duration_seconds histogram",
            "runtime_tap_pod_start_sli_duration_seconds_bucket{le=\"0.5\"} 0",
            "runtime_tap_pod_start_sli_duration_seconds_bucket{le=\"1\"} 1",
            "runtime_tap_pod_start_sli_duration_seconds_bucket{le=\"3600\"} 1",
            "runtime_tap_pod_start_sli_duration_seconds_bucket{le=\"+Inf\"} 1",
            "runtime_tap_pod_start_sli_duration_seconds_sum 0.7",
            "runtime_tap_pod_start_sli_duration_seconds_count 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        let sli_buckets = out
            .lines()
            .filter(|l| l.starts_with("runtime_tap_pod_start_sli_duration_seconds_bucket"))
            .count();
        assert_eq!(sli_buckets, KUBELET_SLI_BUCKETS.len() + 1);
    }
}
