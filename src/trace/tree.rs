//! The span tree of one trace, for the views (console waterfall, report): roots, children
//! ordered by start, depth-first order, and self time per layer. Pure: no clock, no I/O.
//!
//! The rule it keeps: every span of the input appears exactly once. A span whose parent is not
//! in the input (a remote parent, a parent printed earlier) is a root; a parent cycle, which
//! well-formed input never has, is broken by treating its first span as a root.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::trace::span::{SpanId, SpanRecord};

/// One span of a tree walk: its index in the input and its depth (0 for a root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub index: usize,
    pub depth: usize,
    /// True when this is the last child of its parent (or the last root): drawing needs it.
    pub last: bool,
}

/// The spans of one trace as a forest.
pub struct SpanTree<'a> {
    spans: &'a [SpanRecord],
    /// Indexes of the roots, ordered by start.
    roots: Vec<usize>,
    /// Children indexes per span index, ordered by start.
    children: Vec<Vec<usize>>,
}

impl<'a> SpanTree<'a> {
    /// Builds the forest. Duplicate span ids: the first one is the parent of children.
    pub fn new(spans: &'a [SpanRecord]) -> SpanTree<'a> {
        let mut by_id: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
        for (i, s) in spans.iter().enumerate() {
            by_id.entry(s.span_id).or_insert(i);
        }
        let mut children = vec![Vec::new(); spans.len()];
        let mut roots = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            match s.parent.and_then(|p| by_id.get(&p.span_id)).copied() {
                Some(p) if p != i => children[p].push(i),
                _ => roots.push(i),
            }
        }
        let order = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start, spans[i].end, i));
        order(&mut roots);
        children.iter_mut().for_each(order);
        let mut tree = SpanTree { spans, roots, children };
        // Spans on a parent cycle are reachable from no root: make the first of each a root.
        let mut seen = vec![false; spans.len()];
        tree.walk().into_iter().for_each(|n| seen[n.index] = true);
        while let Some(i) = seen.iter().position(|s| !s) {
            tree.children.iter_mut().for_each(|c| c.retain(|&k| k != i));
            tree.roots.push(i);
            order(&mut tree.roots);
            seen.iter_mut().for_each(|s| *s = false);
            tree.walk().into_iter().for_each(|n| seen[n.index] = true);
        }
        tree
    }

    /// The spans the tree was built from.
    pub fn spans(&self) -> &'a [SpanRecord] {
        self.spans
    }

    /// Root indexes, ordered by start.
    pub fn roots(&self) -> &[usize] {
        &self.roots
    }

    /// Children of span `index`, ordered by start.
    pub fn children(&self, index: usize) -> &[usize] {
        &self.children[index]
    }

    /// Every span, depth first: each root followed by its subtree, children by start.
    pub fn walk(&self) -> Vec<Node> {
        let mut out = Vec::with_capacity(self.spans.len());
        for (k, &r) in self.roots.iter().enumerate() {
            self.walk_from(r, k + 1 == self.roots.len(), &mut out);
        }
        out
    }

    /// The subtree of `root`, depth first, `root` at depth 0.
    pub fn walk_from_root(&self, root: usize) -> Vec<Node> {
        let mut out = Vec::new();
        self.walk_from(root, true, &mut out);
        out
    }

    fn walk_from(&self, root: usize, last: bool, out: &mut Vec<Node>) {
        // Explicit stack: a deep (or hostile) file must not overflow the call stack.
        let mut stack = vec![Node {
            index: root,
            depth: 0,
            last,
        }];
        while let Some(n) = stack.pop() {
            out.push(n);
            let kids = &self.children[n.index];
            for (k, &c) in kids.iter().enumerate().rev() {
                stack.push(Node {
                    index: c,
                    depth: n.depth + 1,
                    last: k + 1 == kids.len(),
                });
            }
        }
    }

    /// Self time per service over the subtree of `root`: each span's duration minus the union
    /// (not the sum) of its children's intervals clipped to it, summed per service, in order
    /// of first appearance depth first. Never negative, and the values add up to the root's
    /// duration when every child lies inside its parent.
    pub fn self_times(&self, root: usize) -> Vec<(Arc<str>, Duration)> {
        let mut per: Vec<(Arc<str>, Duration)> = Vec::new();
        for n in self.walk_from_root(root) {
            let s = &self.spans[n.index];
            let kids = self.children[n.index]
                .iter()
                .map(|&c| (self.spans[c].start, self.spans[c].end));
            let own = duration(s).saturating_sub(covered(s.start, s.end, kids));
            match per.iter_mut().find(|(svc, _)| *svc == s.service) {
                Some((_, d)) => *d += own,
                None => per.push((Arc::clone(&s.service), own)),
            }
        }
        per
    }
}

