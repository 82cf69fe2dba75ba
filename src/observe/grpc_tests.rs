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
    /// Sample every call out at its start (as the tracer does a thinned poll), keeping at
    /// the end only those that failed.
    pub thin: std::sync::atomic::AtomicBool,
    /// Calls sampled out at their start as they ended: name and whether they failed.
    pub thin_ends: Mutex<Vec<(String, bool)>>,
}

impl CallSink for Collect {
    fn started(&self, call: &CallStart) {
        self.started.lock().unwrap().push(call.clone());
    }
    fn begin(&self, call: &CallStart) -> Begun {
        if self.thin.load(std::sync::atomic::Ordering::Relaxed) {
            return Begun::SampledOut;
        }
        self.started(call);
        Begun::Tracked
    }
    fn thin_ended(&self, call: &ThinEnd<'_>) -> bool {
        self.thin_ends.lock().unwrap().push((call.name.to_string(), call.error));
        call.error
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
        long_lived: Default::default(),
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

/// Regression (fuzz target `grpc_session`): a session dropped without `closed` ends its calls
/// at `Instant::now()`; a call that started at a later instant (fed instants are the caller's)
/// ended before it started. Now it ends when it started, never earlier.
#[test]
fn a_call_dropped_before_its_start_instant_ends_no_earlier_than_it_started() {
    let (sink, mut session) = session(false);
    let mut at = Instant::now() + Duration::from_secs(3600);
    for (dir, seg) in load_capture(&capture_path("dockerd-to-containerd-plugins.jsonl")) {
        at += Duration::from_micros(10);
        if let Segment::Data(bytes) = seg {
            session.data(dir, at, Bytes::from(bytes));
        }
    }
    drop(session);
    let ended = sink.ended.lock().unwrap();
    assert!(ended.iter().any(|c| c.incomplete), "a call was open at the drop");
    for call in ended.iter() {
        assert!(call.end >= call.start, "{} ends before it starts", call.name);
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

// ---- Crafted connections: what the recordings lack. ----

use crate::wire::h2::frame::flags;
use crate::wire::h2::testutil as t;

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;
const VERSION: &str = "/containerd.services.version.v1.Version/Version";
const WRITE: &str = "/containerd.services.content.v1.Content/Write";
const SUBSCRIBE: &str = "/containerd.services.events.v1.Events/Subscribe";

/// A crafted connection fed to a session frame by frame, prefaces exchanged.
struct Wire {
    sink: Arc<Collect>,
    session: GrpcSession,
    at: Instant,
}

impl Wire {
    fn new(capture: bool) -> Wire {
        let (sink, session) = session(capture);
        let mut w = Wire {
            sink,
            session,
            at: Instant::now(),
        };
        w.c(t::client_start())
            .s(t::settings(&[]))
            .c(t::settings_ack())
            .s(t::settings_ack());
        w
    }
    fn c(&mut self, bytes: Vec<u8>) -> &mut Wire {
        self.at += Duration::from_micros(10);
        self.session.data(C2S, self.at, Bytes::from(bytes));
        self
    }
    fn s(&mut self, bytes: Vec<u8>) -> &mut Wire {
        self.at += Duration::from_micros(10);
        self.session.data(S2C, self.at, Bytes::from(bytes));
        self
    }
    /// Request headers of stream `id` for `path` (END_STREAM when `end`).
    fn request(&mut self, id: u32, path: &str, end: bool) -> &mut Wire {
        let block = t::literal_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("containerd-namespace", "k8s.io"),
        ]);
        let flags = if end { flags::END_STREAM } else { 0 };
        self.c(t::headers(id, flags, &block))
    }
    /// `payload` as DATA frames of at most 16 KiB (the default max frame size).
    fn c_data(&mut self, id: u32, payload: &[u8], end: bool) -> &mut Wire {
        let pieces: Vec<&[u8]> = payload.chunks(16_384).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let last = end && i + 1 == pieces.len();
            self.c(t::data(id, if last { flags::END_STREAM } else { 0 }, piece));
        }
        self
    }
    fn response_headers(&mut self, id: u32) -> &mut Wire {
        let block = t::literal_block(&[(":status", "200"), ("content-type", "application/grpc")]);
        self.s(t::headers(id, 0, &block))
    }
    fn trailers(&mut self, id: u32, status: &str, message: &str) -> &mut Wire {
        let block = t::literal_block(&[("grpc-status", status), ("grpc-message", message)]);
        self.s(t::headers(id, flags::END_STREAM, &block))
    }
    /// A whole unary call with an empty request and response and the given trailers.
    fn unary(&mut self, id: u32, path: &str, status: &str, message: &str) -> &mut Wire {
        self.request(id, path, false)
            .c(t::data(id, flags::END_STREAM, &t::grpc_msg(false, &[])))
            .response_headers(id)
            .s(t::data(id, 0, &t::grpc_msg(false, &[])))
            .trailers(id, status, message)
    }
    fn skipped(&mut self) -> Vec<(&'static str, u64)> {
        let mut reported = Vec::new();
        self.session.take_skipped(&mut |label, n| reported.push((label, n)));
        reported
    }
    fn close(&mut self) -> Vec<Call> {
        self.session.closed(self.at);
        self.sink.ended.lock().unwrap().clone()
    }
}

/// Protobuf wire format, for crafted payloads: a length-delimited field.
fn pb_bytes(field: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pb_varint_raw(u64::from(field << 3 | 2), &mut out);
    pb_varint_raw(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// A varint field.
fn pb_varint(field: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    pb_varint_raw(u64::from(field << 3), &mut out);
    pb_varint_raw(value, &mut out);
    out
}

fn pb_varint_raw(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn int(call: &Call, key: &str) -> Option<i64> {
    match attr(call, key) {
        Some(AttrValue::Int(i)) => Some(*i),
        _ => None,
    }
}

/// The issue: a call whose method is not in the descriptor pool is still a span, named from
/// its `:path`, with no payload attributes; `rpc.method` is the conventions' `_OTHER` with
/// the path in `rpc.method_original`.
#[test]
fn an_unknown_method_is_a_span_named_from_its_path_without_payload_attributes() {
    let mut w = Wire::new(true);
    // A payload that would give attributes if it were decoded as anything.
    let payload = pb_bytes(1, &pb_bytes(1, &pb_bytes(1, b"fixture-pod")));
    w.request(1, "/acme.widgets.v1.Widgets/Frob", false)
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, &payload)))
        .response_headers(1)
        .s(t::data(1, 0, &t::grpc_msg(false, &payload)))
        .trailers(1, "0", "");
    let ended = w.close();
    assert_eq!(ended.len(), 1);
    let call = &ended[0];
    assert_eq!(call.name, "acme.widgets.v1.Widgets/Frob");
    assert_eq!(attr(call, "rpc.method"), s("_OTHER").as_ref());
    assert_eq!(
        attr(call, "rpc.method_original"),
        s("acme.widgets.v1.Widgets/Frob").as_ref()
    );
    assert_eq!(attr(call, "rpc.response.status_code"), s("OK").as_ref());
    let mut keys: Vec<&str> = call.attributes.iter().map(|a| a.key.as_ref()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "containerd.namespace",
            "rpc.method",
            "rpc.method_original",
            "rpc.response.status_code",
            "rpc.system.name",
            "runtime_tap.request.bytes",
            "runtime_tap.request.messages",
            "runtime_tap.response.bytes",
            "runtime_tap.response.messages",
        ]
    );
    assert!(call.events.is_empty(), "no payload capture without a schema");
    assert_eq!(int(call, names::REQUEST_MESSAGES), Some(1));
    // Every method of the recorded connections is in the pool: `rpc.method` is the span name.
    for file in ["ctr-run.jsonl", "ctr-images-import.jsonl", "cri-pod-lifecycle.jsonl"] {
        let sink = replay(file, false);
        for call in sink.ended.lock().unwrap().iter() {
            assert_eq!(attr(call, "rpc.method"), s(&call.name).as_ref(), "{file}");
            assert!(attr(call, "rpc.method_original").is_none(), "{file} {}", call.name);
        }
    }
}

