//! Correlation across layers: decides each call's parent from what the proxy sees on every
//! socket, and holds a finished call back until its trace is known. Pure logic, no I/O and no
//! clock of its own: the tracer feeds it calls and the time, and exports what it returns.
//!
//! The rules (deterministic; README "Correlation across layers"), for a call B whose client
//! process is the server process of calls A on other sockets that contain B in time:
//! 1. B carries a W3C `traceparent`: what it counts for is a policy ([`RemoteParentPolicy`]).
//!    By default it is B's parent (`traceparent`) unless rules 3-4 find an observed parent:
//!    then that parent wins and the context becomes a span link.
//! 2. B is a CRI call of a pod being started: child of the synthesized `pod start` root
//!    (`pod`), unless kubelet's own trace context came with it (and is followed).
//!    B is a containerd 2.x Streaming/Stream: child of the call of the same client that named
//!    its stream id (a Transfer/Transfer) (`stream`), though the stream opened first.
//! 3. Some A share an entity id with B (container, sandbox, exec): the latest-started of them
//!    (`entity`) — the innermost request for that entity.
//! 4. Exactly one A that is not a long-lived stream and not about another entity of the
//!    same kind: that one (`temporal`).
//! 5. Several such A: no parent, links to each (`ambiguous`). None: a root.
//!
//! Late facts: an A that is still open may learn its entity ids from its response (a create).
//! B then waits (bounded by `LATE_FACT_WAIT`) for the open candidates before rule 3 is
//! applied. A child is exported once its parent's trace is settled, or after
//! `MAX_EXPORT_DELAY` with the parent's provisional trace; a span is never exported twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::schema::containerd::STREAMING_STREAM;
use crate::schema::{EntityKind, entity_ids};
use crate::trace::attr::{Attr, AttrValue, names};
use crate::trace::call::{Call, CallStart, ConnMeta, RemoteParent, Shape};
use crate::trace::remote::{RemoteCounts, RemoteOutcome, RemoteParentPolicy};
use crate::trace::sample::Sampler;
use crate::trace::span::{
    LinkRecord, ParentRef, SpanId, SpanIdMap, SpanIdSet, SpanKind, SpanRecord, SpanStatus, TraceId, new_span_id,
    new_trace_id,
};

/// How long a finished call waits for open candidates to learn their ids.
pub const LATE_FACT_WAIT: Duration = Duration::from_secs(2);
/// The longest a finished call is held back waiting for its parent's trace to be settled.
/// A tail-sampling collector's `decision_wait` must be longer than this.
pub const MAX_EXPORT_DELAY: Duration = Duration::from_secs(10);
/// How long a finished call stays a parent candidate, for children whose end is processed
/// a little later than its own (each connection has its own observer).
pub const RETAIN: Duration = Duration::from_secs(3);
/// Calls tracked at once (open, held, retained). Past it the oldest are exported or forgotten.
/// 7/8 of 65,536: the most a hashbrown table of 65,536 buckets holds before it doubles, so
/// at high call rates (above ~19,000/s, where 3 s of retained calls reach it) the table stays
/// at ~16 MiB instead of stepping to twice that.
pub const MAX_NODES: usize = 57_344;
/// A pod's start is over after this long without another of its calls.
pub const POD_QUIET_PERIOD: Duration = Duration::from_secs(5);

/// How an edge was made, as `runtime_tap.link` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Traceparent,
    Pod,
    Entity,
    Temporal,
    Ambiguous,
    Stream,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Traceparent => "traceparent",
            Link::Pod => "pod",
            Link::Entity => "entity",
            Link::Temporal => "temporal",
            Link::Ambiguous => "ambiguous",
            Link::Stream => "stream",
        }
    }
}

/// What the correlator counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CorrelateCounts {
    pub by_entity: u64,
    /// Streaming/Stream calls placed under the call that named their stream.
    pub by_stream: u64,
    pub temporal: u64,
    /// Calls placed under an open call that turned out to end first, and decided again (also
    /// counted under the link of their first decision).
    pub outlived: u64,
    pub ambiguous: u64,
    pub roots: u64,
    /// Exported before the parent's trace was settled (`MAX_EXPORT_DELAY`).
    pub late: u64,
    /// Forgotten or forced out by `MAX_NODES`.
    pub evicted: u64,
    /// Calls dropped because an incoming trace context said not sampled.
    pub not_sampled: u64,
    /// Calls dropped by the sampling rules.
    pub sampled_out: u64,
    /// `pod start` root spans synthesized (spans that are no call).
    pub pod_roots: u64,
    /// Calls that carried a client's trace context, by what became of it.
    pub remote: RemoteCounts,
}

