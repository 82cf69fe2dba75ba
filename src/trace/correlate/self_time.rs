//! Self time: what each layer spent itself over a trace, summed on its root.

use super::*;

/// What a span's subtree contributes to the self time of its trace's layers.
#[derive(Default)]
pub(super) struct Below {
    /// Children's `(start, end)`.
    pub(super) kids: Vec<(SystemTime, SystemTime)>,
    /// Self time of exported descendants, per service, in nanoseconds: exact, so that where
    /// calls do not overlap the layers add up to the root (converted once, on the root).
    pub(super) self_ns: Vec<(Arc<str>, u64)>,
}

impl Below {
    pub(super) fn add(&mut self, service: &Arc<str>, ns: u64) {
        match self.self_ns.iter_mut().find(|(s, _)| s == service) {
            Some((_, v)) => *v += ns,
            None => self.self_ns.push((Arc::clone(service), ns)),
        }
    }

    pub(super) fn merge(&mut self, other: &[(Arc<str>, u64)]) {
        for (service, ms) in other {
            self.add(service, *ms);
        }
    }
}

/// `runtime_tap.self_time_ms.<service>` for each layer of a trace, on its root.
pub(super) fn push_self_times(attributes: &mut Vec<Attr>, self_times: &[(Arc<str>, u64)]) {
    for (service, ns) in self_times {
        attributes.push(Attr::double(names::self_time(service), ms(*ns)));
    }
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds as milliseconds to the microsecond (the span contract's precision), converted
/// once from the exact sum: rounding each span's share instead lost up to a millisecond a span.
pub(super) fn ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

impl Correlator {
    /// Self time per service (durations minus the union of children's intervals) of the calls
    /// of `tree` being exported, children before parents, each added to its parent's (or pod
    /// root's) tally: what children exported earlier left there is in it. Returns the tally of
    /// `tree`'s top.
    pub(super) fn gather_self_times(&mut self, tree: &[SpanId]) -> Vec<(Arc<str>, u64)> {
        let mut top = Vec::new();
        for (k, cur) in tree.iter().enumerate().rev() {
            let Some(n) = self.nodes.get_mut(cur) else { continue };
            if !matches!(n.state, State::Deciding { .. } | State::Held { .. }) {
                continue;
            }
            let Some(end) = n.end else { continue };
            let mut below = n.below.take().map(|b| *b).unwrap_or_default();
            let covered = crate::trace::tree::covered(n.start, end, below.kids.iter().copied());
            let total = end.duration_since(n.start).unwrap_or_default();
            below.add(&n.conn.service, nanos(total.saturating_sub(covered)));
            match n.parent {
                Some((pod, Link::Pod)) => {
                    if let Some(group) = self.pods.iter_mut().find(|p| p.root == pod) {
                        group.below.merge(&below.self_ns);
                    }
                }
                Some((parent, _)) => {
                    if let Some(p) = self.nodes.get_mut(&parent) {
                        p.below.get_or_insert_default().merge(&below.self_ns);
                    }
                }
                None if k == 0 => top = below.self_ns,
                None => {}
            }
        }
        top
    }
}