/// Sizes: message counts and the bytes of their length prefixes, per direction, across
/// messages split over DATA frames and several messages in one frame.
#[test]
fn request_and_response_sizes_are_exact() {
    let mut w = Wire::new(false);
    let first = t::grpc_msg(false, &[1u8; 10]);
    let mut req = first.clone();
    req.extend(t::grpc_msg(false, &[])); // an empty message counts, with 0 bytes
    w.request(1, VERSION, false)
        .c(t::data(1, 0, &req[..3]))
        .c(t::data(1, 0, &req[3..12]))
        .c(t::data(1, flags::END_STREAM, &req[12..]))
        .response_headers(1);
    let mut resp = t::grpc_msg(false, &[2u8; 300]);
    resp.extend(t::grpc_msg(false, &[3u8; 7]));
    resp.extend(t::grpc_msg(false, &[4u8; 5]));
    for piece in resp.chunks(100) {
        w.s(t::data(1, 0, piece));
    }
    w.trailers(1, "0", "");
    let ended = w.close();
    let call = &ended[0];
    assert_eq!(int(call, names::REQUEST_MESSAGES), Some(2));
    assert_eq!(int(call, names::REQUEST_BYTES), Some(10));
    assert_eq!(int(call, names::RESPONSE_MESSAGES), Some(3));
    assert_eq!(int(call, names::RESPONSE_BYTES), Some(312));
    assert!(!call.incomplete);
}

