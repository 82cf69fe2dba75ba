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
    pub(super) service: Arc<str>,
    pub(super) conn: Arc<ConnMeta>,
    pub(super) start: SystemTime,
    pub(super) end: SystemTime,
    pub(super) last_activity: SystemTime,
    pub(super) containers: HashSet<String>,
    /// The images its PullImage and CreateContainer calls named, with their start: an
    /// ImageStatus just before one of them was the same pod's image check.
    pub(super) images: Vec<(SystemTime, Vec<String>)>,
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
        names::self_time("kubelet"),
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
