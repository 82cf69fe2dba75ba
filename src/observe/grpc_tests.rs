use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::trace::call::{CallSink, Clock, ConnMeta};
use crate::wire::testutil::{Segment, capture_path, load_capture};

/// Collects what a session hands over.
#[derive(Default)]
pub struct Collect {
    pub started: Mutex<Vec<CallStart>>,
    pub ended: Mutex<Vec<Call>>,
    pub events: Mutex<Vec<StreamEvent>>,
}

impl CallSink for Collect {
    fn started(&self, call: &CallStart) {
        self.started.lock().unwrap().push(call.clone());
    }
    fn ended(&self, call: Call) {
        self.ended.lock().unwrap().push(call);
    }
    fn event(&self, event: StreamEvent) {
        self.events.lock().unwrap().push(event);
    }
}

fn conn(capture: bool) -> Arc<ConnMeta> {
    Arc::new(ConnMeta {
        id: 1,
        service: Arc::from("containerd"),
        transport: "unix",
        listen: "unix:///tap.sock".into(),
        upstream: "unix:///up.sock".into(),
        client: None,
        server: None,
        capture_payloads: capture,
    })
}

/// A gRPC session on a connection of its own, and the sink its calls go to.
fn session(capture: bool) -> (Arc<Collect>, GrpcSession) {
    let sink = Arc::new(Collect::default());
    let ctx = SessionCtx {
        conn: conn(capture),
        sink: sink.clone(),
        clock: Clock::new(),
    };
    (sink, GrpcSession::new(ctx, Schema::builtin()))
}

/// Replay a recorded connection through a gRPC session, then close it.
fn replay(file: &str, capture: bool) -> Arc<Collect> {
    let (sink, mut session) = session(capture);
    let t0 = Instant::now();
    let mut at = t0;
    for (dir, seg) in load_capture(&capture_path(file)) {
        at += Duration::from_micros(10);
        match seg {
            Segment::Data(bytes) => session.data(dir, at, Bytes::from(bytes)),
            Segment::Eof => session.eof(dir, at),
        }
    }
    session.closed(at + Duration::from_micros(10));
    assert_eq!(session.gave_up(), None);
    sink
}

fn attr<'a>(call: &'a Call, key: &str) -> Option<&'a AttrValue> {
    call.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

fn s(v: &str) -> Option<AttrValue> {
    Some(AttrValue::Str(v.to_string()))
}

fn calls<'a>(ended: &'a [Call], name: &str) -> Vec<&'a Call> {
    ended.iter().filter(|c| c.name == name).collect()
}

#[test]
fn every_started_call_ends_once_with_sane_times() {
    for file in [
        "dockerd-to-containerd.jsonl",
        "ctr-run.jsonl",
        "ctr-images-import.jsonl",
        "cri-pod-lifecycle.jsonl",
        "ctr-containers-create-duplicate.jsonl",
        "dockerd-to-containerd-plugins.jsonl",
    ] {
        let sink = replay(file, false);
        let started = sink.started.lock().unwrap();
        let ended = sink.ended.lock().unwrap();
        assert_eq!(started.len(), ended.len(), "{file}");
        assert!(!ended.is_empty(), "{file}");
        for call in ended.iter() {
            assert!(call.start <= call.end, "{file} {}", call.name);
            assert_eq!(started.iter().filter(|s| s.span_id == call.span_id).count(), 1);
        }
    }
}

#[test]
fn docker_start_calls_carry_namespace_and_container_id() {
    let sink = replay("dockerd-to-containerd.jsonl", false);
    let ended = sink.ended.lock().unwrap();
    let create = calls(&ended, "containerd.services.containers.v1.Containers/Create");
    assert!(!create.is_empty());
    let id = attr(create[0], "container.id").cloned().expect("container.id");
    let AttrValue::Str(id_str) = &id else { panic!() };
    assert_eq!(id_str.len(), 64);
    assert_eq!(attr(create[0], "containerd.namespace"), s("moby").as_ref());
    assert_eq!(attr(create[0], "rpc.response.status_code"), s("OK").as_ref());
    assert_eq!(attr(create[0], "rpc.system.name"), s("grpc").as_ref());
    for name in [
        "containerd.services.tasks.v1.Tasks/Create",
        "containerd.services.tasks.v1.Tasks/Start",
    ] {
        let c = calls(&ended, name);
        assert!(c.iter().any(|c| attr(c, "container.id") == Some(&id)), "{name}");
    }
    // Tasks/Get after exit: NOT_FOUND is normal traffic, not a server error.
    let get = calls(&ended, "containerd.services.tasks.v1.Tasks/Get");
    let missing: Vec<_> = get
        .iter()
        .filter(|c| attr(c, "rpc.response.status_code") == s("NOT_FOUND").as_ref())
        .collect();
    assert!(!missing.is_empty());
    assert!(missing.iter().all(|c| c.status == SpanStatus::Unset));
    // The event subscription is long-lived and delivered events as event spans.
    let sub = calls(&ended, "containerd.services.events.v1.Events/Subscribe");
    assert_eq!(sub.len(), 1);
    assert_eq!(sub[0].shape, Shape::LongLived);
    let events = sink.events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.name == "event /tasks/start" && e.subscription == sub[0].span_id),
        "{:?}",
        events.iter().map(|e| &e.name).collect::<Vec<_>>()
    );
}

