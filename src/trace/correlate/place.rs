//! Placement: the rules that decide a finished call's parent (module doc of `correlate`).

use super::*;

impl Correlator {
    /// Apply the rules to a `Deciding` call; `force` decides with what is known.
    pub(super) fn try_decide(&mut self, id: SpanId, now: SystemTime, force: bool, out: &mut Vec<SpanRecord>) {
        let Some(node) = self.nodes.get(&id) else { return };
        let State::Deciding { call, .. } = &node.state else {
            return;
        };
        let cri = is_cri(&call.name);
        // Rule 1: incoming trace context, as the policy says.
        let remote_first = node.remote.is_some() && self.policy != RemoteParentPolicy::Link;
        if remote_first && self.policy == RemoteParentPolicy::Follow {
            self.settle(id, now, out);
            return;
        }
        // Rule 2: a CRI call of a pod being started (kubelet's own context, followed, wins).
        if cri && !remote_first {
            match self.pod_member(id, force) {
                Membership::Member(parent) => return self.set_parent(id, parent, Link::Pod, now, out),
                Membership::Wait => return,
                Membership::No => {}
            }
        }
        if self.nodes.get(&id).is_some_and(|n| n.opens_stream) {
            match self.stream_user(id) {
                Some(user) => {
                    self.counts.by_stream += 1;
                    return self.observed_parent(id, user, Link::Stream, now, out);
                }
                // The call naming it may not be decoded yet (it opens after the stream).
                None if !force => return,
                None => {}
            }
        }
        self.place_by_observation(id, now, force, out);
    }

    /// Rules 3-5: what the proxy saw on the other sockets, the calls served by this call's
    /// client process that contain it in time.
    fn place_by_observation(&mut self, id: SpanId, now: SystemTime, force: bool, out: &mut Vec<SpanRecord>) {
        let Some(node) = self.nodes.get(&id) else { return };
        let Some(client) = pid_of(&node.conn.client) else {
            return self.no_observed_parent(id, now, out);
        };
        let (start, end) = (node.start, node.end.unwrap_or(node.start));
        let mine = &node.entities;
        // Only calls served by this call's client process can be its parents: the index keeps
        // the lookup to those, whatever else runs on the node.
        let Some(served) = self.served.get(&client) else {
            return self.no_observed_parent(id, now, out);
        };
        let candidates: Vec<(SpanId, &Node)> = served
            .iter()
            .filter_map(|k| self.nodes.get(k).map(|a| (k, a)))
            .filter(|(k, a)| {
                **k != id
                    && pid_of(&a.conn.server) == Some(client)
                    && !Arc::ptr_eq(&a.conn, &node.conn)
                    && a.start <= start
                    && a.end.is_none_or(|e| end <= e)
            })
            .map(|(k, a)| (*k, a))
            .collect();
        // Rule 3: shared entity, the latest-started (ties broken by span id, for determinism).
        let by_entity = candidates
            .iter()
            .filter(|(_, a)| !a.entities.is_disjoint(mine))
            .max_by_key(|(k, a)| (a.start, *k));
        if let Some((parent, _)) = by_entity {
            let parent = *parent;
            self.counts.by_entity += 1;
            return self.observed_parent(id, parent, Link::Entity, now, out);
        }
        // Late facts: an open unary candidate may still learn the ids this call carries.
        if !force
            && !mine.is_empty()
            && candidates
                .iter()
                .any(|(_, a)| a.end.is_none() && a.shape == Shape::Unary && a.entities.is_empty())
        {
            return;
        }
        // Rule 4/5: time alone, never under a long-lived stream, and never under a request
        // about another entity of the same kind (a call for container A is not caused by a
        // request for container B that happens to be open).
        let conflicts = |a: &Node| {
            mine.iter()
                .any(|(kind, id)| a.entities.iter().any(|(k, other)| k == kind && other != id))
        };
        let temporal: Vec<SpanId> = candidates
            .iter()
            .filter(|(_, a)| a.shape == Shape::Unary && !conflicts(a))
            .map(|(k, _)| *k)
            .collect();
        match temporal.len() {
            0 => self.no_observed_parent(id, now, out),
            1 => {
                self.counts.temporal += 1;
                self.observed_parent(id, temporal[0], Link::Temporal, now, out);
            }
            _ => self.ambiguous(id, &temporal, now, out),
        }
    }

    /// Rule 5: several candidates by time alone: a root, linked to each.
    fn ambiguous(&mut self, id: SpanId, candidates: &[SpanId], now: SystemTime, out: &mut Vec<SpanRecord>) {
        self.counts.ambiguous += 1;
        let mut links: Vec<(SpanId, TraceId)> = candidates
            .iter()
            .map(|k| (*k, self.nodes.get(k).map(|c| c.trace_id).unwrap_or_default()))
            .collect();
        links.sort();
        if let Some(n) = self.nodes.get_mut(&id) {
            n.links = links;
        }
        self.settle(id, now, out);
    }

