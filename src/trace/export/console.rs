//! Console sink: each finished trace as a waterfall on stderr (see [`super::waterfall`]),
//! colour only when stderr is a terminal. Spans are grouped per trace by a
//! [`TraceBuffer`] and a trace is shown once quiet; spans over its per-trace cap are shown at
//! once as one compact line each (service, name, kind, duration, status, key attributes).
//! Lone calls that belong to no trace are folded into one summary line per period
//! ([`super::fold`]) unless the sink is told to show each.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, HTTP_RESPONSE_STATUS_CODE, K8S_POD_NAME, RPC_RESPONSE_STATUS_CODE,
};

use super::fold::Fold;
use super::trace_buffer::{Finished, Ready, TraceBuffer};
use super::waterfall;
use crate::trace::attr::{AttrValue, names};
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus, hex};

/// Width of the waterfall: readable on any terminal.
pub(super) const WIDTH: usize = 80;

/// Attributes shown on the line, in this order, when the span has them.
const KEY_ATTRIBUTES: &[&str] = &[
    RPC_RESPONSE_STATUS_CODE,
    HTTP_RESPONSE_STATUS_CODE,
    CONTAINER_ID,
    names::CONTAINER_REF,
    K8S_POD_NAME,
    names::INCOMPLETE,
];

/// Writes waterfalls to stderr (or any writer, for tests).
pub(super) struct ConsoleSink {
    out: Box<dyn Write + Send>,
    traces: TraceBuffer,
    color: bool,
    /// The last thing shown was a lone span: a tree shown next needs a blank line first.
    after_lone: bool,
    /// Lone calls gathered for their summary line; `None`: each is shown.
    fold: Option<Fold>,
}

impl ConsoleSink {
    pub(super) fn stderr(fold: bool) -> ConsoleSink {
        let color = std::io::stderr().is_terminal();
        ConsoleSink::new(Box::new(std::io::stderr()), color, fold)
    }

    pub(super) fn new(out: Box<dyn Write + Send>, color: bool, fold: bool) -> ConsoleSink {
        ConsoleSink {
            out,
            traces: TraceBuffer::default(),
            color,
            after_lone: false,
            fold: fold.then(Fold::default),
        }
    }

    /// Takes a batch that arrived at `now` and shows the traces due. A failed write to stderr
    /// is not a lost span: never fails.
    pub(super) fn export(&mut self, spans: &[SpanRecord], now: Instant) {
        let mut buf = String::new();
        for s in spans {
            match self.traces.push(s.clone(), now) {
                None => {}
                Some(Ready::Overflow(s)) => {
                    self.after_lone = true;
                    buf.push_str(&line(&s));
                    buf.push('\n');
                }
                Some(Ready::Trace(t)) => self.show(&t, now, &mut buf),
            }
        }
        for t in self.traces.due(now) {
            self.show(&t, now, &mut buf);
        }
        self.summary(now, false, &mut buf);
        let _ = self.out.write_all(buf.as_bytes());
    }

    /// Shows the traces due at `now`.
    pub(super) fn tick(&mut self, now: Instant) {
        self.export(&[], now);
    }

