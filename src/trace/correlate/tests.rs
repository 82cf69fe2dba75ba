use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use proptest::prelude::*;

use super::*;
use crate::conn::Process;
use crate::trace::span::SpanStatus;

fn conn(service: &str, client: u32, server: u32) -> Arc<ConnMeta> {
    let p = |pid| {
        Some(Process {
            pid,
            uid: 0,
            gid: 0,
            executable: None,
        })
    };
    Arc::new(ConnMeta {
        id: u64::from(client) << 16 | u64::from(server),
        service: Arc::from(service),
        transport: "unix",
        listen: String::new(),
        upstream: String::new(),
        client: p(client),
        server: p(server),
        capture_payloads: false,
    })
}

/// `conn` with a client executable named `exe`.
fn with_exe(conn: &Arc<ConnMeta>, exe: &str) -> Arc<ConnMeta> {
    let mut client = conn.client.clone();
    if let Some(p) = client.as_mut() {
        p.executable = Some(exe.to_string());
    }
    Arc::new(ConnMeta {
        id: conn.id,
        service: Arc::clone(&conn.service),
        transport: conn.transport,
        listen: conn.listen.clone(),
        upstream: conn.upstream.clone(),
        client,
        server: conn.server.clone(),
        capture_payloads: conn.capture_payloads,
    })
}

fn t(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
}

struct Spec {
    conn: Arc<ConnMeta>,
    name: &'static str,
    start: u64,
    end: u64,
    shape: Shape,
    start_attrs: Vec<Attr>,
    end_attrs: Vec<Attr>,
    /// Propagation fixed this call's trace (and its span id is the spec's index's id).
    own: Option<TraceId>,
    /// The W3C context the client sent with it.
    remote: Option<RemoteParent>,
}

fn cid(id: &str) -> Vec<Attr> {
    vec![Attr::str("container.id", id)]
}

/// Feed calls to a correlator in time order of their events, as the tracer would.
fn run(specs: Vec<Spec>) -> (Vec<SpanRecord>, Vec<SpanId>) {
    run_with(Correlator::new(), specs).0
}

/// As [`run`], on correlator `c`; also returns its counts.
fn run_with(mut c: Correlator, specs: Vec<Spec>) -> ((Vec<SpanRecord>, Vec<SpanId>), CorrelateCounts) {
    let ids: Vec<SpanId> = specs.iter().map(|_| new_span_id()).collect();
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        events.push((s.start, false, i));
        events.push((s.end, true, i));
    }
    events.sort_by_key(|(at, end, i)| (*at, *end, *i));
    let mut out = Vec::new();
    for (at, end, i) in events {
        let s = &specs[i];
        if end {
            let call = Call {
                span_id: ids[i],
                conn: Arc::clone(&s.conn),
                name: s.name.to_string(),
                start: t(s.start),
                end: t(s.end),
                attributes: s.end_attrs.clone(),
                status: SpanStatus::Unset,
                incomplete: false,
                shape: s.shape,
                remote_parent: s.remote.clone(),
                own_trace: s.own,
                events: Vec::new(),
                children: Vec::new(),
            };
            c.ended(call, t(at), &mut out);
        } else {
            c.started(
                &CallStart {
                    span_id: ids[i],
                    conn: Arc::clone(&s.conn),
                    name: s.name.to_string(),
                    start: t(s.start),
                    shape: s.shape,
                    remote_parent: s.remote.clone(),
                    own_trace: s.own,
                    attributes: s.start_attrs.clone(),
                },
                &mut out,
            );
        }
        c.tick(t(at), &mut out);
    }
    c.tick(t(1_000_000), &mut out);
    c.flush(t(1_000_000), &mut out);
    ((out, ids), c.counts)
}

/// RunPodSandbox's attributes for pod `uid` in `sandbox`.
fn pod(uid: &str, sandbox: &str) -> Vec<Attr> {
    vec![
        Attr::str("k8s.pod.name", format!("pod-{uid}")),
        Attr::str("k8s.namespace.name", "ns"),
        Attr::str("k8s.pod.uid", uid),
        Attr::str(names::CRI_POD_SANDBOX_ID, sandbox),
    ]
}

/// CreateContainer's attributes: container `c` in `sandbox`.
fn create(sandbox: &str, c: &str) -> Vec<Attr> {
    vec![
        Attr::str(names::CRI_POD_SANDBOX_ID, sandbox),
        Attr::str("container.id", c),
    ]
}

/// CreateContainer's attributes with the image it was created from.
fn create_from(sandbox: &str, c: &str, image: Vec<Attr>) -> Vec<Attr> {
    let mut a = create(sandbox, c);
    a.extend(image);
    a
}

fn spec(
    conn: &Arc<ConnMeta>,
    name: &'static str,
    start: u64,
    end: u64,
    shape: Shape,
    s: Vec<Attr>,
    e: Vec<Attr>,
) -> Spec {
    Spec {
        conn: Arc::clone(conn),
        name,
        start,
        end,
        shape,
        start_attrs: s,
        end_attrs: e,
        own: None,
        remote: None,
    }
}