#[test]
fn already_exists_is_recorded_with_its_message_but_is_not_a_server_error() {
    let sink = replay("ctr-containers-create-duplicate.jsonl", false);
    let ended = sink.ended.lock().unwrap();
    let prepare = calls(&ended, "containerd.services.snapshots.v1.Snapshots/Prepare");
    let failed: Vec<_> = prepare
        .iter()
        .filter(|c| attr(c, "rpc.response.status_code") == s("ALREADY_EXISTS").as_ref())
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(matches!(attr(failed[0], GRPC_MESSAGE), Some(AttrValue::Str(m)) if m.contains("already exists")));
    assert_eq!(failed[0].status, SpanStatus::Unset);
}

#[test]
fn cri_pod_lifecycle_attributes_and_a_failing_pull_is_an_error() {
    let sink = replay("cri-pod-lifecycle.jsonl", false);
    let ended = sink.ended.lock().unwrap();
    let run = calls(&ended, "runtime.v1.RuntimeService/RunPodSandbox");
    assert_eq!(run.len(), 1);
    assert_eq!(attr(run[0], "k8s.pod.name"), s("fixture-pod").as_ref());
    assert_eq!(attr(run[0], "k8s.namespace.name"), s("fixture-ns").as_ref());
    assert_eq!(attr(run[0], "k8s.pod.uid"), s("fixture-uid-1").as_ref());
    assert!(attr(run[0], "cri.pod_sandbox.id").is_some());
    assert!(
        attr(run[0], "containerd.namespace").is_none(),
        "CRI calls carry no namespace header"
    );
    let create = calls(&ended, "runtime.v1.RuntimeService/CreateContainer");
    assert_eq!(attr(create[0], "k8s.container.name"), s("fixture-ctr").as_ref());
    assert_eq!(
        attr(create[0], "container.image.name"),
        s("registry.k8s.io/pause").as_ref()
    );
    assert!(attr(create[0], "container.id").is_some());
    let pull = calls(&ended, "runtime.v1.ImageService/PullImage");
    assert_eq!(pull.len(), 1);
    assert_eq!(attr(pull[0], "rpc.response.status_code"), s("UNKNOWN").as_ref());
    assert!(matches!(&pull[0].status, SpanStatus::Error(m) if !m.is_empty()));
}

#[test]
fn no_secret_reaches_a_call_even_with_payload_capture() {
    for capture in [false, true] {
        let sink = replay("cri-pod-lifecycle.jsonl", capture);
        let everything = format!("{:?} {:?}", sink.ended.lock().unwrap(), sink.started.lock().unwrap());
        for secret in ["not-a-real-password", "not-a-real-secret", "fixture-user"] {
            assert!(!everything.contains(secret), "{secret} leaked (capture {capture})");
        }
        if capture {
            assert!(everything.contains("DB_PASSWORD"), "env names are kept");
        }
    }
}

#[test]
fn grpc_message_is_percent_decoded() {
    assert_eq!(percent_decode("a%20b%3Ac"), "a b:c");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%e2%82"), "\u{fffd}");
    assert_eq!(percent_decode("é%4"), "é%4");
}

/// Regression (fuzz target `grpc_session`): a session dropped without `closed` (its observer
/// task cancelled) never ended its open calls; now they end, once, as incomplete.
#[test]
fn dropped_session_ends_its_open_calls() {
    let (sink, mut session) = session(false);
    let mut at = Instant::now();
    // The plugins connection's Events/Subscribe never ends; half-closes are left out.
    for (dir, seg) in load_capture(&capture_path("dockerd-to-containerd-plugins.jsonl")) {
        at += Duration::from_micros(10);
        if let Segment::Data(bytes) = seg {
            session.data(dir, at, Bytes::from(bytes));
        }
    }
    let open = sink.started.lock().unwrap().len() - sink.ended.lock().unwrap().len();
    assert!(open > 0, "the capture should leave a call open");
    drop(session);
    let started = sink.started.lock().unwrap();
    let ended = sink.ended.lock().unwrap();
    assert_eq!(started.len(), ended.len());
    assert_eq!(ended.iter().filter(|c| c.incomplete).count(), open);
    for call in ended.iter() {
        assert_eq!(started.iter().filter(|s| s.span_id == call.span_id).count(), 1);
    }
}

/// A message over the decode cap is skipped (the call is still a span) and handed over once
/// for /metrics as `too_large`; messages skipped for want of interest are not losses.
#[test]
fn skipped_messages_are_handed_over_by_reason_once() {
    use crate::wire::h2::testutil as t;
    let (sink, mut session) = session(false);
    let block = t::literal_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/runtime.v1.RuntimeService/RunPodSandbox"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
    ]);
    let mut c2s = t::client_start();
    c2s.extend(t::headers(1, 0, &block));
    c2s.extend(t::data(1, 0, &t::grpc_msg(false, &[]))); // nothing to skip
    let big = t::grpc_msg(false, &vec![0u8; crate::wire::grpc::DEFAULT_MAX_MESSAGE + 1]);
    for piece in big.chunks(16 * 1024) {
        c2s.extend(t::data(1, 0, piece));
    }
    let at = Instant::now();
    session.data(Direction::ClientToServer, at, Bytes::from(c2s));
    let mut reported = Vec::new();
    session.take_skipped(&mut |label, n| reported.push((label, n)));
    assert_eq!(reported, [("too_large", 1)]);
    session.take_skipped(&mut |label, n| reported.push((label, n)));
    assert_eq!(reported.len(), 1);
    session.closed(at);
    assert_eq!(sink.ended.lock().unwrap().len(), 1);
}
