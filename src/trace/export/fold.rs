//! The console's fold: a call that belongs to no trace (a lone span, no error) is counted, not
//! printed, and each period ends in one summary line (method × count, slowest). An image set-up
//! or a poll loop makes dozens of such calls a second (Content/*, Leases/*, Namespaces/Get:
//! about 60 in `demo`), which would bury the traces a user came to see. Traces of more than
//! one span and every error are never folded; `[export] console_fold = false` shows each call.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::waterfall::grpc_short;
use crate::trace::span::SpanRecord;

/// How long lone calls are gathered before their summary line.
pub(super) const PERIOD: Duration = Duration::from_secs(10);
/// Methods named on a summary line; the rest are counted as "n more".
const NAMED: usize = 8;

/// A method's service and span name, and its count and slowest call.
type Row = ((Arc<str>, String), (usize, Duration));

/// Lone calls gathered since `since`.
#[derive(Default)]
pub(super) struct Fold {
    since: Option<Instant>,
    /// Per (service, name): count and slowest.
    methods: HashMap<(Arc<str>, String), (usize, Duration)>,
}

impl Fold {
    /// Counts a lone call seen at `now`.
    pub(super) fn push(&mut self, s: &SpanRecord, now: Instant) {
        self.since.get_or_insert(now);
        let d = s.end.duration_since(s.start).unwrap_or_default();
        let e = self
            .methods
            .entry((Arc::clone(&s.service), s.name.clone()))
            .or_default();
        e.0 += 1;
        e.1 = e.1.max(d);
    }

    /// When the current period's line is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.since.map(|t| t + PERIOD)
    }

    /// The summary line when the period is over at `now` (or `force`d, at shutdown).
    pub(super) fn take(&mut self, now: Instant, force: bool) -> Option<String> {
        let since = self.since?;
        if !force && now < since + PERIOD {
            return None;
        }
        let over = now.saturating_duration_since(since).max(Duration::from_millis(1));
        self.since = None;
        let mut rows: Vec<Row> = self.methods.drain().collect();
        rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        let total: usize = rows.iter().map(|r| r.1.0).sum();
        let mut line = format!("· {total} calls in no trace over {:.0} s:", over.as_secs_f64().ceil());
        for ((service, name), (count, slowest)) in rows.iter().take(NAMED) {
            let _ = write!(
                line,
                " {service} {} ×{count} (slowest {:.1}ms),",
                grpc_short(name).unwrap_or(name),
                slowest.as_secs_f64() * 1000.0
            );
        }
        if rows.len() > NAMED {
            let more: usize = rows[NAMED..].iter().map(|r| r.1.0).sum();
            let _ = write!(line, " {more} more in {} methods,", rows.len() - NAMED);
        }
        line.pop();
        line.push('\n');
        Some(line)
    }
}