/// All 17 codes through the session: the canonical name, and span status Error (with the
/// message as description) exactly for the conventions' server errors. A code gRPC does not
/// define is UNKNOWN.
#[test]
fn every_status_code_has_its_name_and_only_server_errors_are_errors() {
    let mut w = Wire::new(false);
    for code in 0..19u32 {
        let status = if code < 17 { code } else { 17 + code * 40 };
        w.unary(2 * code + 1, VERSION, &status.to_string(), &format!("failure%20{code}"));
    }
    let ended = w.close();
    assert_eq!(ended.len(), 19);
    for (code, call) in ended.iter().enumerate() {
        // Expected from tonic, not from our own table: codes past the last are UNKNOWN.
        let tonic = tonic::Code::from_i32(if code < 17 { code as i32 } else { 17 + code as i32 * 40 });
        let name = grpc_status::tonic_name(tonic as i32);
        let error = grpc_status::CONVENTIONS_SERVER_ERRORS.contains(&tonic);
        assert_eq!(attr(call, "rpc.response.status_code"), s(&name).as_ref(), "code {code}");
        let message = format!("failure {code}");
        if error {
            assert_eq!(call.status, SpanStatus::Error(message.clone()), "code {code}");
        } else {
            assert_eq!(call.status, SpanStatus::Unset, "code {code}");
        }
        let recorded = if code == 0 { None } else { s(&message) };
        assert_eq!(attr(call, GRPC_MESSAGE).cloned(), recorded, "code {code}");
    }
}

