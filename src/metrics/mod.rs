//! runtime-tap's own metrics, in the Prometheus text format (version 0.0.4). A leaf every layer
//! may import: the primitives (counter, gauge, histogram), the family writer, and the
//! [`FmtMetrics`] trait (after linkerd2-proxy's). Each component renders its own families next
//! to the counters it keeps, through [`Family`]; the admin endpoint composes the components in
//! the order /metrics shows them. This module knows no component: nothing here reads a tracer,
//! a correlator or a budget.
//!
//! Labels come from small fixed sets (intercept name, direction, protocol, reason), never from
//! paths or ids, so the series count stays bounded whatever the traffic.

mod intercept;

use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use intercept::{InterceptMetrics, InterceptPart, Intercepts, Protocol, TapGiveUps};

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

/// Histogram bucket bounds, in seconds (call durations).
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One series of a histogram: cumulative bucket counts over [`BUCKETS`], count and sum. Plain
/// numbers: its owner keeps it under the lock that finds the series.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Count one observation of `value` (seconds).
    pub fn observe(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        for (n, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if value <= bound {
                *n += 1;
            }
        }
    }
}

/// A histogram over bounds of its owner's choosing (seconds, ascending): for series that must
/// share another program's buckets to be compared with it. Cumulative like [`Histogram`].
#[derive(Clone, Debug)]
pub struct BoundHistogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl BoundHistogram {
    pub fn new(bounds: &'static [f64]) -> BoundHistogram {
        BoundHistogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Count one observation of `value` (seconds).
    pub fn observe(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        for (n, bound) in self.counts.iter_mut().zip(self.bounds) {
            if value <= *bound {
                *n += 1;
            }
        }
    }
}

/// A component that renders its own metric families.
pub trait FmtMetrics {
    /// Append the component's families (header, then samples) to `out`.
    fn fmt_metrics(&self, out: &mut String);
}

impl<M: FmtMetrics + ?Sized> FmtMetrics for Arc<M> {
    fn fmt_metrics(&self, out: &mut String) {
        (**self).fmt_metrics(out);
    }
}

/// A component that is not there (decoding off, an embedding without a tracer) renders nothing.
impl<M: FmtMetrics> FmtMetrics for Option<M> {
    fn fmt_metrics(&self, out: &mut String) {
        if let Some(m) = self {
            m.fmt_metrics(out);
        }
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A label: its name and value. Values are written as they are: they come from fixed sets and
/// configured intercept names, which need no escaping.
pub type Label<'a> = (&'a str, &'a dyn Display);

/// One metric family: the one writer of /metrics. Its header is written once, then its samples.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Counter,
            help,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Gauge,
            help,
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Histogram,
            help,
        }
    }

    /// The `# HELP` and `# TYPE` lines.
    pub fn header(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {name} {}\n# TYPE {name} {}",
            self.help,
            self.kind.as_str(),
            name = self.name
        );
    }

    /// One sample: `name{labels} value`, or `name value` without labels.
    pub fn sample(&self, out: &mut String, labels: &[Label<'_>], value: impl Display) {
        out.push_str(self.name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{name}=\"{value}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    /// The samples of one histogram series; `labels` is its label list, already formatted and
    /// escaped (`a="x",b="y"`).
    pub fn histogram_series(&self, out: &mut String, labels: &str, h: &Histogram) {
        self.series(out, labels, &BUCKETS, &h.counts, h.count, h.sum);
    }

    /// The same for a [`BoundHistogram`]; `labels` may be empty.
    pub fn bound_histogram_series(&self, out: &mut String, labels: &str, h: &BoundHistogram) {
        self.series(out, labels, h.bounds, &h.counts, h.count, h.sum);
    }

    fn series(&self, out: &mut String, labels: &str, bounds: &[f64], counts: &[u64], count: u64, sum: f64) {
        let name = self.name;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in bounds.iter().zip(counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let (open, close) = if labels.is_empty() { ("", "") } else { ("{", "}") };
        let _ = writeln!(out, "{name}_sum{open}{labels}{close} {sum}");
        let _ = writeln!(out, "{name}_count{open}{labels}{close} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let f = Family::counter("x_total", "Xs.");
        let mut out = String::new();
        f.header(&mut out);
        f.sample(&mut out, &[], 3);
        f.sample(&mut out, &[("a", &"b"), ("c", &7)], 4);
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total 3\nx_total{a=\"b\",c=\"7\"} 4\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(20.0);
        let mut out = String::new();
        Family::histogram("d_seconds", "D.").histogram_series(&mut out, "k=\"v\"", &h);
        assert!(out.contains("d_seconds_bucket{k=\"v\",le=\"0.0025\"} 0\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{k=\"v\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{k=\"v\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{k=\"v\",le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("d_seconds_count{k=\"v\"} 2\n"), "{out}");
    }
}