enum State {
    Open,
    /// Ended; waiting for late facts of open candidates until the deadline.
    Deciding {
        call: Box<Call>,
        deadline: SystemTime,
    },
    /// Ended, parent decided, waiting for the parent's trace to settle.
    Held {
        call: Box<Call>,
        deadline: SystemTime,
    },
    /// Exported; kept as a candidate until `retain_until`.
    Done {
        retain_until: SystemTime,
    },
}

struct Node {
    conn: Arc<ConnMeta>,
    start: SystemTime,
    end: Option<SystemTime>,
    shape: Shape,
    entities: HashSet<(EntityKind, String)>,
    /// A Streaming/Stream call: its parent is the call that names its stream id.
    opens_stream: bool,
    /// Attributes its streams learned for it (the image an import saved), added to its span
    /// where its own call has none of that key. Empty for nearly every call.
    inherited: Vec<Attr>,
    /// Provisional until settled; fixed once settled.
    trace_id: TraceId,
    settled: bool,
    parent: Option<(SpanId, Link)>,
    /// Boxed: few calls carry one, and every tracked call pays for the field.
    remote: Option<Box<RemoteParent>>,
    /// What `remote` became, once decided (a parent, or a link).
    remote_outcome: Option<RemoteOutcome>,
    /// False when an incoming trace context said not sampled (inherited by children).
    sampled: bool,
    links: Vec<(SpanId, TraceId)>,
    /// Propagation named this span in the forwarded request: its trace was fixed at start,
    /// so what the rules find later becomes links, never a parent.
    fixed: bool,
    /// For a fixed call: the parent the rules would have given it, as a link.
    evidence: Vec<(SpanId, Link)>,
    waiting: Vec<SpanId>,
    /// Intervals of its children and the self time of its exported descendants, gathered as
    /// they are decided and exported (children often settle after their parent has ended,
    /// and a fixed parent's children are exported before it). Boxed: most calls have none.
    below: Option<Box<Below>>,
    state: State,
}

/// What a span's subtree contributes to the self time of its trace's layers.
#[derive(Default)]
struct Below {
    /// Children's `(start, end)`.
    kids: Vec<(SystemTime, SystemTime)>,
    /// Self time of exported descendants, per service, in nanoseconds: exact, so that where
    /// calls do not overlap the layers add up to the root (converted once, on the root).
    self_ns: Vec<(Arc<str>, u64)>,
}

impl Below {
    fn add(&mut self, service: &Arc<str>, ns: u64) {
        match self.self_ns.iter_mut().find(|(s, _)| s == service) {
            Some((_, v)) => *v += ns,
            None => self.self_ns.push((Arc::clone(service), ns)),
        }
    }

    fn merge(&mut self, other: &[(Arc<str>, u64)]) {
        for (service, ms) in other {
            self.add(service, *ms);
        }
    }
}

struct PodGroup {
    root: SpanId,
    trace_id: TraceId,
    name: String,
    namespace: String,
    uid: String,
    sandbox: String,
    service: Arc<str>,
    conn: Arc<ConnMeta>,
    start: SystemTime,
    end: SystemTime,
    last_activity: SystemTime,
    containers: HashSet<String>,
    /// The images its PullImage and CreateContainer calls named, with their start: an
    /// ImageStatus just before one of them was the same pod's image check.
    images: Vec<(SystemTime, Vec<String>)>,
    /// Members' `(start, end)`, and the self time of every exported call of the pod's trace.
    below: Below,
}

/// Whether a CRI call belongs to a pod being started.
enum Membership {
    Member(SpanId),
    /// It may, once a later call names its image (ImageStatus).
    Wait,
    No,
}

