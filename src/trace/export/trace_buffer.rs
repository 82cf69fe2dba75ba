//! Groups exported spans by trace until the trace is quiet, for the console waterfall. Spans
//! reach the exporter already correlated (a child once its parent's trace is settled, a root
//! when it ends, before or after its children), so a trace is taken as finished once no span
//! has arrived for it for [`QUIET`], or once it has been held for [`MAX_HOLD`] (a trace that
//! keeps growing, like an event subscription, still shows). A trace whose spans name a parent
//! it has not received yet (a `pod start` root is exported after 5 s without another call of
//! the pod; a propagated parent after its children) waits [`AWAITED_QUIET`] instead, up to
//! [`AWAITED_MAX_HOLD`], so the tree is shown whole.
//!
//! The rule it keeps: bounded memory and no span lost. At most [`MAX_TRACES`] traces are held
//! (a new one pushes out the least recently active, which is shown early) and at most
//! [`MAX_SPANS_PER_TRACE`] spans per trace (the rest are handed back at once, to be shown in
//! compact form). Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::trace::span::{SpanId, SpanRecord, TraceId};

/// A trace with no new span for this long is shown.
pub const QUIET: Duration = Duration::from_secs(1);
/// A trace held this long is shown even if spans keep coming; later ones start a new group.
pub const MAX_HOLD: Duration = Duration::from_secs(10);
/// A trace still missing a parent its spans name is shown after this long without a new span
/// (the correlator's pod quiet period, plus [`QUIET`]).
pub const AWAITED_QUIET: Duration = Duration::from_secs(6);
/// ... or once held this long.
pub const AWAITED_MAX_HOLD: Duration = Duration::from_secs(30);
/// Traces held at once.
pub const MAX_TRACES: usize = 256;
/// Spans held per trace; more are shown at once in compact form.
pub const MAX_SPANS_PER_TRACE: usize = 200;

/// A trace ready to show.
#[derive(Debug, PartialEq)]
pub struct Finished {
    pub spans: Vec<SpanRecord>,
    /// Spans of this trace handed back as [`Ready::Overflow`] while it was held.
    pub overflow: usize,
}

/// What [`TraceBuffer::push`] hands back for showing at once.
#[derive(Debug, PartialEq)]
pub enum Ready {
    /// A trace pushed out early by [`MAX_TRACES`].
    Trace(Finished),
    /// A span over [`MAX_SPANS_PER_TRACE`] of its trace.
    Overflow(SpanRecord),
}

struct Held {
    spans: Vec<SpanRecord>,
    overflow: usize,
    first: Instant,
    last: Instant,
    /// Local parents named by its spans that it has not received.
    awaited: Vec<SpanId>,
}

impl Held {
    fn new(now: Instant) -> Held {
        Held {
            spans: Vec::new(),
            overflow: 0,
            first: now,
            last: now,
            awaited: Vec::new(),
        }
    }

    fn add(&mut self, span: SpanRecord) {
        self.awaited.retain(|p| *p != span.span_id);
        if let Some(p) = span.parent.filter(|p| !p.remote)
            && !self.spans.iter().any(|s| s.span_id == p.span_id)
            && !self.awaited.contains(&p.span_id)
        {
            self.awaited.push(p.span_id);
        }
        self.spans.push(span);
    }

    fn due_at(&self, quiet: Duration, max_hold: Duration) -> Instant {
        if self.awaited.is_empty() {
            (self.last + quiet).min(self.first + max_hold)
        } else {
            (self.last + quiet.max(AWAITED_QUIET)).min(self.first + max_hold.max(AWAITED_MAX_HOLD))
        }
    }
}

/// Spans grouped per trace id, each group waiting to be quiet.
pub struct TraceBuffer {
    traces: HashMap<TraceId, Held>,
    quiet: Duration,
    max_hold: Duration,
    max_traces: usize,
    max_spans: usize,
}

impl Default for TraceBuffer {
    fn default() -> Self {
        TraceBuffer::new(QUIET, MAX_HOLD, MAX_TRACES, MAX_SPANS_PER_TRACE)
    }
}

impl TraceBuffer {
    /// A buffer with its limits (each at least 1).
    pub fn new(quiet: Duration, max_hold: Duration, max_traces: usize, max_spans: usize) -> TraceBuffer {
        TraceBuffer {
            traces: HashMap::new(),
            quiet,
            max_hold,
            max_traces: max_traces.max(1),
            max_spans: max_spans.max(1),
        }
    }

    /// Adds a span that arrived at `now`. Returns what must be shown at once: the span itself
    /// when its trace is full, or a trace pushed out to make room.
    pub fn push(&mut self, span: SpanRecord, now: Instant) -> Option<Ready> {
        if let Some(h) = self.traces.get_mut(&span.trace_id) {
            h.last = now;
            if h.spans.len() >= self.max_spans {
                h.overflow += 1;
                return Some(Ready::Overflow(span));
            }
            h.add(span);
            return None;
        }
        let mut out = None;
        if self.traces.len() >= self.max_traces
            && let Some(oldest) = self
                .traces
                .iter()
                .min_by_key(|(_, h)| (h.last, h.first))
                .map(|(id, _)| *id)
            && let Some(h) = self.traces.remove(&oldest)
        {
            out = Some(Ready::Trace(Finished {
                spans: h.spans,
                overflow: h.overflow,
            }));
        }
        let mut held = Held::new(now);
        let trace_id = span.trace_id;
        held.add(span);
        self.traces.insert(trace_id, held);
        out
    }