/// A span's duration; zero when its end is before its start.
pub fn duration(s: &SpanRecord) -> Duration {
    s.end.duration_since(s.start).unwrap_or_default()
}

/// The length of the union of `intervals`, each clipped to `[start, end]`.
pub fn covered(
    start: SystemTime,
    end: SystemTime,
    intervals: impl Iterator<Item = (SystemTime, SystemTime)>,
) -> Duration {
    let mut v: Vec<(SystemTime, SystemTime)> = intervals
        .map(|(s, e)| (s.max(start), e.min(end)))
        .filter(|(s, e)| s < e)
        .collect();
    v.sort();
    let mut total = Duration::ZERO;
    let mut cur: Option<(SystemTime, SystemTime)> = None;
    for (s, e) in v {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce.duration_since(cs).unwrap_or_default();
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce.duration_since(cs).unwrap_or_default();
    }
    total
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::trace::span::{ParentRef, SpanKind, SpanStatus};

    fn ms(v: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_000_000 + v)
    }

    fn sp(id: u8, parent: Option<u8>, service: &str, start: u64, end: u64) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent: parent.map(|p| ParentRef {
                span_id: [p; 8],
                remote: false,
            }),
            trace_state: None,
            name: format!("s{id}"),
            kind: SpanKind::Server,
            start: ms(start),
            end: ms(end),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: SpanStatus::Unset,
            service: service.into(),
        }
    }

    #[test]
    fn walk_is_depth_first_with_children_by_start() {
        let spans = vec![
            sp(3, Some(1), "containerd", 20, 30),
            sp(2, Some(1), "containerd", 5, 10),
            sp(1, None, "dockerd", 0, 50),
            sp(4, Some(3), "containerd", 21, 22),
            sp(9, Some(7), "containerd", 1, 2), // parent not here: a root
        ];
        let t = SpanTree::new(&spans);
        let order: Vec<(u8, usize)> = t.walk().iter().map(|n| (spans[n.index].span_id[0], n.depth)).collect();
        assert_eq!(order, vec![(1, 0), (2, 1), (3, 1), (4, 2), (9, 0)]);
    }

    #[test]
    fn cycles_do_not_lose_spans() {
        let spans = vec![sp(1, Some(2), "a", 0, 1), sp(2, Some(1), "a", 0, 1)];
        let t = SpanTree::new(&spans);
        assert_eq!(t.walk().len(), 2);
    }

    #[test]
    fn self_time_subtracts_the_union_of_children() {
        // Root 0..100; children 10..40 and 30..60 overlap: union 50, self 50.
        // Child 30..60 has a grandchild 40..50: its self time is 20; containerd 30 + 20 + 10.
        let spans = vec![
            sp(1, None, "dockerd", 0, 100),
            sp(2, Some(1), "containerd", 10, 40),
            sp(3, Some(1), "containerd", 30, 60),
            sp(4, Some(3), "containerd", 40, 50),
        ];
        let t = SpanTree::new(&spans);
        let got = t.self_times(t.roots()[0]);
        assert_eq!(
            got,
            vec![
                (Arc::from("dockerd"), Duration::from_millis(50)),
                (Arc::from("containerd"), Duration::from_millis(60)),
            ]
        );
    }

    #[test]
    fn children_outside_the_parent_are_clipped() {
        let spans = vec![sp(1, None, "a", 10, 20), sp(2, Some(1), "b", 0, 15)];
        let t = SpanTree::new(&spans);
        let got = t.self_times(0);
        assert_eq!(got[0].1, Duration::from_millis(5));
        assert_eq!(got[1].1, Duration::from_millis(15));
    }
}