    /// When [`ConsoleSink::tick`] has something to show next.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let fold = self.fold.as_ref().and_then(Fold::next_due);
        match (self.traces.next_due(), fold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Shows every trace held (shutdown).
    pub(super) fn flush(&mut self) {
        let mut buf = String::new();
        let now = Instant::now();
        for t in self.traces.drain() {
            self.show(&t, now, &mut buf);
        }
        self.summary(now, true, &mut buf);
        let _ = self.out.write_all(buf.as_bytes());
    }

    /// The fold's summary line, when its period is over (or `force`d).
    fn summary(&mut self, now: Instant, force: bool, buf: &mut String) {
        if let Some(line) = self.fold.as_mut().and_then(|f| f.take(now, force)) {
            self.after_lone = true;
            buf.push_str(&line);
        }
    }

    fn show(&mut self, t: &Finished, now: Instant, buf: &mut String) {
        let tree = waterfall::lone_call(&t.spans).is_none();
        if let Some(fold) = &mut self.fold
            && t.overflow == 0
            && let Some(s) = waterfall::lone_call(&t.spans)
            && !matches!(s.status, SpanStatus::Error(_))
        {
            fold.push(s, now);
            return;
        }
        if tree && self.after_lone {
            buf.push('\n');
        }
        self.after_lone = !tree;
        buf.push_str(&waterfall::render(&t.spans, WIDTH, self.color));
        if t.overflow > 0 {
            buf.push_str(&format!(
                "  (+{} more spans of this trace shown as lines above)\n",
                t.overflow
            ));
        }
        // Lone spans run together as a list; a tree stands apart.
        if tree {
            buf.push('\n');
        }
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
        SpanKind::Client => "client",
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
                AttrValue::Double(v) => write!(out, " {key}={v}"),
                AttrValue::Bool(v) => write!(out, " {key}={v}"),
                AttrValue::StrList(v) => write!(out, " {key}={}", v.join(",")),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::trace::span::ParentRef;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> SpanRecord {
        SpanRecord {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent: parent.map(|p| ParentRef {
                span_id: [p; 8],
                remote: false,
            }),
            trace_state: None,
            name: name.into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_millis(u64::from(id)),
            end: UNIX_EPOCH + Duration::from_millis(100),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: SpanStatus::Unset,
            service: "containerd".into(),
        }
    }

    #[test]
    fn a_trace_prints_as_one_waterfall_once_quiet() {
        let out = Shared::default();
        let mut sink = ConsoleSink::new(Box::new(out.clone()), false, true);
        let t0 = Instant::now();
        // The children arrive first, the root later, in separate batches.
        sink.export(&[span(1, 2, Some(1), "child-a"), span(1, 3, Some(1), "child-b")], t0);
        sink.export(&[span(1, 1, None, "root")], t0 + Duration::from_millis(500));
        assert_eq!(out.take(), "");
        assert_eq!(sink.next_due(), Some(t0 + Duration::from_millis(1500)));
        sink.tick(t0 + Duration::from_millis(1499));
        assert_eq!(out.take(), "");
        sink.tick(t0 + Duration::from_millis(1500));
        let text = out.take();
        assert!(text.starts_with("trace 01010101"), "{text}");
        let root = text.find("  root ").unwrap();
        let a = text.find("├─ child-a").unwrap();
        let b = text.find("└─ child-b").unwrap();
        assert!(root < a && a < b, "{text}");
        assert_eq!(sink.next_due(), None);
    }

    #[test]
    fn flush_prints_what_is_held() {
        let out = Shared::default();
        let mut sink = ConsoleSink::new(Box::new(out.clone()), false, false);
        sink.export(&[span(1, 1, None, "one"), span(2, 1, None, "two")], Instant::now());
        sink.flush();
        let text = out.take();
        assert!(text.contains("  one ") && text.contains("  two "), "{text}");
    }

    #[test]
    fn lone_calls_fold_into_one_line_per_period_and_errors_and_trees_stay_whole() {
        let out = Shared::default();
        let mut sink = ConsoleSink::new(Box::new(out.clone()), false, true);
        let t0 = Instant::now();
        let mut lone: Vec<SpanRecord> = (10..40)
            .map(|i| span(i, 1, None, "containerd.services.content.v1.Content/Info"))
            .collect();
        lone.extend((40..45).map(|i| span(i, 2, None, "containerd.services.leases.v1.Leases/Create")));
        let mut failed = span(50, 1, None, "containerd.services.tasks.v1.Tasks/Start");
        failed.status = SpanStatus::Error("OCI runtime start failed".into());
        lone.push(failed);
        lone.extend([span(60, 1, None, "root"), span(60, 2, Some(1), "child")]);
        sink.export(&lone, t0);
        // Each trace is shown once quiet: the error and the tree in full, the lone calls not.
        sink.tick(t0 + Duration::from_secs(2));
        let text = out.take();
        assert!(
            text.contains("Tasks/Start") && text.contains("OCI runtime start failed"),
            "{text}"
        );
        assert!(text.contains("  root ") && text.contains("└─ child"), "{text}");
        assert!(!text.contains("Content/Info") && !text.contains("Leases"), "{text}");
        // The period starts when the first lone call is counted.
        let end = t0 + Duration::from_secs(2) + super::super::fold::PERIOD;
        assert_eq!(sink.next_due(), Some(end));
        sink.tick(end - Duration::from_millis(1));
        assert_eq!(out.take(), "");
        // The period's end: one line, most frequent first, with the slowest of each.
        sink.tick(end);
        let text = out.take();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with(
                "· 35 calls in no trace over 10 s: containerd Content/Info ×30 (slowest 99.0ms), \
                 containerd Leases/Create ×5 (slowest 98.0ms)\n"
            ),
            "{text}"
        );
        assert_eq!(sink.next_due(), None);
        // Asked to show each call, nothing is folded.
        let mut all = ConsoleSink::new(Box::new(out.clone()), false, false);
        all.export(&[span(70, 1, None, "containerd.services.content.v1.Content/Info")], t0);
        all.flush();
        let text = out.take();
        assert!(
            text.contains("  Content/Info ") && !text.contains("calls in no trace"),
            "{text}"
        );
    }
}