/// A reset with no grpc-status gets the status gRPC maps its HTTP/2 code to; a reset after
/// the trailers keeps the trailers' status.
#[test]
fn a_reset_without_status_maps_its_http2_code() {
    // (HTTP/2 code, sent by the server, expected code, error status)
    let table = [
        (0x0, true, "INTERNAL", true),
        (0x0, false, "CANCELLED", false),
        (0x1, true, "INTERNAL", true),
        (0x2, false, "INTERNAL", true),
        (0x3, true, "INTERNAL", true),
        (0x7, true, "UNAVAILABLE", true),
        (0x8, false, "CANCELLED", false),
        (0x8, true, "CANCELLED", false),
        (0xb, true, "RESOURCE_EXHAUSTED", false),
        (0xc, true, "PERMISSION_DENIED", false),
        (0xd, true, "INTERNAL", true),
    ];
    let mut w = Wire::new(false);
    for (i, (code, by_server, _, _)) in table.iter().enumerate() {
        let id = 2 * i as u32 + 1;
        w.request(id, VERSION, false);
        if *by_server {
            w.s(t::rst(id, *code));
        } else {
            w.c(t::rst(id, *code));
        }
    }
    let after = 2 * table.len() as u32 + 1;
    w.unary(after, VERSION, "5", "gone").s(t::rst(after, 0));
    let ended = w.close();
    assert_eq!(ended.len(), table.len() + 1);
    for (call, (code, by_server, name, error)) in ended.iter().zip(table) {
        let case = format!("code {code} by server {by_server}");
        assert_eq!(attr(call, "rpc.response.status_code"), s(name).as_ref(), "{case}");
        assert_eq!(matches!(call.status, SpanStatus::Error(_)), error, "{case}");
        assert!(!call.incomplete, "{case}");
    }
    assert_eq!(
        attr(&ended[table.len()], "rpc.response.status_code"),
        s("NOT_FOUND").as_ref()
    );
}

/// An HTTP status other than 200 without grpc-status (an intermediary answered) maps as gRPC
/// clients map it, whether the response ends or is reset.
#[test]
fn a_non_200_http_status_without_grpc_status_maps_to_a_grpc_code() {
    let table = [
        (400, "INTERNAL"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "UNIMPLEMENTED"),
        (429, "UNAVAILABLE"),
        (500, "UNKNOWN"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (504, "UNAVAILABLE"),
    ];
    let mut w = Wire::new(false);
    for (i, (status, _)) in table.iter().enumerate() {
        let id = 4 * i as u32 + 1;
        let block = t::literal_block(&[(":status", &status.to_string()), ("content-type", "text/plain")]);
        // Trailers-Only shape, no grpc-status.
        w.request(id, VERSION, true)
            .s(t::headers(id, flags::END_STREAM, &block));
        // Headers, then the stream reset.
        w.request(id + 2, VERSION, true)
            .s(t::headers(id + 2, 0, &block))
            .s(t::rst(id + 2, 2));
    }
    let ended = w.close();
    assert_eq!(ended.len(), 2 * table.len());
    for (pair, (status, name)) in ended.chunks(2).zip(table) {
        for call in pair {
            assert_eq!(
                attr(call, "rpc.response.status_code"),
                s(name).as_ref(),
                "http {status}"
            );
            let error = !matches!(name, "PERMISSION_DENIED" | "UNAUTHENTICATED");
            match &call.status {
                SpanStatus::Error(m) => assert!(error && m.contains(&status.to_string()), "http {status}: {m}"),
                other => assert!(!error, "http {status}: {other:?}"),
            }
        }
    }
}

/// A message over the cap whose stream ends before it does (reset, or the connection's end)
/// is counted as skipped, once, like one that completes.
#[test]
fn a_too_large_message_cut_by_a_reset_or_eof_is_counted() {
    let huge = [0u8, 0xff, 0xff, 0xff, 0xff];
    for by_reset in [true, false] {
        let mut w = Wire::new(false);
        let mut first = huge.to_vec();
        first.extend(vec![0xab; 16_000]);
        w.request(1, "/runtime.v1.RuntimeService/RunPodSandbox", false)
            .c(t::data(1, 0, &first))
            .c(t::data(1, 0, &[0xcd; 16_384]));
        assert_eq!(w.skipped(), [], "not over yet");
        assert!(w.session.buffered_bytes() < 1024);
        if by_reset {
            w.c(t::rst(1, 8));
        } else {
            w.session.eof(C2S, w.at);
            w.session.eof(S2C, w.at);
        }
        assert_eq!(w.skipped(), [("too_large", 1)], "reset {by_reset}");
        let ended = w.close();
        assert_eq!(w.skipped(), [], "counted once");
        assert_eq!(ended.len(), 1);
        assert_eq!(int(&ended[0], names::REQUEST_MESSAGES), Some(0));
    }
}

/// An envelope of containerd's event stream.
fn envelope(topic: &str) -> Vec<u8> {
    let mut e = pb_bytes(2, b"k8s.io");
    e.extend(pb_bytes(3, topic.as_bytes()));
    e
}

/// Under load shedding an event stream's delivered events are not decoded: they get no
/// event span, and each is counted (`event_shed`) instead of missing silently.
#[test]
fn events_shed_under_load_are_counted() {
    let mut w = Wire::new(false);
    w.request(1, SUBSCRIBE, false)
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, &[])))
        .response_headers(1)
        .s(t::data(1, 0, &t::grpc_msg(false, &envelope("/tasks/start"))));
    w.session.payloads(false);
    w.s(t::data(1, 0, &t::grpc_msg(false, &envelope("/tasks/exit"))))
        .s(t::data(1, 0, &t::grpc_msg(false, &envelope("/tasks/delete"))));
    w.session.payloads(true);
    w.s(t::data(1, 0, &t::grpc_msg(false, &envelope("/tasks/create"))));
    assert_eq!(w.skipped(), [(EVENT_SHED, 2)]);
    let events: Vec<String> = w.sink.events.lock().unwrap().iter().map(|e| e.name.clone()).collect();
    assert_eq!(events, ["event /tasks/start", "event /tasks/create"]);
    w.trailers(1, "0", "");
    let ended = w.close();
    assert_eq!(int(&ended[0], names::RESPONSE_MESSAGES), Some(4));
}

