//! Export: a settled call and everything held on it become spans, sampled as one trace.

use super::*;

impl Correlator {
    /// Export `id` and every call held waiting on it, transitively, with its trace id. On a
    /// root, the self time of each layer over that tree is added.
    pub(super) fn export_tree(&mut self, id: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
        let mut tree = vec![id];
        let mut i = 0;
        while i < tree.len() {
            let cur = tree[i];
            let parent = self.nodes.get(&cur).map(|n| (n.trace_id, n.sampled));
            let waiting = self
                .nodes
                .get_mut(&cur)
                .map(|n| std::mem::take(&mut n.waiting))
                .unwrap_or_default();
            for w in waiting {
                if let (Some((t, sampled)), Some(child)) = (parent, self.nodes.get_mut(&w)) {
                    if !child.fixed {
                        child.trace_id = t;
                        child.sampled &= sampled;
                    }
                    child.settled = true;
                    tree.push(w);
                }
            }
            i += 1;
        }
        let mut self_times = self.gather_self_times(&tree);
        let mut spans = Vec::with_capacity(tree.len());
        let mut is_root = false;
        let mut presampled = false;
        for (k, cur) in tree.into_iter().enumerate() {
            let evidence = self.evidence_links(cur);
            self.held.remove(&cur);
            let Some(n) = self.nodes.get_mut(&cur) else { continue };
            let call = match std::mem::replace(
                &mut n.state,
                State::Done {
                    retain_until: now + RETAIN,
                },
            ) {
                State::Deciding { call, .. } | State::Held { call, .. } => call,
                other => {
                    // Still open (a parent whose children were released early) or done.
                    n.state = other;
                    continue;
                }
            };
            n.settled = true;
            if let Some(outcome) = n.remote_outcome {
                self.counts.remote.add(outcome);
            }
            if !n.sampled {
                // The caller's trace is not sampled: respected, and counted, never silent.
                self.counts.not_sampled += 1;
                continue;
            }
            let mut call = call;
            let children = std::mem::take(&mut call.children);
            let mut span = span_of(*call, n);
            span.links.extend(evidence);
            let mut client = (self.client_spans && wants_client_span(n)).then(|| client_span(&mut span, &n.conn));
            if k == 0 && n.parent.is_none() {
                // Sampling is decided at the trace's root; a span under a remote parent is
                // the top of runtime-tap's part of the trace, so it gets the self times too.
                is_root = !n.remote_outcome.is_some_and(RemoteOutcome::is_parent);
                presampled = n.presampled;
                let top = client.as_mut().unwrap_or(&mut span);
                top_self_times(std::mem::take(&mut self_times), &n.conn.service, top);
            }
            self.counts.child_spans += children.len() as u64;
            let made: Vec<SpanRecord> = children.into_iter().map(|c| child_span(&span, c)).collect();
            if let Some(c) = client {
                // Parent first: the sampler reads the trace's top as `spans[0]`.
                self.counts.client_spans += 1;
                spans.push(c);
            }
            spans.push(span);
            spans.extend(made);
        }
        // Sampling is decided on a whole trace, at its root; calls of a dropped trace that
        // settle later follow the root's decision.
        let Some(first) = spans.first() else { return };
        let keep = if is_root {
            // Kept by the rules at its start (`begin`): its token is taken.
            presampled || self.sampler.keep(&spans, now)
        } else {
            !self.dropped_traces.contains(&first.trace_id)
        };
        if keep {
            out.extend(spans);
        } else {
            self.counts.sampled_out += spans.len() as u64;
            if self.dropped_traces.insert(first.trace_id) {
                self.dropped_order.push_back(first.trace_id);
                if self.dropped_order.len() > MAX_DROPPED_TRACES
                    && let Some(old) = self.dropped_order.pop_front()
                {
                    self.dropped_traces.remove(&old);
                }
            }
        }
    }
}

impl Correlator {
    /// Links to the parents the rules would have given a fixed call (`evidence`).
    fn evidence_links(&self, cur: SpanId) -> Vec<LinkRecord> {
        self.nodes
            .get(&cur)
            .map(|n| n.evidence.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|(target, link)| {
                Some(LinkRecord {
                    trace_id: self.trace_of(*target)?,
                    span_id: *target,
                    attributes: vec![Attr::str(names::LINK, link.as_str())],
                })
            })
            .collect()
    }
}