fn link_of(span: &SpanRecord) -> Option<&str> {
    span.attributes
        .iter()
        .rev()
        .find(|a| a.key == names::LINK)
        .and_then(|a| match &a.value {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
}

#[test]
fn docker_start_children_go_under_the_start_not_the_attach_or_wait() {
    let cli = conn("dockerd", 100, 200);
    let cli2 = conn("dockerd", 101, 200);
    let cli3 = conn("dockerd", 102, 200);
    let ctd = conn("containerd", 200, 300);
    let bg = conn("containerd", 200, 300);
    let (out, ids) = run(vec![
        spec(
            &cli,
            "POST /containers/{id}/attach",
            0,
            500,
            Shape::LongLived,
            cid("X"),
            cid("X"),
        ),
        spec(
            &cli2,
            "POST /containers/{id}/wait",
            5,
            600,
            Shape::LongLived,
            cid("X"),
            cid("X"),
        ),
        spec(
            &cli3,
            "POST /containers/{id}/start",
            10,
            100,
            Shape::Unary,
            cid("X"),
            cid("X"),
        ),
        spec(&ctd, "Leases/Create", 12, 14, Shape::Unary, vec![], vec![]),
        spec(&ctd, "Containers/Create", 20, 30, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Create", 40, 60, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Start", 70, 90, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Delete", 300, 310, Shape::Unary, vec![], cid("X")),
        spec(&bg, "Events/Subscribe", 0, 900, Shape::LongLived, vec![], vec![]),
        spec(&bg, "Tasks/Get", 150, 151, Shape::Unary, vec![], vec![]),
    ]);
    assert_eq!(out.len(), 10, "every call exported exactly once");
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let start = by_id[&ids[2]];
    assert!(start.parent.is_none());
    for i in [4, 5, 6] {
        let child = by_id[&ids[i]];
        assert_eq!(child.parent.map(|p| p.span_id), Some(ids[2]), "{}", child.name);
        assert_eq!(child.trace_id, start.trace_id);
        assert_eq!(link_of(child), Some("entity"));
    }
    assert_eq!(by_id[&ids[3]].parent.map(|p| p.span_id), Some(ids[2]));
    assert_eq!(link_of(by_id[&ids[3]]), Some("temporal"));
    // After the start: the latest-started open request for that container (the wait).
    assert_eq!(by_id[&ids[7]].parent.map(|p| p.span_id), Some(ids[1]));
    // Background calls stay roots, also while streams are open.
    assert!(by_id[&ids[8]].parent.is_none());
    assert!(by_id[&ids[9]].parent.is_none());
    // Self time of each layer on the root: start 90 ms total, children cover 2+10+20+20.
    let self_ms = |k: &str| start.attributes.iter().find(|a| a.key == k).map(|a| a.value.clone());
    assert_eq!(
        self_ms("runtime_tap.self_time_ms.dockerd"),
        Some(AttrValue::Double(90.0 - 52.0))
    );
    assert_eq!(
        self_ms("runtime_tap.self_time_ms.containerd"),
        Some(AttrValue::Double(52.0))
    );
}

#[test]
fn two_concurrent_starts_are_not_cross_wired() {
    let a = conn("dockerd", 100, 200);
    let b = conn("dockerd", 101, 200);
    let ctd = conn("containerd", 200, 300);
    let ctd2 = conn("containerd", 200, 300);
    let (out, ids) = run(vec![
        spec(
            &a,
            "POST /containers/{id}/start",
            0,
            100,
            Shape::Unary,
            cid("A"),
            cid("A"),
        ),
        spec(
            &b,
            "POST /containers/{id}/start",
            1,
            101,
            Shape::Unary,
            cid("B"),
            cid("B"),
        ),
        spec(&ctd, "Tasks/Start", 10, 20, Shape::Unary, vec![], cid("A")),
        spec(&ctd2, "Tasks/Start", 11, 21, Shape::Unary, vec![], cid("B")),
        spec(&ctd, "Leases/Create", 30, 31, Shape::Unary, vec![], vec![]),
        spec(
            &a,
            "POST /containers/{id}/start",
            200,
            300,
            Shape::Unary,
            cid("B2"),
            cid("B2"),
        ),
        spec(&ctd, "Containers/Get", 210, 211, Shape::Unary, vec![], cid("A")),
    ]);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    assert_eq!(by_id[&ids[2]].parent.map(|p| p.span_id), Some(ids[0]));
    assert_eq!(by_id[&ids[3]].parent.map(|p| p.span_id), Some(ids[1]));
    let lease = by_id[&ids[4]];
    assert!(lease.parent.is_none());
    assert_eq!(link_of(lease), Some("ambiguous"));
    assert_eq!(lease.links.len(), 2);
    // Each link names its candidate in the candidate's own trace.
    for l in &lease.links {
        let target = by_id[&l.span_id];
        assert_eq!(l.trace_id, target.trace_id, "link to {}", target.name);
    }
    // A call about container A is never placed by time under a request about another one.
    assert!(by_id[&ids[6]].parent.is_none());
}

#[test]
fn an_id_learned_from_the_parents_response_still_places_the_child() {
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let other = conn("dockerd", 101, 200);
    let (out, ids) = run(vec![
        spec(
            &cli,
            "POST /containers/create",
            0,
            100,
            Shape::Unary,
            vec![],
            cid("NEW"),
        ),
        spec(&other, "GET /containers/json", 5, 90, Shape::Unary, vec![], vec![]),
        spec(&ctd, "Containers/Create", 10, 20, Shape::Unary, vec![], cid("NEW")),
    ]);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    assert_eq!(by_id[&ids[2]].parent.map(|p| p.span_id), Some(ids[0]));
    assert_eq!(link_of(by_id[&ids[2]]), Some("entity"));
}

#[test]
fn cri_calls_of_a_pod_start_go_under_a_pod_start_root() {
    let kubelet = conn("containerd", 50, 300);
    let (out, ids) = run(vec![
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            0,
            100,
            Shape::Unary,
            vec![],
            pod("u1", "S1"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            5,
            105,
            Shape::Unary,
            vec![],
            pod("u2", "S2"),
        ),
        spec(
            &kubelet,
            "runtime.v1.ImageService/PullImage",
            110,
            200,
            Shape::Unary,
            vec![],
            vec![Attr::str("k8s.pod.uid", "u1")],
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            210,
            250,
            Shape::Unary,
            vec![],
            create("S1", "C1"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            211,
            251,
            Shape::Unary,
            vec![],
            create("S2", "C2"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/StartContainer",
            260,
            300,
            Shape::Unary,
            vec![],
            cid("C1"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/StartContainer",
            261,
            301,
            Shape::Unary,
            vec![],
            cid("C2"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/ListPodSandbox",
            270,
            271,
            Shape::Unary,
            vec![],
            vec![],
        ),
    ]);
    let roots: Vec<&SpanRecord> = out.iter().filter(|s| s.name == "pod start").collect();
    assert_eq!(roots.len(), 2);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    for (members, uid) in [([0usize, 2, 3, 5], "u1"), ([1, 4, 6, 6], "u2")] {
        let root = roots
            .iter()
            .find(|r| r.attributes.contains(&Attr::str("k8s.pod.uid", uid)))
            .unwrap();
        assert_eq!(root.kind, SpanKind::Internal);
        for m in members {
            let span = by_id[&ids[m]];
            assert_eq!(span.parent.map(|p| p.span_id), Some(root.span_id), "{}", span.name);
            assert_eq!(span.trace_id, root.trace_id);
            assert!(root.start <= span.start && span.end <= root.end);
        }
    }
    assert!(by_id[&ids[7]].parent.is_none(), "polls are not part of a pod start");
}

#[derive(Debug, Clone)]
struct Gen {
    layer: usize,
    start: u64,
    len: u64,
    entity: Option<u8>,
    long: bool,
}

fn gen_call() -> impl Strategy<Value = Gen> {
    (
        0usize..3,
        0u64..1000,
        1u64..400,
        proptest::option::of(0u8..4),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(layer, start, len, entity, long)| Gen {
            layer,
            start,
            len,
            entity,
            long,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Random nesting, concurrency and late ids: every call exported exactly once, no span
    /// has two parents or is its own ancestor, and every child lies inside its parent.
    #[test]
    fn correlation_is_a_forest_of_nested_spans(calls in proptest::collection::vec(gen_call(), 1..40), late in proptest::bool::ANY) {
        // Three layers: clients -> dockerd (pid 200) -> containerd (pid 300) -> shim-ish (400).
        let layer_conn = |l: usize, k: usize| conn(["dockerd", "containerd", "cri"][l], [100 + k as u32, 200, 300][l], [200, 300, 400][l]);
        let specs: Vec<Spec> = calls.iter().enumerate().map(|(k, g)| {
            let e = g.entity.map(|e| cid(&format!("E{e}"))).unwrap_or_default();
            let (s, en) = if late { (vec![], e) } else { (e.clone(), e) };
            Spec { conn: layer_conn(g.layer, k), name: "call", start: g.start, end: g.start + g.len,
                   shape: if g.long { Shape::LongLived } else { Shape::Unary }, start_attrs: s, end_attrs: en, own: None, remote: None }
        }).collect();
        let n = specs.len();
        let (out, ids) = run(specs);
        prop_assert_eq!(out.len(), n);
        let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
        prop_assert_eq!(by_id.len(), n, "a span exported twice");
        for id in &ids {
            let mut cur = by_id[id];
            let mut steps = 0;
            while let Some(p) = cur.parent {
                let parent = by_id.get(&p.span_id);
                prop_assert!(parent.is_some(), "parent not exported");
                let parent = parent.unwrap();
                prop_assert!(parent.start <= cur.start && cur.end <= parent.end, "child outside its parent");
                prop_assert_eq!(parent.trace_id, cur.trace_id);
                cur = parent;
                steps += 1;
                prop_assert!(steps <= n, "cycle");
            }
        }
    }
}

#[test]
fn propagated_calls_keep_their_trace_and_get_links_and_children() {
    // dockerd's start (pid 100 -> 200) is open; containerd Tasks/Start (200 -> 300) went out
    // with a traceparent (propagation on the containerd intercept): its trace is fixed.
    // A call the containerd side makes under it (300 -> 400) joins that fixed trace.
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let shim = conn("shim", 300, 400);
    let fixed = new_trace_id();
    let mut specs = vec![
        spec(
            &cli,
            "POST /containers/{id}/start",
            0,
            100,
            Shape::Unary,
            cid("c1"),
            vec![],
        ),
        spec(
            &ctd,
            "containerd.services.tasks.v1.Tasks/Start",
            10,
            50,
            Shape::Unary,
            cid("c1"),
            vec![],
        ),
        spec(&shim, "x.Shim/Start", 20, 40, Shape::Unary, vec![], vec![]),
    ];
    specs[1].own = Some(fixed);
    let (out, ids) = run(specs);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    assert_eq!(out.len(), 3);
    let start = by_id[&ids[0]];
    let task = by_id[&ids[1]];
    let shim = by_id[&ids[2]];
    assert_eq!(task.trace_id, fixed, "the trace named in the forwarded traceparent");
    assert_eq!(task.parent, None, "late evidence never changes a fixed call's parent");
    assert_eq!(task.links.len(), 1);
    assert_eq!(task.links[0].span_id, ids[0]);
    assert_eq!(task.links[0].trace_id, start.trace_id);
    assert_eq!(task.links[0].attributes, vec![Attr::str(names::LINK, "entity")]);
    assert_eq!(shim.trace_id, fixed, "children join the fixed trace");
    assert_eq!(shim.parent.map(|p| p.span_id), Some(ids[1]));
}

#[test]
fn a_propagated_parent_settles_its_children_at_once() {
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let fixed = new_trace_id();
    let mut specs = vec![
        spec(
            &cli,
            "POST /containers/{id}/start",
            0,
            100,
            Shape::Unary,
            cid("c1"),
            vec![],
        ),
        spec(
            &ctd,
            "containerd.services.tasks.v1.Tasks/Start",
            10,
            50,
            Shape::Unary,
            cid("c1"),
            vec![],
        ),
    ];
    specs[0].own = Some(fixed);
    let (out, ids) = run(specs);
    // The child is exported before its parent ends: the parent's trace was settled at start.
    assert_eq!(out[0].span_id, ids[1]);
    assert_eq!(out[0].trace_id, fixed);
    assert_eq!(out[0].parent.map(|p| p.span_id), Some(ids[0]));
    assert_eq!(out[1].trace_id, fixed);
    assert_eq!(out[1].parent, None);
}

fn self_ms(span: &SpanRecord, service: &str) -> Option<i64> {
    let key = format!("runtime_tap.self_time_ms.{service}");
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value {
            // Whole milliseconds in these tests; a fraction would fail them.
            AttrValue::Double(v) if v.fract() == 0.0 => Some(v as i64),
            _ => None,
        })
}

#[test]
fn self_time_counts_children_placed_after_the_root_ended() {
    // The create's child learns its parent only from the create's response: it is decided
    // when the root ends, and still counts in the root's self time.
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let (out, ids) = run(vec![
        spec(
            &cli,
            "POST /containers/create",
            0,
            100,
            Shape::Unary,
            vec![],
            cid("NEW"),
        ),
        spec(&ctd, "Containers/Create", 10, 30, Shape::Unary, vec![], cid("NEW")),
    ]);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    assert_eq!(by_id[&ids[1]].parent.map(|p| p.span_id), Some(ids[0]));
    assert_eq!(self_ms(by_id[&ids[0]], "dockerd"), Some(80));
    assert_eq!(self_ms(by_id[&ids[0]], "containerd"), Some(20));
    assert_eq!(
        self_ms(by_id[&ids[1]], "containerd"),
        None,
        "only roots carry self times"
    );
    let first = by_id[&ids[0]]
        .attributes
        .iter()
        .find(|a| a.key.starts_with("runtime_tap.self_time_ms."));
    assert_eq!(
        first.map(|a| a.key.as_ref()),
        Some("runtime_tap.self_time_ms.dockerd"),
        "the root's layer first"
    );
}

#[test]
fn self_time_of_a_propagated_root_counts_children_exported_before_it() {
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let mut specs = vec![
        spec(
            &cli,
            "POST /containers/{id}/start",
            0,
            100,
            Shape::Unary,
            cid("c1"),
            vec![],
        ),
        spec(&ctd, "Tasks/Start", 10, 50, Shape::Unary, cid("c1"), vec![]),
        spec(&ctd, "Tasks/Get", 60, 70, Shape::Unary, cid("c1"), vec![]),
    ];
    specs[0].own = Some(new_trace_id());
    let (out, ids) = run(specs);
    let root = out.iter().find(|s| s.span_id == ids[0]).unwrap();
    assert_eq!(self_ms(root, "dockerd"), Some(100 - 40 - 10));
    assert_eq!(self_ms(root, "containerd"), Some(50));
}

#[test]
fn an_open_subscription_does_not_stop_retention() {
    // dockerd's Events/Subscribe is open from the daemon's start: calls after it must still be
    // forgotten once retained, and the subscription must stay tracked for its event links.
    let mut c = Correlator::new();
    let ctd = conn("containerd", 200, 300);
    let mut out = Vec::new();
    let subscription = new_span_id();
    c.started(
        &CallStart {
            span_id: subscription,
            conn: Arc::clone(&ctd),
            name: "containerd.services.events.v1.Events/Subscribe".into(),
            start: t(0),
            shape: Shape::LongLived,
            remote_parent: None,
            own_trace: None,
            attributes: Vec::new(),
        },
        &mut out,
    );
    for i in 0..100u64 {
        let span_id = new_span_id();
        let (start, end) = (t(10 + i), t(11 + i));
        c.started(
            &CallStart {
                span_id,
                conn: Arc::clone(&ctd),
                name: "Tasks/Get".into(),
                start,
                shape: Shape::Unary,
                remote_parent: None,
                own_trace: None,
                attributes: Vec::new(),
            },
            &mut out,
        );
        let call = Call {
            span_id,
            conn: Arc::clone(&ctd),
            name: "Tasks/Get".into(),
            start,
            end,
            attributes: Vec::new(),
            status: SpanStatus::Unset,
            incomplete: false,
            shape: Shape::Unary,
            remote_parent: None,
            own_trace: None,
            events: Vec::new(),
            children: Vec::new(),
        };
        c.ended(call, end, &mut out);
        c.tick(end, &mut out);
    }
    assert_eq!(out.len(), 100);
    assert_eq!(c.tracked(), 101);
    c.tick(t(200) + RETAIN, &mut out);
    assert_eq!(c.tracked(), 1, "retained calls are forgotten behind an open stream");
    assert!(c.link_target(subscription).is_some());
    assert_eq!(c.counts.evicted, 0);
}

fn image(name: &str, tag: &str) -> Vec<Attr> {
    vec![
        Attr::str("container.image.name", name),
        Attr::list("container.image.tags", vec![tag.to_string()]),
    ]
}

#[test]
fn image_checks_join_the_pod_whose_next_call_names_the_image() {
    let kubelet = conn("containerd", 50, 300);
    let mut status_resp = image("bb", "latest");
    status_resp.push(Attr::str("container.image.id", "sha256:bbbb"));
    let (out, ids) = run(vec![
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            0,
            100,
            Shape::Unary,
            vec![],
            pod("u1", "S1"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            5,
            105,
            Shape::Unary,
            vec![],
            pod("u2", "S2"),
        ),
        // Pod 1 checks bb:latest and creates from its id, pod 2 checks and creates by name.
        spec(
            &kubelet,
            "runtime.v1.ImageService/ImageStatus",
            110,
            112,
            Shape::Unary,
            image("bb", "latest"),
            status_resp,
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            113,
            150,
            Shape::Unary,
            vec![],
            create_from("S1", "C1", vec![Attr::str("container.image.name", "sha256:bbbb")]),
        ),
        spec(
            &kubelet,
            "runtime.v1.ImageService/ImageStatus",
            120,
            122,
            Shape::Unary,
            image("bb", "latest"),
            image("bb", "latest"),
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            160,
            190,
            Shape::Unary,
            vec![],
            create_from("S2", "C2", image("bb", "latest")),
        ),
        // An image check nothing follows: no member.
        spec(
            &kubelet,
            "runtime.v1.ImageService/ImageStatus",
            200,
            201,
            Shape::Unary,
            image("other", "1"),
            image("other", "1"),
        ),
    ]);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let root_of = |uid: &str| {
        out.iter()
            .find(|s| s.name == "pod start" && s.attributes.contains(&Attr::str("k8s.pod.uid", uid)))
            .unwrap()
    };
    let (p1, p2) = (root_of("u1"), root_of("u2"));
    assert_eq!(by_id[&ids[2]].parent.map(|p| p.span_id), Some(p1.span_id));
    assert_eq!(by_id[&ids[2]].trace_id, p1.trace_id);
    assert_eq!(by_id[&ids[4]].parent.map(|p| p.span_id), Some(p2.span_id));
    assert_eq!(link_of(by_id[&ids[4]]), Some("pod"));
    assert!(by_id[&ids[6]].parent.is_none());
    assert_eq!(
        out.iter()
            .filter(|s| s.span_id == ids[2] || s.span_id == ids[4])
            .count(),
        2
    );
}

#[test]
fn a_pod_roots_self_time_is_its_calls_and_kubelets_gaps() {
    let kubelet = conn("cri", 50, 300);
    let dockerd = conn("dockerd", 300, 400);
    let pod = vec![
        Attr::str("k8s.pod.name", "p"),
        Attr::str("k8s.pod.uid", "u"),
        Attr::str(names::CRI_POD_SANDBOX_ID, "S"),
    ];
    let create = vec![
        Attr::str(names::CRI_POD_SANDBOX_ID, "S"),
        Attr::str("container.id", "C"),
    ];
    let kubelet = with_exe(&kubelet, "kubelet");
    let (out, _) = run(vec![
        // RunPodSandbox 0..100 makes one docker call 10..40 (cri-dockerd is pid 300).
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            0,
            100,
            Shape::Unary,
            vec![],
            pod,
        ),
        spec(
            &dockerd,
            "POST /containers/create",
            10,
            40,
            Shape::Unary,
            vec![],
            vec![],
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            150,
            200,
            Shape::Unary,
            vec![],
            create,
        ),
        spec(
            &kubelet,
            "runtime.v1.RuntimeService/StartContainer",
            250,
            300,
            Shape::Unary,
            vec![],
            cid("C"),
        ),
    ]);
    let root = out.iter().find(|s| s.name == "pod start").unwrap();
    assert_eq!(self_ms(root, "cri"), Some(70 + 50 + 50));
    assert_eq!(self_ms(root, "dockerd"), Some(30));
    assert_eq!(self_ms(root, "kubelet"), Some(50 + 50));
}

/// A client's W3C context in a fresh trace of its own (as dockerd 26 sends on every
/// containerd call, with no tracing configured).
fn fresh_remote() -> RemoteParent {
    RemoteParent {
        trace_id: new_trace_id(),
        span_id: new_span_id(),
        sampled: true,
        trace_state: None,
    }
}

fn remote_parent_of(span: &SpanRecord) -> Option<&str> {
    span.attributes
        .iter()
        .find(|a| a.key == names::REMOTE_PARENT)
        .and_then(|a| match &a.value {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
}

/// `docker start` as dockerd 26 makes it: each containerd call carries a context of its own
/// trace, whose parent span nobody exports.
fn docker26_start(policy: RemoteParentPolicy) -> (Vec<SpanRecord>, Vec<SpanId>, Vec<RemoteParent>, CorrelateCounts) {
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let mut specs = vec![
        spec(
            &cli,
            "POST /containers/{id}/start",
            0,
            100,
            Shape::Unary,
            cid("X"),
            cid("X"),
        ),
        spec(&ctd, "Containers/Create", 10, 20, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Create", 30, 60, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Start", 70, 90, Shape::Unary, vec![], cid("X")),
        // A background call dockerd makes on its own: no observed parent.
        spec(&ctd, "Tasks/Get", 200, 201, Shape::Unary, vec![], vec![]),
    ];
    let remotes: Vec<RemoteParent> = (1..5).map(|_| fresh_remote()).collect();
    for (s, r) in specs[1..].iter_mut().zip(&remotes) {
        s.remote = Some(r.clone());
    }
    let ((out, ids), counts) = run_with(Correlator::new().with_remote_policy(policy), specs);
    (out, ids, remotes, counts)
}

#[test]
fn an_observed_parent_wins_over_a_context_naming_another_trace() {
    let (out, ids, remotes, counts) = docker26_start(RemoteParentPolicy::Observed);
    assert_eq!(out.len(), 5);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let start = by_id[&ids[0]];
    assert!(start.parent.is_none());
    for i in 1..4 {
        let child = by_id[&ids[i]];
        assert_eq!(child.trace_id, start.trace_id, "{} in the start's trace", child.name);
        assert_eq!(
            child.parent,
            Some(ParentRef {
                span_id: ids[0],
                remote: false
            })
        );
        assert_eq!(link_of(child), Some("entity"));
        assert_eq!(remote_parent_of(child), Some("replaced"));
        // The context the client sent is kept, as a link to its own trace.
        assert_eq!(child.links.len(), 1, "{}", child.name);
        assert_eq!(child.links[0].trace_id, remotes[i - 1].trace_id);
        assert_eq!(child.links[0].span_id, remotes[i - 1].span_id);
        assert_eq!(child.links[0].attributes, vec![Attr::str(names::LINK, "traceparent")]);
        assert_eq!(child.trace_state, None);
    }
    // No observed parent: the client's context is followed, and the span says so.
    let bg = by_id[&ids[4]];
    assert_eq!(bg.trace_id, remotes[3].trace_id);
    assert_eq!(
        bg.parent,
        Some(ParentRef {
            span_id: remotes[3].span_id,
            remote: true
        })
    );
    assert_eq!(remote_parent_of(bg), Some("followed"));
    assert!(bg.links.is_empty());
    assert_eq!(
        RemoteOutcome::ALL.map(|o| counts.remote.get(o)),
        [1, 0, 3, 0],
        "followed, confirmed, replaced, linked"
    );
    // The start's own self time counts its containerd children again.
    assert!(
        start
            .attributes
            .contains(&Attr::double("runtime_tap.self_time_ms.containerd", 60.0)),
        "{:?}",
        start.attributes
    );
}

#[test]
fn policy_follow_keeps_every_context_as_the_parent() {
    let (out, ids, remotes, counts) = docker26_start(RemoteParentPolicy::Follow);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    for i in 1..5 {
        let child = by_id[&ids[i]];
        assert_eq!(child.trace_id, remotes[i - 1].trace_id);
        assert_eq!(
            child.parent.map(|p| (p.span_id, p.remote)),
            Some((remotes[i - 1].span_id, true))
        );
        assert_eq!(remote_parent_of(child), Some("followed"));
    }
    assert_eq!(counts.remote.get(RemoteOutcome::Followed), 4);
}

#[test]
fn policy_link_never_makes_a_context_a_parent() {
    let (out, ids, remotes, counts) = docker26_start(RemoteParentPolicy::Link);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    for i in 1..4 {
        assert_eq!(by_id[&ids[i]].parent.map(|p| p.span_id), Some(ids[0]));
    }
    let bg = by_id[&ids[4]];
    assert_eq!(bg.parent, None, "a root of its own");
    assert_ne!(bg.trace_id, remotes[3].trace_id);
    assert_eq!(bg.links.len(), 1);
    assert_eq!(bg.links[0].span_id, remotes[3].span_id);
    assert_eq!(remote_parent_of(bg), Some("linked"));
    assert_eq!(counts.remote.get(RemoteOutcome::Linked), 4);
}

#[test]
fn a_context_in_the_observed_parents_trace_is_a_link_too() {
    // Propagation on dockerd's intercept: the start went to dockerd with runtime-tap's own
    // span id, dockerd made its client span under it, and the containerd call carries that
    // client span: the same trace. dockerd 26 does this without exporting anything, so the
    // observed start stays the parent and dockerd's span is a link.
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let fixed = new_trace_id();
    let dockerd_client_span = RemoteParent {
        trace_id: fixed,
        span_id: new_span_id(),
        sampled: true,
        trace_state: Some("k=v".into()),
    };
    let mut specs = vec![
        spec(
            &cli,
            "POST /containers/{id}/start",
            0,
            100,
            Shape::Unary,
            cid("X"),
            cid("X"),
        ),
        spec(&ctd, "Tasks/Start", 70, 90, Shape::Unary, vec![], cid("X")),
    ];
    specs[0].own = Some(fixed);
    specs[1].remote = Some(dockerd_client_span.clone());
    let ((out, ids), counts) = run_with(Correlator::new(), specs);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let task = by_id[&ids[1]];
    assert_eq!(task.trace_id, fixed);
    assert_eq!(
        task.parent,
        Some(ParentRef {
            span_id: ids[0],
            remote: false
        })
    );
    assert_eq!(task.links.len(), 1);
    assert_eq!(task.links[0].span_id, dockerd_client_span.span_id);
    assert_eq!(task.links[0].trace_id, fixed);
    assert_eq!(remote_parent_of(task), Some("confirmed"));
    assert_eq!(counts.remote.get(RemoteOutcome::Confirmed), 1);
}

#[test]
fn an_unsampled_context_that_is_replaced_does_not_drop_the_call() {
    let (out, _, _, counts) = {
        let cli = conn("dockerd", 100, 200);
        let ctd = conn("containerd", 200, 300);
        let mut specs = vec![
            spec(
                &cli,
                "POST /containers/{id}/start",
                0,
                100,
                Shape::Unary,
                cid("X"),
                cid("X"),
            ),
            spec(&ctd, "Tasks/Start", 70, 90, Shape::Unary, vec![], cid("X")),
        ];
        specs[1].remote = Some(RemoteParent {
            sampled: false,
            ..fresh_remote()
        });
        let ((out, ids), counts) = run_with(Correlator::new(), specs);
        (out, ids, (), counts)
    };
    assert_eq!(out.len(), 2, "the start's trace is sampled: its child is kept");
    assert_eq!(counts.not_sampled, 0);
}

/// RunPodSandbox and CreateContainer of one pod from `kubelet`, both carrying `context`.
fn kubelet_pod_start(kubelet: &Arc<ConnMeta>, context: &RemoteParent) -> Vec<Spec> {
    let mut specs = vec![
        spec(
            kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            0,
            40,
            Shape::Unary,
            vec![],
            pod("u1", "s1"),
        ),
        spec(
            kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            50,
            60,
            Shape::Unary,
            vec![],
            create("s1", "c1"),
        ),
    ];
    for s in &mut specs {
        s.remote = Some(context.clone());
    }
    specs
}

#[test]
fn kubelet_calls_with_their_own_context_follow_it_and_make_no_pod_root() {
    let kubelet = conn("containerd", 50, 300);
    let kubelet_span = fresh_remote();
    let specs = kubelet_pod_start(&kubelet, &kubelet_span);
    let ((out, _), counts) = run_with(Correlator::new(), specs);
    assert_eq!(out.len(), 2, "no pod start root: {out:?}");
    assert!(out.iter().all(|s| s.trace_id == kubelet_span.trace_id
        && s.parent.map(|p| p.span_id) == Some(kubelet_span.span_id)
        && remote_parent_of(s) == Some("followed")));
    assert_eq!(counts.pod_roots, 0);
    // With policy link, kubelet's context is a link and the pod root is made as without one.
    let specs = kubelet_pod_start(&kubelet, &kubelet_span);
    let ((out, _), counts) = run_with(Correlator::new().with_remote_policy(RemoteParentPolicy::Link), specs);
    assert_eq!(counts.pod_roots, 1);
    let root = out.iter().find(|s| s.name == "pod start").expect("pod root");
    assert!(
        out.iter()
            .filter(|s| s.name != "pod start")
            .all(|s| s.trace_id == root.trace_id)
    );
}

#[test]
fn streams_go_under_the_transfer_that_named_them_though_they_opened_first() {
    // ctr 2.x `images import`: it opens the progress and data streams, then calls
    // Transfer/Transfer naming both; all on one connection to containerd.
    let ctr = conn("containerd", 70, 300);
    let other = conn("containerd", 71, 300);
    let stream = |id: &str| vec![Attr::str("containerd.stream.id", id)];
    let transfer = vec![
        Attr::str("containerd.transfer.stream", "import-1"),
        Attr::str("containerd.transfer.progress_stream", "progress-1"),
    ];
    let ((out, ids), counts) = run_with(
        Correlator::new(),
        vec![
            spec(
                &ctr,
                STREAMING_STREAM,
                0,
                150,
                Shape::LongLived,
                vec![],
                stream("progress-1"),
            ),
            spec(
                &ctr,
                STREAMING_STREAM,
                5,
                80,
                Shape::LongLived,
                vec![],
                stream("import-1"),
            ),
            spec(
                &ctr,
                "containerd.services.transfer.v1.Transfer/Transfer",
                10,
                140,
                Shape::Unary,
                transfer.clone(),
                vec![],
            ),
            // Another client's stream with an id nobody of its own named: a root.
            spec(
                &other,
                STREAMING_STREAM,
                20,
                30,
                Shape::LongLived,
                vec![],
                stream("import-1"),
            ),
        ],
    );
    assert_eq!(out.len(), 4);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let t = by_id[&ids[2]];
    assert!(t.parent.is_none());
    for i in [0, 1] {
        let s = by_id[&ids[i]];
        assert_eq!(s.parent.map(|p| p.span_id), Some(ids[2]));
        assert_eq!(s.trace_id, t.trace_id);
        assert_eq!(link_of(s), Some("stream"));
    }
    assert!(by_id[&ids[3]].parent.is_none(), "not the other client's transfer");
    assert_ne!(by_id[&ids[3]].trace_id, t.trace_id);
    assert_eq!(counts.by_stream, 2);
}

#[test]
fn the_image_a_stream_saved_goes_on_the_transfer_that_named_it() {
    // A plain `ctr images import` names no image in its Transfer; the progress stream's
    // `saved` event does, while the Transfer is open.
    let ctr = conn("containerd", 70, 300);
    let mut c = Correlator::new();
    let mut out = Vec::new();
    let (progress, transfer) = (new_span_id(), new_span_id());
    let start = |id, name: &str, at| start_of(id, &ctr, name, at);
    c.started(&start(progress, STREAMING_STREAM, 0), &mut out);
    c.learned(progress, &[Attr::str("containerd.stream.id", "progress-1")]);
    c.started(
        &start(transfer, "containerd.services.transfer.v1.Transfer/Transfer", 2),
        &mut out,
    );
    c.learned(
        transfer,
        &[Attr::str("containerd.transfer.progress_stream", "progress-1")],
    );
    let image = [
        Attr::str("container.image.name", "example.invalid/hello"),
        Attr::list("container.image.tags", vec!["v1".into()]),
    ];
    c.learned(progress, &image);
    let end = |id, name: &str, at, attrs: Vec<Attr>| Call {
        span_id: id,
        conn: Arc::clone(&ctr),
        name: name.to_string(),
        start: t(0),
        end: t(at),
        attributes: attrs,
        status: SpanStatus::Unset,
        incomplete: false,
        shape: Shape::Unary,
        remote_parent: None,
        own_trace: None,
        events: Vec::new(),
        children: Vec::new(),
    };
    c.ended(
        end(
            transfer,
            "containerd.services.transfer.v1.Transfer/Transfer",
            50,
            vec![],
        ),
        t(50),
        &mut out,
    );
    c.ended(end(progress, STREAMING_STREAM, 51, image.to_vec()), t(51), &mut out);
    c.flush(t(100), &mut out);
    let t_span = out.iter().find(|s| s.span_id == transfer).unwrap();
    assert!(t_span.attributes.contains(&image[0]), "{:?}", t_span.attributes);
    assert!(t_span.attributes.contains(&image[1]));
    let p_span = out.iter().find(|s| s.span_id == progress).unwrap();
    assert_eq!(p_span.parent.map(|p| p.span_id), Some(transfer));
}

#[test]
fn self_times_are_exact_and_add_up_to_the_root() {
    // dockerd's start (10.5 ms) calls containerd three times, 1.25 ms each, one after another:
    // cut to whole milliseconds per span the layers came to 6 + 3 = 9 ms.
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let us = |n: u64| t(0) + Duration::from_micros(n);
    let mut c = Correlator::new();
    let mut out = Vec::new();
    let calls = [
        (new_span_id(), &cli, "POST /containers/{id}/start", 0, 10_500),
        (new_span_id(), &ctd, "Containers/Create", 1_000, 2_250),
        (new_span_id(), &ctd, "Tasks/Create", 3_000, 4_250),
        (new_span_id(), &ctd, "Tasks/Start", 5_000, 6_250),
    ];
    for (id, conn, name, start, _) in &calls {
        c.started(
            &CallStart {
                span_id: *id,
                conn: Arc::clone(conn),
                name: name.to_string(),
                start: us(*start),
                shape: Shape::Unary,
                remote_parent: None,
                own_trace: None,
                attributes: cid("X"),
            },
            &mut out,
        );
    }
    for (id, conn, name, start, end) in calls.iter().skip(1).chain(calls.iter().take(1)) {
        let call = Call {
            span_id: *id,
            conn: Arc::clone(conn),
            name: name.to_string(),
            start: us(*start),
            end: us(*end),
            attributes: cid("X"),
            status: SpanStatus::Unset,
            incomplete: false,
            shape: Shape::Unary,
            remote_parent: None,
            own_trace: None,
            events: Vec::new(),
            children: Vec::new(),
        };
        c.ended(call, us(*end), &mut out);
    }
    c.flush(t(100_000), &mut out);
    let root = out.iter().find(|s| s.span_id == calls[0].0).unwrap();
    let get = |svc: &str| {
        root.attributes
            .iter()
            .find(|a| a.key == format!("runtime_tap.self_time_ms.{svc}"))
            .map(|a| a.value.clone())
    };
    assert_eq!(get("dockerd"), Some(AttrValue::Double(6.75)));
    assert_eq!(get("containerd"), Some(AttrValue::Double(3.75)));
    let sum: f64 = ["dockerd", "containerd"]
        .iter()
        .filter_map(|svc| match get(svc) {
            Some(AttrValue::Double(v)) => Some(v),
            _ => None,
        })
        .sum();
    let root_ms = root.end.duration_since(root.start).unwrap().as_secs_f64() * 1000.0;
    assert!(
        (sum - root_ms).abs() < 1e-9,
        "the layers add up to the root: {sum} vs {root_ms}"
    );
}

#[test]
fn a_child_that_outlives_its_open_parent_is_decided_again() {
    // The start's end reaches the correlator after the end of a Tasks/Get that began inside
    // it, though the start ended first (its observer was behind): the Tasks/Get belongs to
    // the exit, under the wait still open for the container.
    let wait_conn = conn("dockerd", 101, 200);
    let start_conn = conn("dockerd", 102, 200);
    let ctd = conn("containerd", 200, 300);
    let (wait, start, create, get) = (new_span_id(), new_span_id(), new_span_id(), new_span_id());
    let mut c = Correlator::new();
    let mut out = Vec::new();
    let begin = |c: &mut Correlator, id, conn: &Arc<ConnMeta>, name: &str, at, shape, out: &mut Vec<SpanRecord>| {
        c.started(
            &CallStart {
                span_id: id,
                conn: Arc::clone(conn),
                name: name.into(),
                start: t(at),
                shape,
                remote_parent: None,
                own_trace: None,
                attributes: cid("X"),
            },
            out,
        );
    };
    let finish =
        |c: &mut Correlator, id, conn: &Arc<ConnMeta>, name: &str, (from, to), at, out: &mut Vec<SpanRecord>| {
            let call = Call {
                span_id: id,
                conn: Arc::clone(conn),
                name: name.into(),
                start: t(from),
                end: t(to),
                attributes: cid("X"),
                status: SpanStatus::Unset,
                incomplete: false,
                shape: Shape::Unary,
                remote_parent: None,
                own_trace: None,
                events: Vec::new(),
                children: Vec::new(),
            };
            c.ended(call, t(at), out);
        };
    begin(
        &mut c,
        wait,
        &wait_conn,
        "POST /containers/{id}/wait",
        0,
        Shape::LongLived,
        &mut out,
    );
    begin(
        &mut c,
        start,
        &start_conn,
        "POST /containers/{id}/start",
        10,
        Shape::Unary,
        &mut out,
    );
    begin(&mut c, create, &ctd, "Tasks/Create", 20, Shape::Unary, &mut out);
    finish(&mut c, create, &ctd, "Tasks/Create", (20, 40), 40, &mut out);
    begin(&mut c, get, &ctd, "Tasks/Get", 90, Shape::Unary, &mut out);
    finish(&mut c, get, &ctd, "Tasks/Get", (90, 120), 120, &mut out);
    // Both still held under the open start.
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(c.pending(), 2);
    finish(
        &mut c,
        start,
        &start_conn,
        "POST /containers/{id}/start",
        (10, 100),
        125,
        &mut out,
    );
    finish(
        &mut c,
        wait,
        &wait_conn,
        "POST /containers/{id}/wait",
        (0, 300),
        300,
        &mut out,
    );
    c.flush(t(10_000), &mut out);
    assert_eq!(c.pending(), 0);
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    assert_eq!(out.len(), 4, "every call exported once: {out:#?}");
    assert_eq!(by_id[&create].parent.map(|p| p.span_id), Some(start));
    assert_eq!(
        by_id[&get].parent.map(|p| p.span_id),
        Some(wait),
        "under the wait, not the start"
    );
    assert_eq!(by_id[&get].trace_id, by_id[&wait].trace_id);
    assert_eq!(link_of(by_id[&get]), Some("entity"));
    assert_eq!(c.counts.outlived, 1);
    // The start's self time no longer counts the Tasks/Get as covered: 90 - 20 of its own.
    assert_eq!(
        self_ms(by_id[&start], "dockerd"),
        Some(70),
        "{:?}",
        by_id[&start].attributes
    );
}

fn double(span: &SpanRecord, key: &str) -> Option<f64> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value {
            AttrValue::Double(v) => Some(v),
            _ => None,
        })
}

/// A pod start with overlapping calls: two PullImage calls overlapping each other and the
/// CreateContainer, an ImageStatus check, gaps between them. Calls from `kubelet`.
fn overlapping_pod_start(kubelet: &Arc<ConnMeta>, run_attrs: Vec<Attr>) -> Vec<Spec> {
    let pull = || {
        let mut a = vec![Attr::str("k8s.pod.uid", "u1")];
        a.extend(image("app", "1"));
        a
    };
    vec![
        spec(
            kubelet,
            "runtime.v1.RuntimeService/RunPodSandbox",
            0,
            100,
            Shape::Unary,
            vec![],
            run_attrs,
        ),
        spec(
            kubelet,
            "runtime.v1.ImageService/ImageStatus",
            110,
            115,
            Shape::Unary,
            vec![],
            image("app", "1"),
        ),
        spec(
            kubelet,
            "runtime.v1.ImageService/PullImage",
            120,
            400,
            Shape::Unary,
            vec![],
            pull(),
        ),
        spec(
            kubelet,
            "runtime.v1.ImageService/PullImage",
            300,
            500,
            Shape::Unary,
            vec![],
            pull(),
        ),
        spec(
            kubelet,
            "runtime.v1.RuntimeService/CreateContainer",
            450,
            600,
            Shape::Unary,
            vec![],
            create_from("s1", "C", image("app", "1")),
        ),
        spec(
            kubelet,
            "runtime.v1.RuntimeService/StartContainer",
            650,
            700,
            Shape::Unary,
            vec![],
            cid("C"),
        ),
    ]
}

#[test]
fn pod_start_phases_count_overlaps_once_and_add_up_to_the_root() {
    let kubelet = with_exe(&conn("containerd", 50, 300), "kubelet");
    let (out, ids) = run(overlapping_pod_start(&kubelet, pod("u1", "s1")));
    let root = out.iter().find(|s| s.name == "pod start").expect("pod root");
    for id in &ids {
        let m = out.iter().find(|s| s.span_id == *id).expect("member exported");
        assert_eq!(
            m.parent.map(|p| p.span_id),
            Some(root.span_id),
            "{} not under the root",
            m.name
        );
    }
    let phase = |k: &str| double(root, k).unwrap_or_else(|| panic!("{k} missing: {:?}", root.attributes));
    assert_eq!(phase(names::POD_START_SANDBOX_MS), 100.0);
    // The two pulls' union, 120..500: their overlap and the create's overlap with them once.
    assert_eq!(phase(names::POD_START_IMAGE_PULL_MS), 380.0);
    assert_eq!(phase(names::POD_START_IMAGE_PULL_LONGEST_MS), 280.0);
    assert_eq!(phase(names::POD_START_IMAGE_CHECK_MS), 5.0);
    assert_eq!(phase(names::POD_START_CREATE_MS), 100.0);
    assert_eq!(phase(names::POD_START_START_MS), 50.0);
    // No call in flight: 100..110, 115..120, 600..650.
    assert_eq!(phase(names::POD_START_KUBELET_MS), 65.0);
    let total = root.end.duration_since(root.start).unwrap().as_secs_f64() * 1_000.0;
    assert_eq!(total, 700.0);
    let sum: f64 = [
        names::POD_START_SANDBOX_MS,
        names::POD_START_IMAGE_PULL_MS,
        names::POD_START_IMAGE_CHECK_MS,
        names::POD_START_CREATE_MS,
        names::POD_START_START_MS,
        names::POD_START_KUBELET_MS,
    ]
    .iter()
    .map(|k| phase(k))
    .sum();
    assert!((sum - total).abs() < 1.0, "phases {sum} ms, root {total} ms");
    // The SLI leaves the pulls' wall time out, nothing else.
    assert_eq!(phase(names::POD_START_SLI_MS), 700.0 - 380.0);
}

#[test]
fn pod_phases_are_exact_to_the_microsecond_and_clip_to_the_root() {
    let base = t(0);
    let at = |us: u64| base + Duration::from_micros(us);
    let calls = [
        (pod::Phase::Sandbox, at(0), at(1_250)),
        (pod::Phase::Create, at(1_300), at(1_301)),
        // Starts before the root: only its part inside counts.
        (
            pod::Phase::ImagePull,
            at(0).checked_sub(Duration::from_millis(5)).unwrap(),
            at(10),
        ),
    ];
    let p = pod::PodPhases::of(base, at(2_000), &calls);
    assert_eq!(p.total, 2_000_000);
    assert_eq!(p.image_pull, 10_000);
    assert_eq!(p.image_pull_longest, 10_000);
    assert_eq!(p.sandbox, 1_240_000);
    assert_eq!(p.create, 1_000);
    assert_eq!(p.kubelet, 2_000_000 - 10_000 - 1_240_000 - 1_000);
    assert_eq!(
        p.sandbox + p.image_pull + p.create + p.start + p.image_check + p.kubelet,
        p.total
    );
    assert_eq!(p.sli, p.total - p.image_pull);
}

#[test]
fn the_pod_start_root_is_in_the_clients_resource() {
    let cri = conn("containerd", 50, 300);
    let (out, _) = run(overlapping_pod_start(&with_exe(&cri, "kubelet"), pod("u1", "s1")));
    let root = out.iter().find(|s| s.name == "pod start").unwrap();
    assert_eq!(&*root.service, "kubelet");
    assert!(
        out.iter()
            .filter(|s| s.name != "pod start")
            .all(|s| &*s.service == "containerd")
    );
    // The client's gaps are its self time, under its name.
    assert_eq!(self_ms(root, "kubelet"), Some(65));
    // An unknown client: the intercept's service, and one self time per layer.
    let (out, _) = run(overlapping_pod_start(&cri, pod("u1", "s1")));
    let root = out.iter().find(|s| s.name == "pod start").unwrap();
    assert_eq!(&*root.service, "containerd");
    let selfs: Vec<&str> = root
        .attributes
        .iter()
        .filter(|a| a.key.starts_with(names::SELF_TIME_PREFIX))
        .map(|a| &*a.key)
        .collect();
    assert_eq!(selfs, vec!["runtime_tap.self_time_ms.containerd"], "{selfs:?}");
    // Self time sums each call's own time (the two pulls overlap by 100 ms): 785 + 65 gaps.
    assert_eq!(self_ms(root, "containerd"), Some(850));
}

#[test]
fn a_traceparent_in_the_pods_annotations_is_a_link_of_the_root() {
    let kubelet = with_exe(&conn("containerd", 50, 300), "kubelet");
    let mut attrs = pod("u1", "s1");
    attrs.push(Attr::str(
        names::POD_TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    let (out, _) = run(overlapping_pod_start(&kubelet, attrs));
    let root = out.iter().find(|s| s.name == "pod start").unwrap();
    assert_eq!(root.links.len(), 1, "{:?}", root.links);
    assert_eq!(
        crate::trace::span::hex(&root.links[0].trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(crate::trace::span::hex(&root.links[0].span_id), "00f067aa0ba902b7");
    assert_eq!(link_of_link(&root.links[0]), Some("traceparent"));
    // The pod's own context is linked, not followed: the root stays a root of its own trace.
    assert!(root.parent.is_none());
    assert_ne!(root.trace_id, root.links[0].trace_id);
    // A malformed one is no link.
    let mut attrs = pod("u1", "s1");
    attrs.push(Attr::str(names::POD_TRACEPARENT, "00-zz-00f067aa0ba902b7-01"));
    let (out, _) = run(overlapping_pod_start(&kubelet, attrs));
    let root = out.iter().find(|s| s.name == "pod start").unwrap();
    assert!(root.links.is_empty(), "{:?}", root.links);
}

fn link_of_link(l: &LinkRecord) -> Option<&str> {
    l.attributes
        .iter()
        .find(|a| a.key == names::LINK)
        .and_then(|a| match &a.value {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
}

/// `docker start` from the docker CLI (pid 100) through dockerd (pid 200) to containerd
/// (pid 300), with a background Tasks/Get of dockerd's own.
fn docker_cli_start() -> Vec<Spec> {
    let cli = with_exe(&conn("dockerd", 100, 200), "docker");
    let ctd = with_exe(&conn("containerd", 200, 300), "dockerd");
    let start = "POST /containers/{id}/start";
    vec![
        spec(&cli, start, 10, 100, Shape::Unary, cid("X"), cid("X")),
        spec(&ctd, "Tasks/Create", 20, 40, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Start", 50, 90, Shape::Unary, vec![], cid("X")),
        spec(&ctd, "Tasks/Get", 150, 151, Shape::Unary, vec![], vec![]),
    ]
}

fn client_spans_of(out: &[SpanRecord]) -> Vec<&SpanRecord> {
    out.iter().filter(|s| s.kind == SpanKind::Client).collect()
}

#[test]
fn client_spans_are_off_by_default() {
    let ((out, _), counts) = run_with(Correlator::new(), docker_cli_start());
    assert_eq!(out.len(), 4);
    assert!(client_spans_of(&out).is_empty());
    assert_eq!(counts.client_spans, 0);
    let ((off, _), _) = run_with(Correlator::new().with_client_spans(false), docker_cli_start());
    assert!(client_spans_of(&off).is_empty());
}

#[test]
fn a_client_span_goes_above_a_call_from_a_client_behind_no_intercept() {
    let ((out, ids), counts) = run_with(Correlator::new().with_client_spans(true), docker_cli_start());
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let clients = client_spans_of(&out);
    // The CLI's start and dockerd's background call: none for dockerd's calls under the start.
    assert_eq!(clients.len(), 2, "{clients:#?}");
    assert_eq!(counts.client_spans, 2);
    assert_eq!(out.len(), 4 + 2);
    let start = by_id[&ids[0]];
    let client = by_id[&start.parent.expect("the start has the CLIENT span as parent").span_id];
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(&*client.service, "docker");
    assert_eq!(client.name, start.name);
    assert_eq!((client.start, client.end), (start.start, start.end));
    assert_eq!(client.trace_id, start.trace_id);
    assert!(client.parent.is_none(), "it took the start's place as the root");
    assert_eq!(client.attr_str(names::CLIENT_EXECUTABLE), Some("docker"));
    assert!(client.attr(names::CLIENT_PID).is_some());
    assert!(
        client
            .attr(opentelemetry_semantic_conventions::attribute::NETWORK_TRANSPORT)
            .is_some()
    );
    assert!(
        client.attr(names::SERVER_PID).is_none(),
        "lean: the server's side is on its span"
    );
    assert!(client.attr("container.id").is_none());
    // The layers' self time moved to the new root, the client's layer first with none of its own.
    assert_eq!(double(client, "runtime_tap.self_time_ms.docker"), Some(0.0));
    assert_eq!(double(client, "runtime_tap.self_time_ms.dockerd"), Some(90.0 - 60.0));
    assert_eq!(double(client, "runtime_tap.self_time_ms.containerd"), Some(60.0));
    assert!(double(start, "runtime_tap.self_time_ms.dockerd").is_none());
    // dockerd's calls under the start: SERVER children of the start, as before.
    for i in [1, 2] {
        assert_eq!(by_id[&ids[i]].parent.map(|p| p.span_id), Some(ids[0]));
        assert_eq!(by_id[&ids[i]].kind, SpanKind::Server);
    }
    // dockerd's own background call is a root: dockerd is its client.
    let get = by_id[&ids[3]];
    let bg = by_id[&get.parent.expect("a CLIENT parent").span_id];
    assert_eq!((bg.kind, &*bg.service), (SpanKind::Client, "dockerd"));
    assert!(bg.parent.is_none());
}

#[test]
fn a_pod_starts_client_spans_are_kubelets_under_its_root() {
    let cri = with_exe(&conn("containerd", 50, 300), "kubelet");
    let ((out, ids), counts) = run_with(
        Correlator::new().with_client_spans(true),
        overlapping_pod_start(&cri, pod("u1", "s1")),
    );
    let by_id: HashMap<SpanId, &SpanRecord> = out.iter().map(|s| (s.span_id, s)).collect();
    let root = out.iter().find(|s| s.name == "pod start").unwrap();
    let members: Vec<&SpanRecord> = ids.iter().map(|i| by_id[i]).collect();
    assert_eq!(counts.client_spans, members.len() as u64);
    for m in members {
        let client = by_id[&m.parent.unwrap().span_id];
        assert_eq!(
            (client.kind, &*client.service, &client.name),
            (SpanKind::Client, "kubelet", &m.name)
        );
        assert_eq!(client.parent.map(|p| p.span_id), Some(root.span_id), "{}", m.name);
        assert_eq!(client.trace_id, root.trace_id);
        assert_eq!(&*m.service, "containerd");
        assert_eq!(link_of(m), Some("pod"));
    }
    // The root's self time is the same as without client spans: they cover their calls exactly.
    assert_eq!(self_ms(root, "kubelet"), Some(65));
}

#[test]
fn a_client_span_takes_a_followed_remote_parent_and_its_tracestate() {
    let cli = with_exe(&conn("dockerd", 100, 200), "docker");
    let mut remote = fresh_remote();
    remote.trace_state = Some("vendor=1".into());
    let mut s = spec(&cli, "GET /version", 0, 5, Shape::Unary, vec![], vec![]);
    s.remote = Some(remote.clone());
    let ((out, ids), _) = run_with(Correlator::new().with_client_spans(true), vec![s]);
    let call = out.iter().find(|s| s.span_id == ids[0]).unwrap();
    let client = out.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(
        client.parent,
        Some(ParentRef {
            span_id: remote.span_id,
            remote: true
        })
    );
    assert_eq!(client.trace_id, remote.trace_id);
    assert_eq!(client.trace_state.as_deref(), Some("vendor=1"));
    assert_eq!(
        call.parent,
        Some(ParentRef {
            span_id: client.span_id,
            remote: false
        })
    );
}

#[test]
fn no_client_span_for_an_unnamed_client_and_sampling_drops_both() {
    // No executable: the CLIENT span would be in the server's own resource.
    let ((out, _), counts) = run_with(
        Correlator::new().with_client_spans(true),
        vec![spec(
            &conn("dockerd", 100, 200),
            "GET /version",
            0,
            5,
            Shape::Unary,
            vec![],
            vec![],
        )],
    );
    assert_eq!((out.len(), counts.client_spans), (1, 0));
    // A dropped trace drops its CLIENT span too, and both drops are counted.
    let sampling = crate::trace::sample::SamplingConfig {
        rules: vec![crate::trace::sample::Rule {
            name: "GET /version".into(),
            keep: Some(false),
            ratio: None,
            per_second: None,
        }],
        ..Default::default()
    };
    let cli = with_exe(&conn("dockerd", 100, 200), "docker");
    let ((out, _), counts) = run_with(
        Correlator::with_sampler(Sampler::new(&sampling)).with_client_spans(true),
        vec![spec(&cli, "GET /version", 0, 5, Shape::Unary, vec![], vec![])],
    );
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!((counts.client_spans, counts.sampled_out), (1, 2));
}

fn start_of(id: SpanId, conn: &Arc<ConnMeta>, name: &str, at: u64) -> CallStart {
    CallStart {
        span_id: id,
        conn: Arc::clone(conn),
        name: name.to_string(),
        start: t(at),
        shape: Shape::Unary,
        remote_parent: None,
        own_trace: None,
        attributes: Vec::new(),
    }
}

fn end_of(s: &CallStart, at: u64, status: SpanStatus) -> Call {
    Call {
        span_id: s.span_id,
        conn: Arc::clone(&s.conn),
        name: s.name.clone(),
        start: s.start,
        end: t(at),
        attributes: Vec::new(),
        status,
        incomplete: false,
        shape: s.shape,
        remote_parent: None,
        own_trace: None,
        events: Vec::new(),
        children: Vec::new(),
    }
}

/// Issue 15, point 3: a call whose server is no client on any intercept is no parent
/// candidate; when that process makes its first call on another intercept later, while the
/// call it serves is open, the open call becomes one, and the child is placed under it.
#[test]
fn a_server_that_becomes_a_client_later_still_parents_its_open_calls() {
    let mut c = Correlator::new();
    let mut out = Vec::new();
    let cli = conn("dockerd", 100, 200);
    let ctd = conn("containerd", 200, 300);
    let start = start_of(new_span_id(), &cli, "POST /containers/{id}/start", 0);
    c.started(&start, &mut out);
    assert!(c.served.is_empty(), "dockerd is no client yet: no candidate");
    let child = start_of(new_span_id(), &ctd, "containerd.services.tasks.v1.Tasks/Start", 10);
    c.started(&child, &mut out);
    assert!(c.served.get(&200).is_some_and(|s| s.contains(&start.span_id)));
    assert!(
        !c.served.contains_key(&300),
        "containerd serves, is no client: no candidate"
    );
    c.ended(end_of(&child, 20, SpanStatus::Unset), t(20), &mut out);
    c.ended(end_of(&start, 50, SpanStatus::Unset), t(50), &mut out);
    c.flush(t(10_000), &mut out);
    let span = out.iter().find(|s| s.span_id == child.span_id).unwrap();
    assert_eq!(span.parent.map(|p| p.span_id), Some(start.span_id));
    assert_eq!(link_of(span), Some("temporal"));
}

/// Issue 15, point 2: kubelet's polls are decided at their start. The first (a token) is
/// tracked and not sampled again at its export; the next is no node at all and one counted
/// drop when it ends; one open while its server turns out to be a client is promoted.
#[test]
fn polls_are_sampled_at_their_start_and_promoted_when_they_may_parent() {
    use crate::trace::sample::{Sampler, SamplingConfig};
    let mut c = Correlator::with_sampler(Sampler::new(&SamplingConfig::default()));
    let mut out = Vec::new();
    let kubelet = conn("containerd", 10, 20);
    let poll = "runtime.v1.RuntimeService/ListPodSandbox";
    let first = start_of(new_span_id(), &kubelet, poll, 0);
    assert_eq!(c.begin(&first, &mut out), Begun::Tracked);
    let second = start_of(new_span_id(), &kubelet, poll, 100);
    assert_eq!(c.begin(&second, &mut out), Begun::SampledOut);
    assert_eq!((c.tracked(), c.thin_open()), (1, 1));
    assert!(
        !c.thin_ended(second.span_id),
        "still only sampled out: the caller counts it"
    );
    c.ended(end_of(&first, 5, SpanStatus::Unset), t(5), &mut out);
    assert!(out.iter().any(|s| s.span_id == first.span_id), "kept at its start");
    // Not a poll, or a pod member: never decided at the start.
    let run = start_of(new_span_id(), &kubelet, "runtime.v1.RuntimeService/RunPodSandbox", 200);
    assert_eq!(c.begin(&run, &mut out), Begun::Tracked);
    let image = start_of(new_span_id(), &kubelet, "runtime.v1.ImageService/ImageStatus", 200);
    assert_eq!(c.begin(&image, &mut out), Begun::Tracked);
    let third = start_of(new_span_id(), &kubelet, poll, 300);
    assert_eq!(c.begin(&third, &mut out), Begun::SampledOut);
    // The server of the poll makes a call on another intercept: the poll may parent it.
    let below = start_of(new_span_id(), &conn("other", 20, 30), "x/Y", 310);
    assert_eq!(c.begin(&below, &mut out), Begun::Tracked);
    assert_eq!(c.thin_open(), 0);
    assert!(c.thin_ended(third.span_id), "promoted: built whole");
    // Now that its server is a client, a poll is no longer decided at its start.
    let fourth = start_of(new_span_id(), &kubelet, poll, 400);
    assert_eq!(c.begin(&fourth, &mut out), Begun::Tracked);
}