    /// The tracked call of the same client that names stream call `id`'s stream id.
    pub(super) fn stream_user(&self, id: SpanId) -> Option<SpanId> {
        let node = self.nodes.get(&id)?;
        node.entities
            .iter()
            .filter(|(k, _)| *k == EntityKind::Stream)
            .filter_map(|(_, stream)| self.stream_users.get(stream))
            .copied()
            .find(|user| {
                self.nodes
                    .get(user)
                    .is_some_and(|u| pid_of(&u.conn.client) == pid_of(&node.conn.client))
            })
    }

    /// Rules 3-4 found `parent`: under policy `observed` it wins over the client's context,
    /// which becomes a link (`trace::remote` says why, also when both are in one trace).
    pub(super) fn observed_parent(
        &mut self,
        id: SpanId,
        parent: SpanId,
        link: Link,
        now: SystemTime,
        out: &mut Vec<SpanRecord>,
    ) {
        let parent_trace = self.nodes.get(&parent).map(|p| p.trace_id);
        let policy = self.policy;
        if let Some(n) = self.nodes.get_mut(&id)
            && let Some(remote) = &n.remote
            && policy == RemoteParentPolicy::Observed
        {
            n.remote_outcome = Some(if parent_trace == Some(remote.trace_id) {
                RemoteOutcome::Confirmed
            } else {
                RemoteOutcome::Replaced
            });
            // The context's sampled flag belonged to a trace not followed.
            n.sampled = true;
        }
        self.set_parent(id, parent, link, now, out);
    }

    /// Rules 3-4 found no parent: a root, or the child of the client's context it carries.
    pub(super) fn no_observed_parent(&mut self, id: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
        if !self
            .nodes
            .get(&id)
            .is_some_and(|n| n.remote_outcome.is_some_and(RemoteOutcome::is_parent))
        {
            self.counts.roots += 1;
        }
        self.settle(id, now, out);
    }

    pub(super) fn set_parent(
        &mut self,
        id: SpanId,
        parent: SpanId,
        link: Link,
        now: SystemTime,
        out: &mut Vec<SpanRecord>,
    ) {
        if self.nodes.get(&id).is_some_and(|n| n.fixed) {
            return self.add_evidence(id, parent, link, now, out);
        }
        if link != Link::Pod
            && let Some(interval) = self.nodes.get(&id).map(|n| (n.start, n.end.unwrap_or(n.start)))
            && let Some(p) = self.nodes.get_mut(&parent)
        {
            p.below.get_or_insert_default().kids.push(interval);
        }
        if link == Link::Pod {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.parent = Some((parent, link));
                n.settled = true;
            }
            self.export_tree(id, now, out);
            return;
        }
        let (parent_settled, parent_trace, parent_sampled) = match self.nodes.get(&parent) {
            Some(p) => (p.settled, p.trace_id, p.sampled),
            None => (true, new_trace_id(), true),
        };
        let Some(n) = self.nodes.get_mut(&id) else { return };
        n.parent = Some((parent, link));
        n.trace_id = parent_trace;
        n.sampled &= parent_sampled;
        if parent_settled {
            n.settled = true;
            self.export_tree(id, now, out);
        } else {
            self.hold_on(id, parent, now);
        }
    }

    /// Hold finished call `id` until `target`'s trace is settled (exported with it), or until
    /// `MAX_EXPORT_DELAY` has passed.
    fn hold_on(&mut self, id: SpanId, target: SpanId, now: SystemTime) {
        let Some(n) = self.nodes.get_mut(&id) else { return };
        let call = match std::mem::replace(&mut n.state, State::Open) {
            State::Deciding { call, .. } | State::Held { call, .. } => call,
            other => {
                n.state = other;
                return;
            }
        };
        n.state = State::Held {
            call,
            deadline: now + MAX_EXPORT_DELAY,
        };
        self.held.insert(id);
        if let Some(t) = self.nodes.get_mut(&target) {
            t.waiting.push(id);
        }
    }

    /// A fixed call (propagation): the parent the rules found becomes a link. Its export
    /// waits, like a child's, until that span's trace is settled, so the link names it.
    pub(super) fn add_evidence(
        &mut self,
        id: SpanId,
        target: SpanId,
        link: Link,
        now: SystemTime,
        out: &mut Vec<SpanRecord>,
    ) {
        let target_settled = link == Link::Pod || self.nodes.get(&target).is_none_or(|t| t.settled);
        let Some(n) = self.nodes.get_mut(&id) else { return };
        n.evidence.push((target, link));
        if target_settled {
            return self.export_tree(id, now, out);
        }
        self.hold_on(id, target, now);
    }

    /// The trace a link to `target` names: its node's, or its pod root's.
    pub(super) fn trace_of(&self, target: SpanId) -> Option<TraceId> {
        self.nodes
            .get(&target)
            .map(|n| n.trace_id)
            .or_else(|| self.pods.iter().find(|p| p.root == target).map(|p| p.trace_id))
    }

    /// A root (or remote-parented) call: its trace is its own.
    pub(super) fn settle(&mut self, id: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.settled = true;
        }
        self.export_tree(id, now, out);
    }
}