    /// Takes the traces that are due at `now` (quiet, or held too long), oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Finished> {
        let (quiet, max_hold) = (self.quiet, self.max_hold);
        let ids: Vec<TraceId> = self
            .traces
            .iter()
            .filter(|(_, h)| h.due_at(quiet, max_hold) <= now)
            .map(|(id, _)| *id)
            .collect();
        self.take(ids)
    }

    /// Takes every trace held, oldest first (shutdown).
    pub fn drain(&mut self) -> Vec<Finished> {
        let ids: Vec<TraceId> = self.traces.keys().copied().collect();
        self.take(ids)
    }

    /// When the next trace becomes due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.traces.values().map(|h| h.due_at(self.quiet, self.max_hold)).min()
    }

    /// Traces held now.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    /// True when no trace is held.
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    fn take(&mut self, ids: Vec<TraceId>) -> Vec<Finished> {
        let mut held: Vec<Held> = ids.iter().filter_map(|id| self.traces.remove(id)).collect();
        held.sort_by_key(|h| h.first);
        held.into_iter()
            .map(|h| Finished {
                spans: h.spans,
                overflow: h.overflow,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::trace::span::{SpanKind, SpanStatus};

    fn span(trace: u8, id: u8) -> SpanRecord {
        SpanRecord {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent: None,
            trace_state: None,
            name: "x".into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: SpanStatus::Unset,
            service: Arc::from("containerd"),
        }
    }

    fn ids(f: &Finished) -> Vec<u8> {
        f.spans.iter().map(|s| s.span_id[0]).collect()
    }

    #[test]
    fn a_trace_is_due_once_quiet() {
        let t0 = Instant::now();
        let ms = |v: u64| t0 + Duration::from_millis(v);
        let mut b = TraceBuffer::default();
        assert_eq!(b.push(span(1, 1), ms(0)), None);
        assert_eq!(b.push(span(2, 5), ms(100)), None);
        assert_eq!(b.push(span(1, 2), ms(600)), None);
        assert_eq!(b.next_due(), Some(ms(1100)));
        assert!(b.due(ms(1099)).is_empty());
        // Trace 2 went quiet first; trace 1 got a span at 600.
        let d = b.due(ms(1100));
        assert_eq!(d.iter().map(ids).collect::<Vec<_>>(), vec![vec![5]]);
        let d = b.due(ms(1600));
        assert_eq!(d.iter().map(ids).collect::<Vec<_>>(), vec![vec![1, 2]]);
        assert!(b.is_empty());
        assert_eq!(b.next_due(), None);
    }

    #[test]
    fn a_trace_waits_for_a_parent_its_spans_name() {
        use crate::trace::span::ParentRef;
        let t0 = Instant::now();
        let ms = |v: u64| t0 + Duration::from_millis(v);
        let mut b = TraceBuffer::default();
        let mut member = span(1, 2);
        member.parent = Some(ParentRef {
            span_id: [1; 8],
            remote: false,
        });
        b.push(member, ms(0));
        assert!(b.due(ms(5000)).is_empty(), "its root (span 1) has not come");
        b.push(span(1, 1), ms(5500));
        assert!(b.due(ms(6000)).is_empty());
        let d = b.due(ms(6500));
        assert_eq!(d.iter().map(ids).collect::<Vec<_>>(), vec![vec![2, 1]]);
        // A parent that never comes delays the trace by AWAITED_QUIET, no more.
        let mut orphan = span(3, 2);
        orphan.parent = Some(ParentRef {
            span_id: [9; 8],
            remote: false,
        });
        b.push(orphan, ms(10_000));
        assert_eq!(b.next_due(), Some(ms(10_000) + AWAITED_QUIET));
    }

    #[test]
    fn a_busy_trace_is_shown_after_max_hold() {
        let t0 = Instant::now();
        let mut b = TraceBuffer::default();
        let mut now = t0;
        for i in 0..30u8 {
            b.push(span(1, i + 1), now);
            now += Duration::from_millis(500);
            if !b.due(now).is_empty() {
                assert!(now - t0 >= MAX_HOLD);
                return;
            }
        }
        panic!("never shown");
    }

    #[test]
    fn limits_hand_back_at_once_and_lose_nothing() {
        let t0 = Instant::now();
        let mut b = TraceBuffer::new(QUIET, MAX_HOLD, 2, 3);
        let mut shown = 0;
        for i in 1..=5u8 {
            match b.push(span(1, i), t0) {
                None => {}
                Some(Ready::Overflow(s)) => {
                    assert!(s.span_id[0] > 3);
                    shown += 1;
                }
                Some(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(shown, 2);
        b.push(span(2, 10), t0 + Duration::from_millis(1));
        // A third trace pushes out the least recently active one: trace 1.
        match b.push(span(3, 20), t0 + Duration::from_millis(2)) {
            Some(Ready::Trace(f)) => {
                assert_eq!(ids(&f), vec![1, 2, 3]);
                assert_eq!(f.overflow, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.len(), 2);
        let rest = b.drain();
        assert_eq!(rest.iter().map(ids).collect::<Vec<_>>(), vec![vec![10], vec![20]]);
    }
}
