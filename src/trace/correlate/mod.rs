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
//!
//! Who can be a parent (rules 3-4): only a call whose server process is also a client on
//! some intercept. The rest (containerd's calls, on nodes where containerd calls no
//! intercepted socket) never enter the candidate index `served`; they keep their node for
//! their own placement. Which processes are clients is learned from every call's connection
//! as it starts (`learn`; its peer creds were read when the connection was accepted), and a
//! process can become a client after calls it serves started: dockerd's first call on the
//! containerd socket may come while the `docker start` that caused it is open. So when a pid
//! is first seen as a client, the calls it serves that are still tracked (open, deciding,
//! held or retained) are indexed then, before that first client call can be decided: a child
//! always starts after its parent, and its own start taught the correlator its client pid.
//! Pod starts and Transfer streams have their own indexes and need none of this.
//!
//! Sampling early (`begin`): a call that a rule thins (kubelet's polls) and that can be
//! neither a parent (above) nor a child (its client serves no intercept: rules 3-4 have no
//! candidate for it, and it is no pod member or stream) is the root of its own trace, so the
//! rules can decide it at its start. Sampled out, it gets no node: only a small record in
//! `thin_open` until it ends, so that it is promoted to a node if its process turns out to
//! be a client (it may parent after all) or its client a server (it may be a child) while it
//! is open. At its end the tracer keeps it whole if it failed or was slow; otherwise it is
//! one counted `sampled_out` drop.
//!
//! This module keeps the calls' lifecycle (started, ended, ticks, retention); `place` applies
//! the rules, `pod` synthesizes pod roots, `self_time` sums each layer's own time, and
//! `export` turns a settled tree into spans and samples it as one trace.

use std::collections::{HashMap, HashSet, VecDeque};

use rustc_hash::FxHashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::schema::containerd::STREAMING_STREAM;
use crate::schema::containerd::TRANSFER;
use crate::schema::{EntityKind, entity_ids};
use crate::trace::attr::{Attr, AttrValue, names};
use crate::trace::call::{Begun, Call, CallStart, ChildSpan, ConnMeta, RemoteParent, Shape};
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
/// Processes remembered as clients and as servers of intercepts; past it every process may
/// be either (correlation as if nothing were known, sampling decided at the end).
pub const MAX_KNOWN_PIDS: usize = 65_536;
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
    /// Spans synthesized under an exported call (per-layer spans of image pulls), counted
    /// when made: with calls, event and pod spans they are what is submitted or dropped.
    pub child_spans: u64,
    /// CLIENT spans made above calls from clients behind no other intercept
    /// (`client_spans`), counted when made, like `child_spans`.
    pub client_spans: u64,
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
    /// The sampling rules kept it at its start (`begin`): not asked again at its export.
    presampled: bool,
    /// Intervals of its children and the self time of its exported descendants, gathered as
    /// they are decided and exported (children often settle after their parent has ended,
    /// and a fixed parent's children are exported before it). Boxed: most calls have none.
    below: Option<Box<Below>>,
    state: State,
}

/// A call sampled out at its start, while it is open: what makes it a node if it must be.
struct ThinOpen {
    conn: Arc<ConnMeta>,
    start: SystemTime,
}

/// The CRI methods a pod start may claim (`pod::pod_member`): never decided at their start.
const POD_MEMBERS: &[&str] = &[
    "RunPodSandbox",
    "PullImage",
    "CreateContainer",
    "StartContainer",
    "ImageStatus",
];

/// Traces remembered as sampled out, for their calls that settle later.
pub const MAX_DROPPED_TRACES: usize = 4096;