/// The self time of each layer of a trace, on its top span `top`: the call's own layer
/// (`own`) first, then the others as their spans were placed. When `top` is a CLIENT span,
/// its layer comes first, with no time of its own (it covers its SERVER child exactly).
fn top_self_times(mut self_times: Vec<(Arc<str>, u64)>, own: &Arc<str>, top: &mut SpanRecord) {
    if let Some(i) = self_times.iter().position(|(s, _)| s == own) {
        self_times[..=i].rotate_right(1);
    }
    if top.kind == SpanKind::Client {
        self_times.insert(0, (Arc::clone(&top.service), 0));
    }
    push_self_times(&mut top.attributes, &self_times);
}

/// A synthesized INTERNAL span under `parent`, in its trace and resource.
fn child_span(parent: &SpanRecord, c: ChildSpan) -> SpanRecord {
    SpanRecord {
        trace_id: parent.trace_id,
        span_id: new_span_id(),
        parent: Some(ParentRef {
            span_id: parent.span_id,
            remote: false,
        }),
        trace_state: None,
        name: c.name.to_string(),
        kind: SpanKind::Internal,
        start: c.start,
        end: c.end,
        attributes: c.attributes,
        events: Vec::new(),
        links: Vec::new(),
        status: SpanStatus::Unset,
        service: Arc::clone(&parent.service),
    }
}

pub(super) fn span_of(call: Call, node: &Node) -> SpanRecord {
    let mut attributes = call.attributes;
    for a in &node.inherited {
        if !attributes.iter().any(|b| b.key == a.key) {
            attributes.push(a.clone());
        }
    }
    crate::trace::tracer::conn_attributes(&call.conn, &mut attributes);
    if call.incomplete {
        attributes.push(Attr::bool(names::INCOMPLETE, true));
    }
    if call.shape == Shape::LongLived {
        attributes.push(Attr::bool(names::LONG_LIVED, true));
    }
    let remote_parent = node
        .remote
        .as_ref()
        .filter(|_| node.remote_outcome.is_some_and(RemoteOutcome::is_parent));
    let (parent, trace_state) = match (remote_parent, node.parent) {
        (Some(r), _) => {
            attributes.push(Attr::str(names::LINK, Link::Traceparent.as_str()));
            (
                Some(ParentRef {
                    span_id: r.span_id,
                    remote: true,
                }),
                r.trace_state.clone(),
            )
        }
        (None, Some((p, link))) => {
            attributes.push(Attr::str(names::LINK, link.as_str()));
            (
                Some(ParentRef {
                    span_id: p,
                    remote: false,
                }),
                None,
            )
        }
        (None, None) => (None, None),
    };
    let mut links = Vec::new();
    if let (Some(remote), Some(outcome)) = (&node.remote, node.remote_outcome) {
        attributes.push(Attr::str(names::REMOTE_PARENT, outcome.as_str()));
        if !outcome.is_parent() {
            links.push(LinkRecord {
                trace_id: remote.trace_id,
                span_id: remote.span_id,
                attributes: vec![Attr::str(names::LINK, Link::Traceparent.as_str())],
            });
        }
    }
    if !node.links.is_empty() {
        attributes.push(Attr::str(names::LINK, Link::Ambiguous.as_str()));
        for (span_id, trace_id) in &node.links {
            // Each candidate in its own trace (provisional if not settled yet).
            links.push(LinkRecord {
                trace_id: *trace_id,
                span_id: *span_id,
                attributes: vec![Attr::str(names::LINK, "candidate")],
            });
        }
    }
    SpanRecord {
        trace_id: node.trace_id,
        span_id: call.span_id,
        parent,
        trace_state,
        name: call.name,
        kind: SpanKind::Server,
        start: call.start,
        end: call.end.max(call.start),
        attributes,
        events: call.events,
        links,
        status: call.status,
        service: Arc::clone(&call.conn.service),
    }
}
