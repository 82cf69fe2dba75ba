//! Console sink: one readable line per span on stderr (service, name, kind, duration, status,
//! a few key attributes). The waterfall view comes later; this is the quick look.

use std::io::Write;

use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, HTTP_RESPONSE_STATUS_CODE, K8S_POD_NAME, RPC_RESPONSE_STATUS_CODE,
};

use crate::trace::attr::{AttrValue, names};
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus, hex};

/// Attributes shown on the line, in this order, when the span has them.
const KEY_ATTRIBUTES: &[&str] = &[
    RPC_RESPONSE_STATUS_CODE,
    HTTP_RESPONSE_STATUS_CODE,
    CONTAINER_ID,
    names::CONTAINER_REF,
    K8S_POD_NAME,
    names::INCOMPLETE,
];

/// Writes span lines to stderr (or any writer, for tests).
pub(super) struct ConsoleSink {
    out: Box<dyn Write + Send>,
}

impl ConsoleSink {
    pub(super) fn stderr() -> ConsoleSink {
        ConsoleSink {
            out: Box::new(std::io::stderr()),
        }
    }

    /// Writes one line per span. A failed write to stderr is not a lost span: never fails.
    pub(super) fn export(&mut self, spans: &[SpanRecord]) {
        let mut buf = String::new();
        for s in spans {
            buf.push_str(&line(s));
            buf.push('\n');
        }
        let _ = self.out.write_all(buf.as_bytes());
    }
}

/// One span as a line:
/// `containerd containerd.services.tasks.v1.Tasks/Start server 12.3ms error="..." trace=.. span=.. parent=.. key=value...`
pub(super) fn line(s: &SpanRecord) -> String {
    use std::fmt::Write;
    let ms = s.end.duration_since(s.start).unwrap_or_default().as_secs_f64() * 1000.0;
    let kind = match s.kind {
        SpanKind::Server => "server",
        SpanKind::Internal => "internal",
    };
    let mut out = format!("{} {} {kind} {ms:.1}ms", s.service, s.name);
    match &s.status {
        SpanStatus::Unset => out.push_str(" ok"),
        SpanStatus::Error(msg) => {
            let _ = write!(out, " error={msg:?}");
        }
    }
    let _ = write!(out, " trace={} span={}", hex(&s.trace_id), hex(&s.span_id));
    if let Some(p) = &s.parent {
        let _ = write!(out, " parent={}", hex(&p.span_id));
    }
    for key in KEY_ATTRIBUTES {
        if let Some(a) = s.attributes.iter().find(|a| a.key == *key) {
            let _ = match &a.value {
                AttrValue::Str(v) => write!(out, " {key}={v}"),
                AttrValue::Int(v) => write!(out, " {key}={v}"),
                AttrValue::Bool(v) => write!(out, " {key}={v}"),
                AttrValue::StrList(v) => write!(out, " {key}={}", v.join(",")),
            };
        }
    }
    out
}