/// The correlator of one process: every intercept's calls.
pub struct Correlator {
    nodes: SpanIdMap<Node>,
    order: VecDeque<SpanId>,
    pods: Vec<PodGroup>,
    sampler: Sampler,
    /// Tracked calls by the pid of the process serving them: a call's parent candidates.
    /// Only calls that can be parents (module doc) are indexed.
    served: HashMap<u32, SpanIdSet>,
    /// Pids seen as the client of an intercepted connection: their calls' servers.
    clients: FxHashSet<u32>,
    /// Pids seen as the server of an intercepted connection.
    servers: FxHashSet<u32>,
    /// Calls sampled out at their start and still open (module doc).
    thin_open: SpanIdMap<ThinOpen>,
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
    /// Make CLIENT spans (see `client`).
    client_spans: bool,
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
            clients: FxHashSet::default(),
            servers: FxHashSet::default(),
            thin_open: SpanIdMap::default(),
            stream_users: HashMap::new(),
            deciding: SpanIdSet::default(),
            held: SpanIdSet::default(),
            dropped_traces: HashSet::new(),
            dropped_order: VecDeque::new(),
            policy: RemoteParentPolicy::default(),
            client_spans: false,
            counts: CorrelateCounts::default(),
        }
    }

    /// The same correlator, using clients' trace contexts as `policy` says.
    pub fn with_remote_policy(mut self, policy: RemoteParentPolicy) -> Correlator {
        self.policy = policy;
        self
    }

    /// The same correlator, making a CLIENT span above each call from a client behind no
    /// other intercept when `on` (config `[correlation] client_spans`).
    pub fn with_client_spans(mut self, on: bool) -> Correlator {
        self.client_spans = on;
        self
    }

    /// Calls tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.nodes.len()
    }

    /// Ended calls not exported yet: deciding their parent, or held for its trace. Zero once
    /// everything that ended has been exported (or sampled out): what a test waits for
    /// instead of a sleep as long as the longest hold.
    pub fn pending(&self) -> usize {
        // `deciding` may still name calls decided since (it is pruned lazily).
        let deciding = self
            .deciding
            .iter()
            .filter(|&k| matches!(self.nodes.get(k).map(|n| &n.state), Some(State::Deciding { .. })))
            .count();
        deciding + self.held.len()
    }

    /// A call started, sampled at once where it can be (module doc): `Begun::SampledOut`
    /// leaves it untracked until `thin_ended`.
    pub fn begin(&mut self, s: &CallStart, out: &mut Vec<SpanRecord>) -> Begun {
        self.learn(&s.conn, out);
        if self.thinnable(s) {
            match self.sampler.early(&s.name, s.start) {
                Some(false) => {
                    self.thin_open.insert(
                        s.span_id,
                        ThinOpen {
                            conn: Arc::clone(&s.conn),
                            start: s.start,
                        },
                    );
                    return Begun::SampledOut;
                }
                Some(true) => {
                    self.started(s, out);
                    if let Some(n) = self.nodes.get_mut(&s.span_id) {
                        n.presampled = true;
                    }
                    return Begun::Tracked;
                }
                None => {}
            }
        }
        self.started(s, out);
        Begun::Tracked
    }

    /// A call sampled out at its start ended: false when it is still only that (the caller
    /// counts the drop, or keeps it for its outcome); true when it was promoted since, or is
    /// unknown: the caller builds it whole and hands it to `ended`.
    pub fn thin_ended(&mut self, span: SpanId) -> bool {
        self.thin_open.remove(&span).is_none()
    }

    /// Calls sampled out at their start and not ended yet (for tests).
    pub fn thin_open(&self) -> usize {
        self.thin_open.len()
    }

    /// Whether `s` is the root of its own trace whatever else happens, with nothing that
    /// needs its node: the sampling rules may decide it at its start (module doc).
    fn thinnable(&self, s: &CallStart) -> bool {
        self.sampler.has_rules()
            && s.shape == Shape::Unary
            && s.own_trace.is_none()
            && (s.remote_parent.is_none() || self.policy == RemoteParentPolicy::Link)
            && !s.conn.capture_payloads
            && s.name != STREAMING_STREAM
            && s.name != TRANSFER
            && !(is_cri(&s.name) && POD_MEMBERS.contains(&cri_method(&s.name)))
            && !self.may_parent(&s.conn)
            && pid_of(&s.conn.client).is_none_or(|c| !self.known_full() && !self.servers.contains(&c))
            && self.thin_open.len() < MAX_NODES
    }

    /// Whether calls of `conn` can parent calls on other intercepts (module doc).
    fn may_parent(&self, conn: &ConnMeta) -> bool {
        pid_of(&conn.server).is_some_and(|p| self.known_full() || self.clients.contains(&p))
    }

    /// Too many pids remembered: every process may be a client and a server.
    fn known_full(&self) -> bool {
        self.clients.len() >= MAX_KNOWN_PIDS || self.servers.len() >= MAX_KNOWN_PIDS
    }

    /// Learn the processes on `conn`'s ends. A pid first seen as a client makes the calls it
    /// serves parent candidates, and open sampled-out calls on either side of it tracked
    /// (module doc).
    fn learn(&mut self, conn: &ConnMeta, out: &mut Vec<SpanRecord>) {
        if let Some(c) = pid_of(&conn.client)
            && !self.clients.contains(&c)
            && !self.known_full()
        {
            self.clients.insert(c);
            for (id, n) in &self.nodes {
                if pid_of(&n.conn.server) == Some(c) {
                    self.served.entry(c).or_default().insert(*id);
                }
            }
            self.promote_thin(|t| pid_of(&t.conn.server) == Some(c), out);
        }
        if let Some(p) = pid_of(&conn.server)
            && !self.servers.contains(&p)
            && !self.known_full()
        {
            self.servers.insert(p);
            self.promote_thin(|t| pid_of(&t.conn.client) == Some(p), out);
        }
    }

    /// Track the open sampled-out calls `which` picks as calls started like any other.
    fn promote_thin(&mut self, which: impl Fn(&ThinOpen) -> bool, out: &mut Vec<SpanRecord>) {
        let picked: Vec<SpanId> = self
            .thin_open
            .iter()
            .filter(|(_, t)| which(t))
            .map(|(k, _)| *k)
            .collect();
        for id in picked {
            let Some(t) = self.thin_open.remove(&id) else { continue };
            self.started(
                &CallStart {
                    span_id: id,
                    conn: t.conn,
                    name: String::new(),
                    start: t.start,
                    shape: Shape::Unary,
                    remote_parent: None,
                    own_trace: None,
                    attributes: Vec::new(),
                },
                out,
            );
        }
    }

    /// A call started: tracked, and a parent candidate at once if it can be one.
    pub fn started(&mut self, s: &CallStart, out: &mut Vec<SpanRecord>) {
        self.learn(&s.conn, out);
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
                presampled: false,
                below: None,
                state: State::Open,
            },
        );
        self.add_entities(s.span_id, &s.attributes);
        self.order.push_back(s.span_id);
        if let Some(server) = pid_of(&s.conn.server)
            && self.may_parent(&s.conn)
        {
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
        let image: Vec<&Attr> = attrs
            .iter()
            .filter(|a| a.key.starts_with(names::CONTAINER_IMAGE_PREFIX))
            .collect();
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

mod client;
mod export;
mod place;
mod pod;
mod self_time;

use client::{client_span, wants_client_span};
use pod::{Membership, PodGroup, pod_root};
use pod::{cri_method, is_cri};
use self_time::{Below, ms, nanos, push_self_times};

#[cfg(test)]
mod tests;
