//! Pod synthesis: the CRI calls of a pod being started go under one `pod start` root.

use super::*;
use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS,
};

pub(super) struct PodGroup {
    pub(super) root: SpanId,
    pub(super) trace_id: TraceId,
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) uid: String,
    pub(super) sandbox: String,
    /// The client's service (its executable's name), whose resource the root goes in.
    pub(super) service: Arc<str>,
    pub(super) conn: Arc<ConnMeta>,
    pub(super) start: SystemTime,
    pub(super) end: SystemTime,
    pub(super) last_activity: SystemTime,
    pub(super) containers: HashSet<String>,
    /// The images its PullImage and CreateContainer calls named, with their start: an
    /// ImageStatus just before one of them was the same pod's image check.
    pub(super) images: Vec<(SystemTime, Vec<String>)>,
    /// Members' phase and `(start, end)`, for the root's phase attributes.
    pub(super) phases: Vec<(Phase, SystemTime, SystemTime)>,
    /// A W3C context the pod's sandbox config carried in its annotations: linked from the root.
    pub(super) context: Option<crate::trace::context::TraceParent>,
    /// Members' `(start, end)`, and the self time of every exported call of the pod's trace.
    pub(super) below: Below,
}

/// Whether a CRI call belongs to a pod being started.
pub(super) enum Membership {
    Member(SpanId),
    /// It may, once a later call names its image (ImageStatus).
    Wait,
    No,
}

/// The names an image is known by on a call: `name:tag` for each tag (the name alone when it
/// has none) and its id. kubelet checks an image by name and may create the container by id.
pub(super) fn image_keys(attrs: &[Attr]) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(name) = str_attr(attrs, CONTAINER_IMAGE_NAME) {
        match attrs.iter().find(|a| a.key == CONTAINER_IMAGE_TAGS).map(|a| &a.value) {
            Some(AttrValue::StrList(tags)) if !tags.is_empty() => {
                keys.extend(tags.iter().map(|t| format!("{name}:{t}")));
            }
            _ => keys.push(name.to_string()),
        }
    }
    if let Some(id) = str_attr(attrs, CONTAINER_IMAGE_ID) {
        keys.push(id.to_string());
    }
    keys
}

pub(super) fn is_cri(name: &str) -> bool {
    name.starts_with("runtime.v1.") || name.starts_with("runtime.v1alpha2.")
}

pub(super) fn cri_method(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or("")
}

pub(super) fn pod_root(pod: PodGroup) -> SpanRecord {
    let phases = PodPhases::of(pod.start, pod.end, &pod.phases);
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
    // The client's gaps are its own self time, under its own name (which is the intercept's
    // when the client is unknown: then added to that layer's).
    let mut below = pod.below;
    below.add(&pod.service, nanos(total.saturating_sub(covered)));
    push_self_times(&mut attributes, &below.self_ns);
    phases.push_attributes(&mut attributes);
    crate::trace::tracer::conn_attributes(&pod.conn, &mut attributes);
    SpanRecord {
        trace_id: pod.trace_id,
        span_id: pod.root,
        parent: None,
        trace_state: None,
        name: names::POD_START.to_string(),
        kind: SpanKind::Internal,
        start: pod.start,
        end: pod.end,
        attributes,
        events: Vec::new(),
        links: pod
            .context
            .map(|c| LinkRecord {
                trace_id: c.trace_id,
                span_id: c.span_id,
                attributes: vec![Attr::str(names::LINK, Link::Traceparent.as_str())],
            })
            .into_iter()
            .collect(),
        status: SpanStatus::Unset,
        service: pod.service,
    }
}

/// The service a client's synthesized spans go in: its executable's file name (`kubelet`),
/// else the intercept's.
pub(super) fn client_service(conn: &ConnMeta) -> Arc<str> {
    client_name(conn).map_or_else(|| Arc::clone(&conn.service), Arc::from)
}

/// The client's executable name, when known.
pub(super) fn client_name(conn: &ConnMeta) -> Option<&str> {
    conn.client
        .as_ref()
        .and_then(|p| p.executable.as_deref())
        .filter(|exe| !exe.is_empty())
}

/// What a member call of a pod start spent its time on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    // Declared in precedence order: time when calls of several phases were in flight counts
    // once, for the first of them. Pulls come first, so that the image-pull phase is exactly
    // the union of the pulls' intervals, which the SLI subtracts.
    ImagePull,
    Sandbox,
    Create,
    Start,
    ImageCheck,
}

impl Phase {
    fn of(method: &str) -> Phase {
        match method {
            "RunPodSandbox" => Phase::Sandbox,
            "PullImage" => Phase::ImagePull,
            "CreateContainer" => Phase::Create,
            "StartContainer" => Phase::Start,
            _ => Phase::ImageCheck,
        }
    }
}