/// The names an image is known by on a call: `name:tag` for each tag (the name alone when it
/// has none) and its id. kubelet checks an image by name and may create the container by id.
fn image_keys(attrs: &[Attr]) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(name) = str_attr(attrs, "container.image.name") {
        match attrs.iter().find(|a| a.key == "container.image.tags").map(|a| &a.value) {
            Some(AttrValue::StrList(tags)) if !tags.is_empty() => {
                keys.extend(tags.iter().map(|t| format!("{name}:{t}")));
            }
            _ => keys.push(name.to_string()),
        }
    }
    if let Some(id) = str_attr(attrs, "container.image.id") {
        keys.push(id.to_string());
    }
    keys
}

/// Traces remembered as sampled out, for their calls that settle later.
pub const MAX_DROPPED_TRACES: usize = 4096;

/// The correlator of one process: every intercept's calls.
pub struct Correlator {
    nodes: SpanIdMap<Node>,
    order: VecDeque<SpanId>,
    pods: Vec<PodGroup>,
    sampler: Sampler,
    /// Tracked calls by the pid of the process serving them: a call's parent candidates.
    served: HashMap<u32, SpanIdSet>,
    /// Stream ids named by tracked calls that are not streams themselves (a Transfer's source
    /// and progress streams), for the Streaming/Stream calls that carry them.
    stream_users: HashMap<String, SpanId>,
    /// Ended calls still waiting for late facts (may name calls that moved on since).
    deciding: SpanIdSet,
    /// Calls in `State::Held`. With these two sets a tick visits only what waits, not every
    /// call tracked (tens of thousands at high call rates, most of them retained as done).
    held: SpanIdSet,
    dropped_traces: HashSet<TraceId>,
    dropped_order: VecDeque<TraceId>,
    policy: RemoteParentPolicy,
    pub counts: CorrelateCounts,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::with_sampler(Sampler::keep_all())
    }
}

fn pid_of(p: &Option<crate::conn::Process>) -> Option<u32> {
    p.as_ref().map(|p| p.pid)
}