/// A WriteContentRequest with its digest and size.
fn write_request(total: u64, expected: &str, data: &[u8]) -> Vec<u8> {
    let mut m = pb_varint(1, 1); // WRITE
    m.extend(pb_bytes(2, b"ref-1"));
    m.extend(pb_varint(3, total));
    m.extend(pb_bytes(4, expected.as_bytes()));
    m.extend(pb_bytes(6, data));
    m
}

/// First value wins: once every request rule of a Content/Write has its value (digest and
/// size), the stream's later chunks are walked and counted, never buffered or decoded.
#[test]
fn content_write_chunks_are_not_decoded_once_the_rules_have_their_values() {
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    let mut w = Wire::new(false);
    let first = t::grpc_msg(false, &write_request(3 << 20, DIGEST, &[1u8; 1 << 20]));
    w.request(1, WRITE, false).c_data(1, &first, false);
    // The second chunk, half sent: were it decoded, its 1 MiB would be buffered by now.
    let second = t::grpc_msg(false, &write_request(3 << 20, "sha256:other", &[2u8; 1 << 20]));
    w.c_data(1, &second[..second.len() / 2], false);
    assert!(
        w.session.buffered_bytes() < 64 * 1024,
        "buffered {}",
        w.session.buffered_bytes()
    );
    w.c_data(1, &second[second.len() / 2..], false);
    let third = t::grpc_msg(false, &write_request(3 << 20, DIGEST, &[3u8; 1 << 20]));
    w.c_data(1, &third, true)
        .response_headers(1)
        .s(t::data(1, 0, &t::grpc_msg(false, &[])))
        .trailers(1, "0", "");
    assert_eq!(w.skipped(), [], "skipping what the rules no longer need is not a loss");
    let ended = w.close();
    let call = &ended[0];
    assert_eq!(
        attr(call, "containerd.content.digest"),
        s(DIGEST).as_ref(),
        "{:?}",
        call.attributes
    );
    assert_eq!(int(call, "containerd.content.size"), Some(3 << 20));
    assert_eq!(int(call, names::REQUEST_MESSAGES), Some(3));
    // With payload capture on, later messages are still decoded (capture wants them).
    let mut w = Wire::new(true);
    w.request(1, WRITE, false)
        .c_data(1, &t::grpc_msg(false, &write_request(3, DIGEST, b"abc")), false);
    w.c_data(1, &second[..second.len() / 2], false);
    assert!(
        w.session.buffered_bytes() >= 1 << 20,
        "buffered {}",
        w.session.buffered_bytes()
    );
}

