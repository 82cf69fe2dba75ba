//! RED metrics (rate, errors, duration) of calls, per intercept, method (span name) and status,
//! rendered on /metrics. Label values are bounded: span names come from the descriptor pool
//! and the Docker route table (unknown Docker paths are named by their HTTP method alone), and
//! past `MAX_METHODS_PER_INTERCEPT` distinct names an intercept's further names become `other`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::trace::attr::AttrValue;
use crate::trace::call::Call;

/// Histogram bucket bounds, in seconds.
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Distinct method label values per intercept before the rest are `other`.
pub const MAX_METHODS_PER_INTERCEPT: usize = 256;

#[derive(Default)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    series: HashMap<(Arc<str>, String, String), Hist>,
    methods: HashMap<Arc<str>, std::collections::HashSet<String>>,
}

/// Call durations by intercept, method and status.
#[derive(Default)]
pub struct Red {
    inner: Mutex<Inner>,
}

impl Red {
    /// Count one finished call.
    pub fn record(&self, call: &Call) {
        let status = status_label(call);
        let seconds = call
            .end
            .duration_since(call.start)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let service = Arc::clone(&call.conn.service);
        let methods = inner.methods.entry(Arc::clone(&service)).or_default();
        let method = if methods.contains(&call.name) {
            call.name.clone()
        } else if methods.len() < MAX_METHODS_PER_INTERCEPT {
            methods.insert(call.name.clone());
            call.name.clone()
        } else {
            "other".to_string()
        };
        let h = inner.series.entry((service, method, status)).or_default();
        h.count += 1;
        h.sum += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    /// Render as a Prometheus histogram.
    pub fn render(&self, out: &mut String) {
        let name = "runtime_tap_call_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of calls through runtime-tap, from the first request byte to the last response byte."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<_> = inner.series.keys().collect();
        keys.sort();
        for key in keys {
            let h = &inner.series[key];
            let (service, method, status) = key;
            let labels = format!(
                "intercept=\"{service}\",method=\"{}\",status=\"{}\"",
                escape(method),
                escape(status)
            );
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
    }
}

/// `OK`, `NOT_FOUND`... for gRPC, the HTTP status code for Docker, `incomplete` otherwise.
fn status_label(call: &Call) -> String {
    if call.incomplete {
        return "incomplete".into();
    }
    for a in &call.attributes {
        match (a.key.as_ref(), &a.value) {
            ("rpc.response.status_code", AttrValue::Str(s)) => return s.clone(),
            ("http.response.status_code", AttrValue::Int(i)) => return i.to_string(),
            _ => {}
        }
    }
    "unset".into()
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