fn str_attr<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a str> {
    attrs.iter().find(|a| a.key == key).and_then(|a| match &a.value {
        AttrValue::Str(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

fn is_cri(name: &str) -> bool {
    name.starts_with("runtime.v1.") || name.starts_with("runtime.v1alpha2.")
}

fn cri_method(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or("")
}

impl Correlator {
    pub fn new() -> Correlator {
        Correlator::default()
    }

    /// A correlator whose finished traces pass `sampler`.
    pub fn with_sampler(sampler: Sampler) -> Correlator {
        Correlator {
            nodes: SpanIdMap::default(),
            order: VecDeque::new(),
            pods: Vec::new(),
            sampler,
            served: HashMap::new(),
            stream_users: HashMap::new(),
            deciding: SpanIdSet::default(),
            held: SpanIdSet::default(),
            dropped_traces: HashSet::new(),
            dropped_order: VecDeque::new(),
            policy: RemoteParentPolicy::default(),
            counts: CorrelateCounts::default(),
        }
    }

    /// The same correlator, using clients' trace contexts as `policy` says.
    pub fn with_remote_policy(mut self, policy: RemoteParentPolicy) -> Correlator {
        self.policy = policy;
        self
    }

    /// Calls tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.nodes.len()
    }

    /// A call started: it becomes a parent candidate at once.
    pub fn started(&mut self, s: &CallStart, out: &mut Vec<SpanRecord>) {
        if self.nodes.len() >= MAX_NODES {
            self.evict_oldest(out);
        }
        let (provisional_trace, sampled, remote_outcome) = provisional(s.remote_parent.as_ref(), self.policy);
        let trace_id = s.own_trace.unwrap_or(provisional_trace);
        self.nodes.insert(
            s.span_id,
            Node {
                conn: Arc::clone(&s.conn),
                start: s.start,
                end: None,
                shape: s.shape,
                entities: HashSet::new(),
                opens_stream: s.name == STREAMING_STREAM,
                inherited: Vec::new(),
                trace_id,
                // A propagated call's trace left with its request: settled from the start.
                settled: s.own_trace.is_some(),
                parent: None,
                remote: s.remote_parent.clone().map(Box::new),
                remote_outcome,
                sampled,
                links: Vec::new(),
                fixed: s.own_trace.is_some(),
                evidence: Vec::new(),
                waiting: Vec::new(),
                below: None,
                state: State::Open,
            },
        );
        self.add_entities(s.span_id, &s.attributes);
        self.order.push_back(s.span_id);
        if let Some(server) = pid_of(&s.conn.server) {
            self.served.entry(server).or_default().insert(s.span_id);
        }
    }

    /// Forget a node for good.
    fn remove(&mut self, id: SpanId) {
        let Some(n) = self.nodes.remove(&id) else {
            self.deciding.remove(&id);
            self.held.remove(&id);
            return;
        };
        if let Some(server) = pid_of(&n.conn.server)
            && let Some(set) = self.served.get_mut(&server)
        {
            set.remove(&id);
            if set.is_empty() {
                self.served.remove(&server);
            }
        }
        if !n.opens_stream {
            for (_, stream) in n.entities.iter().filter(|(k, _)| *k == EntityKind::Stream) {
                if self.stream_users.get(stream) == Some(&id) {
                    self.stream_users.remove(stream);
                }
            }
        }
        self.deciding.remove(&id);
        self.held.remove(&id);
    }

    /// An open call learned entity ids (from its request payload, say).
    pub fn learned(&mut self, span: SpanId, attrs: &[Attr]) {
        self.add_entities(span, attrs);
        // The image a stream's progress names belongs to the call that uses the stream.
        let image: Vec<&Attr> = attrs.iter().filter(|a| a.key.starts_with("container.image.")).collect();
        if !image.is_empty()
            && self.nodes.get(&span).is_some_and(|n| n.opens_stream)
            && let Some(user) = self.stream_user(span)
            && let Some(u) = self.nodes.get_mut(&user)
            && !matches!(u.state, State::Done { .. })
        {
            for a in image {
                if !u.inherited.iter().any(|b| b.key == a.key) {
                    u.inherited.push(a.clone());
                }
            }
        }
    }

    /// Entity ids of a call, indexed as stream users where the call names streams.
    fn add_entities(&mut self, span: SpanId, attrs: &[Attr]) {
        let Some(n) = self.nodes.get_mut(&span) else { return };
        for (kind, id) in entity_ids(attrs) {
            if kind == EntityKind::Stream && !n.opens_stream {
                self.stream_users.insert(id.to_string(), span);
            }
            n.entities.insert((kind, id.to_string()));
        }
    }

    /// A call ended at `now`; spans ready for export are appended to `out`.
    pub fn ended(&mut self, call: Call, now: SystemTime, out: &mut Vec<SpanRecord>) {
        let id = call.span_id;
        if !self.nodes.contains_key(&id) {
            // Started before we tracked it (evicted): export it on its own.
            self.started(
                &CallStart {
                    span_id: id,
                    conn: Arc::clone(&call.conn),
                    name: call.name.clone(),
                    start: call.start,
                    shape: call.shape,
                    remote_parent: call.remote_parent.clone(),
                    own_trace: call.own_trace,
                    attributes: Vec::new(),
                },
                out,
            );
        }
        self.add_entities(id, &call.attributes);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        node.end = Some(call.end.max(call.start));
        node.state = State::Deciding {
            call: Box::new(call),
            deadline: now + LATE_FACT_WAIT,
        };
        self.deciding.insert(id);
        self.release_outlived(id, now);
        // This call ending may be the late fact others were waiting for (a create's response
        // names the container its children were about). They are decided first, so that
        // they join this call's tree before it is exported and count in its self time.
        self.retry_deciding(id, now, out);
        self.try_decide(id, now, false, out);
        // A pod member names the image an earlier ImageStatus of its pod checked.
        if !self.pods.is_empty() {
            self.retry_deciding(id, now, out);
        }
    }

    /// Children placed under `id` by time while it was open (entity or temporal) that ended
    /// after it: the containment those rules assume did not hold, only the order in which the
    /// two ends reached the correlator (each connection has its own observer). dockerd's exit
    /// handler, for one, calls Tasks/Get while the start of a container that exits at once is
    /// still being answered. They go back to deciding, where `id` is no candidate any more.
    fn release_outlived(&mut self, id: SpanId, now: SystemTime) {
        let Some(parent) = self.nodes.get_mut(&id) else { return };
        let Some(end) = parent.end else { return };
        let waiting = std::mem::take(&mut parent.waiting);
        let nodes = &self.nodes;
        let (outlived, kept): (Vec<SpanId>, Vec<SpanId>) = waiting.into_iter().partition(|w| {
            nodes.get(w).is_some_and(|c| {
                !c.fixed
                    && matches!(c.parent, Some((p, Link::Entity | Link::Temporal)) if p == id)
                    && c.end.is_some_and(|e| e > end)
            })
        });
        for w in &outlived {
            let Some(child) = self.nodes.get_mut(w) else { continue };
            let interval = (child.start, child.end.unwrap_or(child.start));
            let link = child.parent.take().map(|(_, link)| link);
            let (trace_id, sampled, outcome) = provisional(child.remote.as_deref(), self.policy);
            child.trace_id = trace_id;
            child.sampled = sampled;
            child.remote_outcome = outcome;
            child.settled = false;
            if let State::Held { call, .. } = std::mem::replace(&mut child.state, State::Open) {
                child.state = State::Deciding {
                    call,
                    deadline: now + LATE_FACT_WAIT,
                };
            }
            self.held.remove(w);
            self.deciding.insert(*w);
            // Counters never go back: the first decision stays counted under its link.
            self.counts.outlived += u64::from(link.is_some());
            if let Some(kids) = self
                .nodes
                .get_mut(&id)
                .and_then(|p| p.below.as_mut())
                .map(|b| &mut b.kids)
                && let Some(i) = kids.iter().position(|k| *k == interval)
            {
                kids.swap_remove(i);
            }
        }
        if let Some(parent) = self.nodes.get_mut(&id) {
            parent.waiting = kept;
        }
    }

    /// Apply the rules again to the calls waiting for late facts, but `except`.
    fn retry_deciding(&mut self, except: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
        let nodes = &self.nodes;
        self.deciding
            .retain(|k| nodes.get(k).is_some_and(|n| matches!(n.state, State::Deciding { .. })));
        let deciding: Vec<SpanId> = self.deciding.iter().filter(|k| **k != except).copied().collect();
        for d in deciding {
            self.try_decide(d, now, false, out);
        }
    }

    /// The passage of time: deadlines, pod roots after their quiet period, retention.
    pub fn tick(&mut self, now: SystemTime, out: &mut Vec<SpanRecord>) {
        let nodes = &self.nodes;
        let due: Vec<SpanId> = self
            .deciding
            .iter()
            .filter(|&k| matches!(nodes.get(k).map(|n| &n.state), Some(State::Deciding { deadline, .. }) if *deadline <= now))
            .copied()
            .collect();
        for id in due {
            self.try_decide(id, now, true, out);
        }
        let nodes = &self.nodes;
        let late: Vec<SpanId> = self
            .held
            .iter()
            .filter(
                |&k| matches!(nodes.get(k).map(|n| &n.state), Some(State::Held { deadline, .. }) if *deadline <= now),
            )
            .copied()
            .collect();
        for id in late {
            self.counts.late += 1;
            self.export_tree(id, now, out);
        }
        let quiet: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].last_activity + POD_QUIET_PERIOD <= now)
            .collect();
        for i in quiet.into_iter().rev() {
            let pod = self.pods.remove(i);
            self.counts.pod_roots += 1;
            out.push(pod_root(pod));
        }
        // Retention, oldest first. A call still open, deciding or held goes to the back: an
        // event subscription open since the daemon started must not keep every call after it
        // from being forgotten (nor be the first evicted when the table is full).
        let mut passed = 0;
        let len = self.order.len();
        while let Some(front) = self.order.front().copied() {
            match self.nodes.get(&front).map(|n| &n.state) {
                None => {
                    self.order.pop_front();
                }
                Some(State::Done { retain_until }) if *retain_until <= now => {
                    self.remove(front);
                    self.order.pop_front();
                }
                Some(State::Done { .. }) => break,
                Some(_) if passed < len => {
                    passed += 1;
                    self.order.pop_front();
                    self.order.push_back(front);
                }
                Some(_) => break,
            }
        }
    }

    /// Shutdown: everything held is exported now, with what is known.
    pub fn flush(&mut self, now: SystemTime, out: &mut Vec<SpanRecord>) {
        let pending: Vec<SpanId> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.state, State::Deciding { .. } | State::Held { .. }))
            .map(|(k, _)| *k)
            .collect();
        for id in &pending {
            self.try_decide(*id, now, true, out);
        }
        let held: Vec<SpanId> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.state, State::Held { .. }))
            .map(|(k, _)| *k)
            .collect();
        for id in held {
            self.export_tree(id, now, out);
        }
        self.counts.pod_roots += self.pods.len() as u64;
        for pod in self.pods.drain(..) {
            out.push(pod_root(pod));
        }
    }

    /// The trace id and span id an event of an event stream links to.
    pub fn link_target(&self, span: SpanId) -> Option<TraceId> {
        self.nodes.get(&span).map(|n| n.trace_id)
    }

    fn evict_oldest(&mut self, out: &mut Vec<SpanRecord>) {
        while let Some(id) = self.order.pop_front() {
            let Some(n) = self.nodes.get(&id) else { continue };
            self.counts.evicted += 1;
            if matches!(n.state, State::Deciding { .. } | State::Held { .. }) {
                let now = n.end.unwrap_or(n.start);
                self.export_tree(id, now, out);
            }
            self.remove(id);
            return;
        }
    }

    /// Apply the rules to a `Deciding` call; `force` decides with what is known.
    fn try_decide(&mut self, id: SpanId, now: SystemTime, force: bool, out: &mut Vec<SpanRecord>) {
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
            _ => {
                self.counts.ambiguous += 1;
                let mut links: Vec<(SpanId, TraceId)> = temporal
                    .iter()
                    .map(|k| (*k, self.nodes.get(k).map(|c| c.trace_id).unwrap_or_default()))
                    .collect();
                links.sort();
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.links = links;
                }
                self.settle(id, now, out);
            }
        }
    }

    /// The tracked call of the same client that names stream call `id`'s stream id.
    fn stream_user(&self, id: SpanId) -> Option<SpanId> {
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
    fn observed_parent(&mut self, id: SpanId, parent: SpanId, link: Link, now: SystemTime, out: &mut Vec<SpanRecord>) {
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
    fn no_observed_parent(&mut self, id: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
        if !self
            .nodes
            .get(&id)
            .is_some_and(|n| n.remote_outcome.is_some_and(RemoteOutcome::is_parent))
        {
            self.counts.roots += 1;
        }
        self.settle(id, now, out);
    }

    /// The pod root a CRI call belongs to, creating the group at RunPodSandbox. `force`: decide
    /// with what is known (an ImageStatus no later call claimed is no member).
    fn pod_member(&mut self, id: SpanId, force: bool) -> Membership {
        let Some(node) = self.nodes.get(&id) else {
            return Membership::No;
        };
        let State::Deciding { call, .. } = &node.state else {
            return Membership::No;
        };
        let attrs = &call.attributes;
        let method = cri_method(&call.name);
        let (start, end) = (call.start, call.end.max(call.start));
        let group = match method {
            "RunPodSandbox" => {
                let Some(sandbox) = str_attr(attrs, names::CRI_POD_SANDBOX_ID) else {
                    return Membership::No;
                };
                let attr = |k: &str| str_attr(attrs, k).unwrap_or("").to_string();
                self.pods.push(PodGroup {
                    root: new_span_id(),
                    trace_id: new_trace_id(),
                    name: attr("k8s.pod.name"),
                    namespace: attr("k8s.namespace.name"),
                    uid: attr("k8s.pod.uid"),
                    sandbox: sandbox.to_string(),
                    service: Arc::clone(&node.conn.service),
                    conn: Arc::clone(&node.conn),
                    start,
                    end,
                    last_activity: end,
                    containers: HashSet::new(),
                    images: Vec::new(),
                    below: Below::default(),
                });
                Some(self.pods.len() - 1)
            }
            "PullImage" => str_attr(attrs, "k8s.pod.uid")
                .and_then(|uid| self.pods.iter().position(|p| !p.uid.is_empty() && p.uid == uid)),
            "CreateContainer" => {
                let sandbox = str_attr(attrs, names::CRI_POD_SANDBOX_ID);
                let i = sandbox.and_then(|s| self.pods.iter().position(|p| p.sandbox == s));
                if let (Some(i), Some(c)) = (i, str_attr(attrs, "container.id")) {
                    self.pods[i].containers.insert(c.to_string());
                }
                i
            }
            "StartContainer" => {
                str_attr(attrs, "container.id").and_then(|c| self.pods.iter().position(|p| p.containers.contains(c)))
            }
            "ImageStatus" => match self.image_check_of(&node.conn, start, end, &image_keys(attrs)) {
                Some(i) => Some(i),
                None if force => None,
                // A pod of this client is starting: its next call may name this image.
                None if self
                    .pods
                    .iter()
                    .any(|p| pid_of(&p.conn.client) == pid_of(&node.conn.client) && p.start <= start) =>
                {
                    return Membership::Wait;
                }
                None => None,
            },
            _ => None,
        };
        let Some(group) = group else {
            return Membership::No;
        };
        if matches!(method, "PullImage" | "CreateContainer") {
            let keys = image_keys(attrs);
            if !keys.is_empty() {
                self.pods[group].images.push((start, keys));
            }
        }
        let pod = &mut self.pods[group];
        pod.end = pod.end.max(end);
        pod.last_activity = pod.last_activity.max(end);
        pod.below.kids.push((start, end));
        let root = pod.root;
        let trace_id = pod.trace_id;
        // The root is synthesized and exported later; its trace is fixed now, so the member is
        // settled at once.
        if let Some(n) = self.nodes.get_mut(&id)
            && !n.fixed
        {
            n.trace_id = trace_id;
        }
        Membership::Member(root)
    }

    /// The pod an ImageStatus call checked the image for: the one whose next PullImage or
    /// CreateContainer from the same client names that image, starting after the check ended
    /// and within `LATE_FACT_WAIT` of it (the earliest such call wins; kubelet checks, pulls
    /// if needed, then creates).
    fn image_check_of(&self, conn: &ConnMeta, start: SystemTime, end: SystemTime, keys: &[String]) -> Option<usize> {
        if keys.is_empty() {
            return None;
        }
        let client = pid_of(&conn.client)?;
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| pid_of(&p.conn.client) == Some(client) && p.start <= start)
            .flat_map(|(i, p)| p.images.iter().map(move |(at, k)| (i, *at, k)))
            .filter(|(_, at, k)| *at >= end && *at <= end + LATE_FACT_WAIT && k.iter().any(|key| keys.contains(key)))
            .min_by_key(|(i, at, _)| (*at, *i))
            .map(|(i, _, _)| i)
    }

    fn set_parent(&mut self, id: SpanId, parent: SpanId, link: Link, now: SystemTime, out: &mut Vec<SpanRecord>) {
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
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.waiting.push(id);
            }
        }
    }

    /// A fixed call (propagation): the parent the rules found becomes a link. Its export
    /// waits, like a child's, until that span's trace is settled, so the link names it.
    fn add_evidence(&mut self, id: SpanId, target: SpanId, link: Link, now: SystemTime, out: &mut Vec<SpanRecord>) {
        let target_settled = link == Link::Pod || self.nodes.get(&target).is_none_or(|t| t.settled);
        let Some(n) = self.nodes.get_mut(&id) else { return };
        n.evidence.push((target, link));
        if target_settled {
            return self.export_tree(id, now, out);
        }
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

    /// The trace a link to `target` names: its node's, or its pod root's.
    fn trace_of(&self, target: SpanId) -> Option<TraceId> {
        self.nodes
            .get(&target)
            .map(|n| n.trace_id)
            .or_else(|| self.pods.iter().find(|p| p.root == target).map(|p| p.trace_id))
    }

    /// A root (or remote-parented) call: its trace is its own.
    fn settle(&mut self, id: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.settled = true;
        }
        self.export_tree(id, now, out);
    }

    /// Export `id` and every call held waiting on it, transitively, with its trace id. On a
    /// root, the self time of each layer over that tree is added.
    fn export_tree(&mut self, id: SpanId, now: SystemTime, out: &mut Vec<SpanRecord>) {
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
        for (k, cur) in tree.into_iter().enumerate() {
            let evidence: Vec<LinkRecord> = self
                .nodes
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
                .collect();
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
            let mut span = span_of(*call, n);
            span.links.extend(evidence);
            if k == 0 && n.parent.is_none() {
                // Sampling is decided at the trace's root; a span under a remote parent is
                // the top of runtime-tap's part of the trace, so it gets the self times too.
                is_root = !n.remote_outcome.is_some_and(RemoteOutcome::is_parent);
                // The root's own layer first, then the others as their spans were placed.
                let mut self_times = std::mem::take(&mut self_times);
                if let Some(i) = self_times.iter().position(|(s, _)| *s == n.conn.service) {
                    self_times[..=i].rotate_right(1);
                }
                push_self_times(&mut span.attributes, &self_times);
            }
            spans.push(span);
        }
        // Sampling is decided on a whole trace, at its root; calls of a dropped trace that
        // settle later follow the root's decision.
        let Some(first) = spans.first() else { return };
        let keep = if is_root {
            self.sampler.keep(&spans, now)
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

    /// Self time per service (durations minus the union of children's intervals) of the calls
    /// of `tree` being exported, children before parents, each added to its parent's (or pod
    /// root's) tally: what children exported earlier left there is in it. Returns the tally of
    /// `tree`'s top.
    fn gather_self_times(&mut self, tree: &[SpanId]) -> Vec<(Arc<str>, u64)> {
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

/// What a call is before its parent is decided: in the context's trace unless the policy never
/// follows it, sampled as the context says, and with the context's outcome provisional (the
/// decision may make it `Confirmed` or `Replaced`).
fn provisional(remote: Option<&RemoteParent>, policy: RemoteParentPolicy) -> (TraceId, bool, Option<RemoteOutcome>) {
    let followed = remote.filter(|_| policy != RemoteParentPolicy::Link);
    let outcome = remote.map(|_| match policy {
        RemoteParentPolicy::Link => RemoteOutcome::Linked,
        _ => RemoteOutcome::Followed,
    });
    (
        followed.map_or_else(new_trace_id, |r| r.trace_id),
        followed.is_none_or(|r| r.sampled),
        outcome,
    )
}

/// `runtime_tap.self_time_ms.<service>` for each layer of a trace, on its root.
fn push_self_times(attributes: &mut Vec<Attr>, self_times: &[(Arc<str>, u64)]) {
    for (service, ns) in self_times {
        attributes.push(Attr::double(format!("runtime_tap.self_time_ms.{service}"), ms(*ns)));
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds as milliseconds to the microsecond (the span contract's precision), converted
/// once from the exact sum: rounding each span's share instead lost up to a millisecond a span.
fn ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

fn span_of(call: Call, node: &Node) -> SpanRecord {
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

fn pod_root(pod: PodGroup) -> SpanRecord {
    let mut attributes = vec![
        Attr::str("k8s.pod.name", pod.name.clone()),
        Attr::str("k8s.namespace.name", pod.namespace.clone()),
        Attr::str("k8s.pod.uid", pod.uid.clone()),
        Attr::str(names::CRI_POD_SANDBOX_ID, pod.sandbox.clone()),
    ];
    // Each layer's self time over the pod's calls, and kubelet's: the time none of them was
    // in flight (the pod start span itself is no call to anything).
    let covered = crate::trace::tree::covered(pod.start, pod.end, pod.below.kids.iter().copied());
    let total = pod.end.duration_since(pod.start).unwrap_or_default();
    push_self_times(&mut attributes, &pod.below.self_ns);
    attributes.push(Attr::double(
        "runtime_tap.self_time_ms.kubelet",
        ms(nanos(total.saturating_sub(covered))),
    ));
    crate::trace::tracer::conn_attributes(&pod.conn, &mut attributes);
    SpanRecord {
        trace_id: pod.trace_id,
        span_id: pod.root,
        parent: None,
        trace_state: None,
        name: "pod start".to_string(),
        kind: SpanKind::Internal,
        start: pod.start,
        end: pod.end,
        attributes,
        events: Vec::new(),
        links: Vec::new(),
        status: SpanStatus::Unset,
        service: pod.service,
    }
}

#[cfg(test)]
#[path = "correlate_tests.rs"]
mod tests;
