//! Sampling: which finished traces are exported. Decided on a whole trace (a root and the
//! calls held under it), after the fact, so that errors and slow calls anywhere in it keep it.
//! By default every trace is kept except kubelet's and dockerd's polls (List*, *Status,
//! Tasks/Get...), thinned to a few per minute per method unless they fail or are slow. A
//! sampled-out call is counted, never silent (DESIGN.md invariant 6). A poll that can only be
//! the root of its own trace is decided at its start instead (`early`; the correlator's
//! `begin` says which), so that a sampled-out one is never built; errors and slow calls are
//! still kept, by the tracer at its end.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::trace::span::{SpanRecord, SpanStatus};

/// A call slower than this is always kept (unless configured otherwise).
pub const DEFAULT_SLOW: Duration = Duration::from_secs(1);
/// The default rate for polls: one trace every 10 s per method.
pub const DEFAULT_POLL_PER_SECOND: f64 = 0.1;

/// Rounding tolerance of the token buckets (see `Sampler::keep`).
const TOKEN_EPSILON: f64 = 1e-9;

/// Methods and routes that clients call in loops to watch state; thinned by default.
pub const POLLS: &[&str] = &[
    "runtime.v1.RuntimeService/ListPodSandbox",
    "runtime.v1.RuntimeService/ListContainers",
    "runtime.v1.RuntimeService/ContainerStatus",
    "runtime.v1.RuntimeService/PodSandboxStatus",
    "runtime.v1.RuntimeService/ListContainerStats",
    "runtime.v1.RuntimeService/ListPodSandboxStats",
    "runtime.v1.RuntimeService/ContainerStats",
    "runtime.v1.RuntimeService/PodSandboxStats",
    "runtime.v1.RuntimeService/ListMetricDescriptors",
    "runtime.v1.RuntimeService/ListPodSandboxMetrics",
    "runtime.v1.RuntimeService/Status",
    "runtime.v1.RuntimeService/Version",
    "runtime.v1.ImageService/ListImages",
    "runtime.v1.ImageService/ImageFsInfo",
    "runtime.v1.ImageService/ImageStatus",
    "runtime.v1alpha2.RuntimeService/ListPodSandbox",
    "runtime.v1alpha2.RuntimeService/ListContainers",
    "runtime.v1alpha2.RuntimeService/ContainerStatus",
    "runtime.v1alpha2.RuntimeService/PodSandboxStatus",
    "runtime.v1alpha2.RuntimeService/ListContainerStats",
    "runtime.v1alpha2.RuntimeService/Status",
    "runtime.v1alpha2.RuntimeService/Version",
    "runtime.v1alpha2.ImageService/ListImages",
    "runtime.v1alpha2.ImageService/ImageFsInfo",
    "containerd.services.tasks.v1.Tasks/Get",
    "containerd.services.tasks.v1.Tasks/List",
    "containerd.services.version.v1.Version/Version",
    "grpc.health.v1.Health/Check",
    "HEAD /_ping",
    "GET /_ping",
    "GET /containers/json",
    "GET /version",
    "GET /info",
];

/// One sampling rule from the config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Span name (full gRPC method, or `METHOD /route`); a trailing `*` matches a prefix.
    pub name: String,
    /// Keep (true) or drop (false) every such trace. Errors and slow calls are still kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<bool>,
    /// Keep this fraction (0.0 to 1.0), deterministically by trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Keep at most this many traces per second (a token bucket per rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
}

/// The `[sampling]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Traces with a call at least this slow (milliseconds) are always kept.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
    /// Apply the built-in poll thinning after your own rules.
    #[serde(default = "default_true")]
    pub default_rules: bool,
    /// Your rules, first match wins.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

fn default_slow_ms() -> u64 {
    DEFAULT_SLOW.as_millis() as u64
}
fn default_true() -> bool {
    true
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            slow_ms: default_slow_ms(),
            default_rules: true,
            rules: Vec::new(),
        }
    }
}

impl SamplingConfig {
    /// Check what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let set = [r.keep.is_some(), r.ratio.is_some(), r.per_second.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if set != 1 {
                return Err(format!(
                    "sampling.rule[{i}]: give exactly one of keep, ratio, per_second"
                ));
            }
            if r.ratio.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
                return Err(format!("sampling.rule[{i}].ratio: must be between 0 and 1"));
            }
            if r.per_second.is_some_and(|x| !(x >= 0.0 && x.is_finite())) {
                return Err(format!("sampling.rule[{i}].per_second: must be a number >= 0"));
            }
        }
        Ok(())
    }
}

struct Bucket {
    tokens: f64,
    last: SystemTime,
}

/// Decides, per finished trace, whether it is exported.
pub struct Sampler {
    rules: Vec<Rule>,
    slow: Duration,
    buckets: HashMap<usize, Bucket>,
}

impl Sampler {
    pub fn new(config: &SamplingConfig) -> Sampler {
        let mut rules = config.rules.clone();
        if config.default_rules {
            rules.extend(POLLS.iter().map(|name| Rule {
                name: (*name).to_string(),
                keep: None,
                ratio: None,
                per_second: Some(DEFAULT_POLL_PER_SECOND),
            }));
        }
        Sampler {
            rules,
            slow: Duration::from_millis(config.slow_ms),
            buckets: HashMap::new(),
        }
    }

    /// Keep everything (no rules).
    pub fn keep_all() -> Sampler {
        Sampler {
            rules: Vec::new(),
            slow: DEFAULT_SLOW,
            buckets: HashMap::new(),
        }
    }

