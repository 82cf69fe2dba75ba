//! RED metrics (rate, errors, duration) of calls, per intercept, method (span name) and status,
//! rendered on /metrics. Label values are bounded: span names come from the descriptor pool
//! and the Docker route table (unknown Docker paths are named by their HTTP method alone);
//! a gRPC method the pool does not know (`rpc.method` = `_OTHER`) is `other` from the first
//! call, so a client sending made-up paths cannot push real methods out. As a backstop (large
//! user descriptor sets), past `MAX_METHODS_PER_INTERCEPT` names further names are `other`.

use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_semantic_conventions::attribute::RPC_METHOD;

use crate::metrics::{Family, FmtMetrics, Histogram};
use crate::trace::attr::AttrValue;
use crate::trace::call::Call;

/// Distinct method label values per intercept before the rest are `other`.
pub const MAX_METHODS_PER_INTERCEPT: usize = 256;

const CALL_DURATION: Family = Family::histogram(
    "runtime_tap_call_duration_seconds",
    "Duration of calls through runtime-tap, from the first request byte to the last response byte.",
);

/// Histograms by intercept, method and status: nested so that counting a call of a known
/// series looks strings up without allocating any. Fx-hashed: the labels are bounded
/// (`MAX_METHODS_PER_INTERCEPT`), four lookups a call (`observe::grpc` has the figure).
#[derive(Default)]
struct Inner {
    series: FxHashMap<Arc<str>, FxHashMap<String, FxHashMap<String, Histogram>>>,
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
        self.record_parts(
            &call.conn.service,
            &call.name,
            unknown_method(call),
            status,
            call.start,
            call.end,
        );
    }

    /// Count one finished call given by its parts (a call sampled out at its start has no
    /// `Call`): intercept, span name, whether `rpc.method` is `_OTHER`, status label, times.
    pub fn record_parts(
        &self,
        service: &Arc<str>,
        name: &str,
        unknown: bool,
        status: Cow<'_, str>,
        start: std::time::SystemTime,
        end: std::time::SystemTime,
    ) {
        let seconds = end.duration_since(start).unwrap_or(Duration::ZERO).as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let methods = match inner.series.get_mut(&**service) {
            Some(m) => m,
            None => inner.series.entry(Arc::clone(service)).or_default(),
        };
        let method = if unknown {
            OTHER
        } else if methods.contains_key(name) || methods.len() < MAX_METHODS_PER_INTERCEPT {
            name
        } else {
            OTHER
        };
        let statuses = match methods.get_mut(method) {
            Some(s) => s,
            None => methods.entry(method.to_owned()).or_default(),
        };
        let h = match statuses.get_mut(status.as_ref()) {
            Some(h) => h,
            None => statuses.entry(status.into_owned()).or_default(),
        };
        h.observe(seconds);
    }

    /// Render as a Prometheus histogram.
    pub fn render(&self, out: &mut String) {
        CALL_DURATION.header(out);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<(&Arc<str>, &String, &String, &Histogram)> = inner
            .series
            .iter()
            .flat_map(|(service, methods)| {
                methods.iter().flat_map(move |(method, statuses)| {
                    statuses.iter().map(move |(status, h)| (service, method, status, h))
                })
            })
            .collect();
        keys.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (service, method, status, h) in keys {
            let labels = format!(
                "intercept=\"{service}\",method=\"{}\",status=\"{}\"",
                escape(method),
                escape(status)
            );
            CALL_DURATION.histogram_series(out, &labels, h);
        }
    }
}

impl FmtMetrics for Red {
    fn fmt_metrics(&self, out: &mut String) {
        self.render(out);
    }
}

/// The label of calls whose method has no label of its own.
const OTHER: &str = "other";

/// `rpc.method` of a method the instrumentation does not know (the conventions' value; the
/// raw method goes in `rpc.method_original`).
pub const RPC_METHOD_OTHER: &str = "_OTHER";

/// A gRPC call whose method is not in the descriptor pool: the session says so with
/// `rpc.method = _OTHER` (its span name is the raw path).
fn unknown_method(call: &Call) -> bool {
    call.attributes
        .iter()
        .any(|a| a.key == RPC_METHOD && matches!(&a.value, AttrValue::Str(s) if s == RPC_METHOD_OTHER))
}

/// `OK`, `NOT_FOUND`... for gRPC, the HTTP status code for Docker, `incomplete` otherwise.
fn status_label(call: &Call) -> Cow<'_, str> {
    if call.incomplete {
        return Cow::Borrowed("incomplete");
    }
    for a in call.attributes.iter().rev() {
        match (a.key.as_ref(), &a.value) {
            ("rpc.response.status_code", AttrValue::Str(s)) => return Cow::Borrowed(s),
            ("http.response.status_code", AttrValue::Int(i)) => return Cow::Owned(i.to_string()),
            _ => {}
        }
    }
    Cow::Borrowed("unset")
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