/// RED labels stay bounded: 10,000 distinct unknown paths share `other`, and pool methods
/// seen after them keep their own names.
#[test]
fn unknown_methods_share_one_red_label_and_pool_methods_keep_theirs() {
    let red = crate::trace::red::Red::default();
    let mut w = Wire::new(false);
    let mut id = 1;
    for i in 0..10_000 {
        let path = format!("/acme.v1.S{}/M{i}", i % 7);
        w.request(id, &path, true).s(t::headers(
            id,
            flags::END_STREAM,
            &t::literal_block(&[(":status", "200"), ("grpc-status", "12")]),
        ));
        id += 2;
    }
    w.unary(id, VERSION, "0", "")
        .unary(id + 2, "/runtime.v1.RuntimeService/Version", "0", "");
    let ended = w.close();
    assert_eq!(ended.len(), 10_002);
    for call in &ended {
        red.record(call);
    }
    let mut out = String::new();
    red.render(&mut out);
    let mut labels: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("runtime_tap_call_duration_seconds_count"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(
        labels,
        [
            "containerd.services.version.v1.Version/Version",
            "other",
            "runtime.v1.RuntimeService/Version"
        ]
    );
    assert!(
        out.contains("method=\"other\",status=\"UNIMPLEMENTED\"} 10000"),
        "{out:.2000}"
    );
}

/// Issue 15, point 2: a poll sampled out at its start decodes no payload and builds no
/// attributes; one that fails is still built whole, payload attributes included.
#[test]
fn a_poll_sampled_out_at_its_start_decodes_nothing_unless_it_fails() {
    const STATUS: &str = "/runtime.v1.RuntimeService/ContainerStatus";
    const NAME: &str = "runtime.v1.RuntimeService/ContainerStatus";
    let poll = |w: &mut Wire, id: u32, status: &str| {
        w.request(id, STATUS, false)
            .c(t::data(
                id,
                flags::END_STREAM,
                &t::grpc_msg(false, &pb_bytes(1, b"c0ffee")),
            ))
            .response_headers(id)
            .s(t::data(
                id,
                0,
                &t::grpc_msg(false, &pb_bytes(1, &pb_bytes(1, b"c0ffee"))),
            ))
            .trailers(id, status, "boom");
    };
    // Tracked as always: its payloads are decoded for attributes (the counter counts).
    let mut w = Wire::new(false);
    poll(&mut w, 1, "0");
    assert!(w.session.extracted > 0);
    let tracked = w.close();
    assert_eq!(attr(&tracked[0], "container.id"), s("c0ffee").as_ref());

    let mut w = Wire::new(false);
    w.sink.thin.store(true, std::sync::atomic::Ordering::Relaxed);
    poll(&mut w, 1, "0");
    assert_eq!(w.session.extracted, 0, "a sampled-out poll decodes no payload");
    assert!(w.sink.ended.lock().unwrap().is_empty());
    assert_eq!(*w.sink.thin_ends.lock().unwrap(), [(NAME.to_string(), false)]);
    // The same poll failing (INTERNAL is a server error) is built whole at its end.
    poll(&mut w, 3, "13");
    let ended = w.close();
    assert_eq!(ended.len(), 1);
    let call = &ended[0];
    assert_eq!(call.name, NAME);
    assert!(matches!(call.status, SpanStatus::Error(_)), "{:?}", call.status);
    for (key, value) in [
        ("container.id", "c0ffee"),
        ("rpc.system.name", "grpc"),
        ("rpc.method", NAME),
        ("rpc.response.status_code", "INTERNAL"),
        ("containerd.namespace", "k8s.io"),
        (GRPC_MESSAGE, "boom"),
    ] {
        assert_eq!(attr(call, key), s(value).as_ref(), "{key}: {:?}", call.attributes);
    }
    assert_eq!(int(call, names::REQUEST_MESSAGES), Some(1));
    assert!(w.session.extracted > 0);
    assert_eq!(w.sink.started.lock().unwrap().len(), 0, "never started as tracked");
}