    /// Calls at least this slow are kept whatever the rules say.
    pub fn slow(&self) -> Duration {
        self.slow
    }

    /// Whether any rule may drop a call (no rules: everything is kept, nothing to decide early).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rules' verdict on a call named `name`, taken at its start for a call that will be
    /// the root of its own trace, as if it ended neither failed nor slow (the caller keeps a
    /// call those make keep whatever was decided here). `None` where no early verdict is
    /// possible or needed: no rule matches, the rule keeps everything, or a `ratio` rule
    /// (decided by trace id, at the end). A `per_second` verdict takes its token now, so the
    /// caller must not ask `keep` again for a call it keeps this way.
    pub fn early(&mut self, name: &str, now: SystemTime) -> Option<bool> {
        let (i, rule) = self.rules.iter().enumerate().find(|(_, r)| matches(&r.name, name))?;
        if let Some(keep) = rule.keep {
            return (!keep).then_some(false);
        }
        if rule.ratio.is_some() {
            return None;
        }
        let per_second = rule.per_second.unwrap_or(f64::INFINITY);
        Some(self.take_token(i, per_second, now))
    }

    /// Whether the trace whose root is `spans[0]` is exported.
    pub fn keep(&mut self, spans: &[SpanRecord], now: SystemTime) -> bool {
        let Some(root) = spans.first() else { return true };
        let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| matches(&r.name, &root.name))
        else {
            return true;
        };
        let failed_or_slow = spans.iter().any(|s| {
            matches!(s.status, SpanStatus::Error(_)) || s.end.duration_since(s.start).unwrap_or_default() >= self.slow
        });
        if failed_or_slow {
            return true;
        }
        if let Some(keep) = rule.keep {
            return keep;
        }
        if let Some(ratio) = rule.ratio {
            // Deterministic by trace id: the same trace decides the same way everywhere.
            let x = u64::from_be_bytes(root.trace_id[8..16].try_into().unwrap_or([0; 8]));
            return (x as f64 / u64::MAX as f64) < ratio;
        }
        let per_second = rule.per_second.unwrap_or(f64::INFINITY);
        self.take_token(i, per_second, now)
    }

    /// Take a token from rule `i`'s bucket, if it has one.
    fn take_token(&mut self, i: usize, per_second: f64, now: SystemTime) -> bool {
        let b = self.buckets.entry(i).or_insert(Bucket { tokens: 1.0, last: now });
        let elapsed = now.duration_since(b.last).unwrap_or_default().as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(1.0_f64.max(per_second));
        b.last = now;
        // Tokens are sums of float fractions: ten tenths add up to 0.9999999999999999, and
        // without the tolerance a 1/s rule polled every 100 ms would keep one call per 1.1 s.
        if b.tokens >= 1.0 - TOKEN_EPSILON {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::trace::span::{SpanKind, new_span_id, new_trace_id};

    fn span(name: &str, ms: u64, error: bool) -> SpanRecord {
        let start = UNIX_EPOCH + Duration::from_secs(100);
        SpanRecord {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            parent: None,
            trace_state: None,
            name: name.into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(ms),
            attributes: vec![],
            events: vec![],
            links: vec![],
            status: if error {
                SpanStatus::Error("x".into())
            } else {
                SpanStatus::Unset
            },
            service: Arc::from("containerd"),
        }
    }

    #[test]
    fn polls_are_thinned_but_errors_slow_calls_and_mutations_are_kept() {
        let mut s = Sampler::new(&SamplingConfig::default());
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let poll = "runtime.v1.RuntimeService/ListPodSandbox";
        let kept = (0..60)
            .filter(|i| s.keep(&[span(poll, 1, false)], t0 + Duration::from_secs(*i)))
            .count();
        assert_eq!(kept, 6, "one per 10 s over a minute");
        assert!(s.keep(&[span(poll, 1, true)], t0 + Duration::from_secs(61)));
        assert!(s.keep(&[span(poll, 1500, false)], t0 + Duration::from_secs(61)));
        assert!((0..100).all(|_| s.keep(&[span("runtime.v1.RuntimeService/RunPodSandbox", 1, false)], t0)));
    }

    #[test]
    fn user_rules_come_first_and_are_validated() {
        let config = SamplingConfig {
            slow_ms: 1000,
            default_rules: true,
            rules: vec![Rule {
                name: "GET /containers/*".into(),
                keep: Some(false),
                ratio: None,
                per_second: None,
            }],
        };
        config.validate().unwrap();
        let mut s = Sampler::new(&config);
        let t0 = UNIX_EPOCH;
        assert!(!s.keep(&[span("GET /containers/{id}/json", 1, false)], t0));
        assert!(s.keep(&[span("GET /containers/{id}/json", 1, true)], t0));
        let bad = SamplingConfig {
            rules: vec![Rule {
                name: "x".into(),
                keep: Some(true),
                ratio: Some(0.5),
                per_second: None,
            }],
            ..config
        };
        assert!(bad.validate().is_err());
        let mut half = Sampler::new(&SamplingConfig {
            rules: vec![Rule {
                name: "x".into(),
                keep: None,
                ratio: Some(0.5),
                per_second: None,
            }],
            default_rules: false,
            slow_ms: 1000,
        });
        let kept = (0..2000).filter(|_| half.keep(&[span("x", 1, false)], t0)).count();
        assert!((800..1200).contains(&kept), "{kept}");
    }
}