/// A pod start's wall time split by phase, in nanoseconds. Every instant of the root is counted
/// exactly once: for the first phase (by [`Phase`]'s precedence) with a call in flight then,
/// else for the client (`kubelet`). So the phases and the client's gaps add up to the root's
/// duration, overlapping calls included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodPhases {
    pub sandbox: u64,
    pub image_pull: u64,
    pub image_pull_longest: u64,
    pub image_check: u64,
    pub create: u64,
    pub start: u64,
    pub kubelet: u64,
    pub total: u64,
    /// The pod startup SLI: `total` minus the image-pull time.
    pub sli: u64,
}

impl PodPhases {
    pub(super) fn of(from: SystemTime, to: SystemTime, calls: &[(Phase, SystemTime, SystemTime)]) -> PodPhases {
        let clip = |t: SystemTime| t.clamp(from, to.max(from));
        let mut bounds: Vec<SystemTime> = calls.iter().flat_map(|&(_, s, e)| [clip(s), clip(e)]).collect();
        bounds.extend([from, to.max(from)]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut p = PodPhases {
            total: nanos(to.duration_since(from).unwrap_or_default()),
            ..PodPhases::default()
        };
        for w in bounds.windows(2) {
            let (a, b) = (w[0], w[1]);
            let Some(phase) = calls
                .iter()
                .filter(|&&(_, s, e)| clip(s) <= a && clip(e) >= b)
                .map(|&(phase, _, _)| phase)
                .min()
            else {
                continue;
            };
            let ns = nanos(b.duration_since(a).unwrap_or_default());
            *match phase {
                Phase::ImagePull => &mut p.image_pull,
                Phase::Sandbox => &mut p.sandbox,
                Phase::Create => &mut p.create,
                Phase::Start => &mut p.start,
                Phase::ImageCheck => &mut p.image_check,
            } += ns;
        }
        p.image_pull_longest = calls
            .iter()
            .filter(|(phase, _, _)| *phase == Phase::ImagePull)
            .map(|&(_, s, e)| nanos(clip(e).duration_since(clip(s)).unwrap_or_default()))
            .max()
            .unwrap_or(0);
        let covered = p.sandbox + p.image_pull + p.image_check + p.create + p.start;
        p.kubelet = p.total.saturating_sub(covered);
        p.sli = p.total.saturating_sub(p.image_pull);
        p
    }

    fn push_attributes(&self, out: &mut Vec<Attr>) {
        for (key, ns) in [
            (names::POD_START_SANDBOX_MS, self.sandbox),
            (names::POD_START_IMAGE_PULL_MS, self.image_pull),
            (names::POD_START_IMAGE_PULL_LONGEST_MS, self.image_pull_longest),
            (names::POD_START_IMAGE_CHECK_MS, self.image_check),
            (names::POD_START_CREATE_MS, self.create),
            (names::POD_START_START_MS, self.start),
            (names::POD_START_KUBELET_MS, self.kubelet),
            (names::POD_START_SLI_MS, self.sli),
        ] {
            out.push(Attr::double(key, ms(ns)));
        }
    }
}

impl Correlator {
    /// The pod root a CRI call belongs to, creating the group at RunPodSandbox. `force`: decide
    /// with what is known (an ImageStatus no later call claimed is no member).
    pub(super) fn pod_member(&mut self, id: SpanId, force: bool) -> Membership {
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
                    service: client_service(&node.conn),
                    conn: Arc::clone(&node.conn),
                    start,
                    end,
                    last_activity: end,
                    containers: HashSet::new(),
                    images: Vec::new(),
                    phases: Vec::new(),
                    context: str_attr(attrs, names::POD_TRACEPARENT).and_then(crate::trace::context::parse),
                    below: Below::default(),
                });
                Some(self.pods.len() - 1)
            }
            "PullImage" => str_attr(attrs, "k8s.pod.uid")
                .and_then(|uid| self.pods.iter().position(|p| !p.uid.is_empty() && p.uid == uid)),
            "CreateContainer" => {
                let sandbox = str_attr(attrs, names::CRI_POD_SANDBOX_ID);
                let i = sandbox.and_then(|s| self.pods.iter().position(|p| p.sandbox == s));
                if let (Some(i), Some(c)) = (i, str_attr(attrs, CONTAINER_ID)) {
                    self.pods[i].containers.insert(c.to_string());
                }
                i
            }
            "StartContainer" => {
                str_attr(attrs, CONTAINER_ID).and_then(|c| self.pods.iter().position(|p| p.containers.contains(c)))
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
        pod.phases.push((Phase::of(method), start, end));
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
    pub(super) fn image_check_of(
        &self,
        conn: &ConnMeta,
        start: SystemTime,
        end: SystemTime,
        keys: &[String],
    ) -> Option<usize> {
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
}
