//! Tests of the Docker session: the recorded docker CLI connections replayed chunk by chunk
//! (and byte by byte), and crafted exchanges for what the recordings lack.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS, CONTAINER_NAME, HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, URL_PATH, URL_QUERY, USER_AGENT_ORIGINAL,
};

use super::*;
use crate::trace::attr::AttrValue;
use crate::trace::call::{CallSink, Clock, ConnMeta};
use crate::trace::span::SpanStatus;
use crate::wire::testutil::{Segment, capture_files, capture_path, load_capture};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

const ID_02: &str = "e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb";
const ID_05: &str = "3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259";
const ID_12: &str = "88b20260f5f2fdb6e3243adadae96b2aadb66a9a4c92ec4785faf6c701ad77e3";
const EXEC_07: &str = "bf7cac96a972345dc1c1c6ecf21b80724df325d497df68f1cce2d302ea4f56ff";

#[derive(Default)]
struct Collect {
    started: Mutex<Vec<CallStart>>,
    ended: Mutex<Vec<Call>>,
    events: Mutex<Vec<StreamEvent>>,
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

impl Collect {
    fn calls(&self) -> Vec<Call> {
        self.ended.lock().unwrap().clone()
    }

    fn call(&self, name: &str) -> Call {
        let calls = self.calls();
        calls
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no call {name} in {:?}", names_of(&calls)))
            .clone()
    }

    /// Everything the sink got, Debug-formatted.
    fn everything(&self) -> String {
        format!(
            "{:?}\n{:?}\n{:?}",
            self.started.lock().unwrap(),
            self.ended.lock().unwrap(),
            self.events.lock().unwrap()
        )
    }

    /// Exactly one end per start, same span ids, start <= end.
    fn check_accounting(&self) {
        let started = self.started.lock().unwrap();
        let ended = self.ended.lock().unwrap();
        assert_eq!(started.len(), ended.len(), "started {started:?}\nended {ended:?}");
        for s in started.iter() {
            let n = ended.iter().filter(|c| c.span_id == s.span_id).count();
            assert_eq!(n, 1, "{} ended {n} times", s.name);
        }
        for c in ended.iter() {
            assert!(c.start <= c.end, "{} ends before it starts", c.name);
        }
    }
}

fn names_of(calls: &[Call]) -> Vec<&str> {
    calls.iter().map(|c| c.name.as_str()).collect()
}

fn attr<'a>(call: &'a Call, key: &str) -> Option<&'a AttrValue> {
    call.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

fn str_attr<'a>(call: &'a Call, key: &str) -> Option<&'a str> {
    match attr(call, key) {
        Some(AttrValue::Str(s)) => Some(s),
        None => None,
        other => panic!("{key} is {other:?}"),
    }
}

fn int_attr(call: &Call, key: &str) -> Option<i64> {
    match attr(call, key) {
        Some(AttrValue::Int(i)) => Some(*i),
        None => None,
        other => panic!("{key} is {other:?}"),
    }
}

fn conn(capture_payloads: bool) -> Arc<ConnMeta> {
    Arc::new(ConnMeta {
        id: 1,
        service: Arc::from("dockerd"),
        transport: "unix",
        listen: "/run/tap/docker.sock".into(),
        upstream: "/run/docker.sock".into(),
        client: None,
        server: None,
        capture_payloads,
    })
}

/// A session fed with increasing fake instants, one millisecond per step.
struct Rig {
    sink: Arc<Collect>,
    session: HttpSession,
    t0: Instant,
    step: u32,
}

impl Rig {
    fn new(ids: &Arc<DockerIds>, capture_payloads: bool) -> Rig {
        let sink = Arc::new(Collect::default());
        let ctx = SessionCtx {
            conn: conn(capture_payloads),
            sink: sink.clone(),
            clock: Clock::new(),
            long_lived: Default::default(),
        };
        Rig {
            sink,
            session: HttpSession::new(ctx, ids.clone()),
            t0: Instant::now(),
            step: 0,
        }
    }

    fn tick(&mut self) -> Instant {
        self.step += 1;
        self.t0 + Duration::from_millis(u64::from(self.step))
    }

    fn send(&mut self, dir: Direction, data: impl AsRef<[u8]>) -> &mut Rig {
        let at = self.tick();
        self.session.data(dir, at, Bytes::copy_from_slice(data.as_ref()));
        self
    }

    fn eof(&mut self, dir: Direction) -> &mut Rig {
        let at = self.tick();
        self.session.eof(dir, at);
        self
    }

    fn close(&mut self) -> &mut Rig {
        let at = self.tick();
        self.session.closed(at);
        self
    }

    fn wall(&self, step: u32) -> SystemTime {
        self.session
            .ctx
            .clock
            .wall(self.t0 + Duration::from_millis(u64::from(step)))
    }
}

/// Replays one recorded connection (`bytewise`: one byte per chunk), then closes it.
fn replay_with(file: &str, ids: &Arc<DockerIds>, bytewise: bool) -> Arc<Collect> {
    let mut rig = Rig::new(ids, false);
    for (dir, seg) in load_capture(&capture_path(&format!("docker-cli/{file}"))) {
        match seg {
            Segment::Data(d) if bytewise => {
                for b in d {
                    rig.send(dir, [b]);
                }
            }
            Segment::Data(d) => {
                rig.send(dir, d);
            }
            Segment::Eof => {
                rig.eof(dir);
            }
        }
    }
    rig.close();
    rig.sink.check_accounting();
    rig.sink.clone()
}

fn replay(file: &str, ids: &Arc<DockerIds>) -> Arc<Collect> {
    replay_with(file, ids, false)
}

#[test]
fn every_capture_accounts_for_every_call_chunked_and_bytewise() {
    let files = capture_files("docker-cli");
    assert!(files.len() >= 15);
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let chunked = replay_with(&name, &Arc::new(DockerIds::new()), false);
        let bytewise = replay_with(&name, &Arc::new(DockerIds::new()), true);
        let strip = |calls: Vec<Call>| -> Vec<(String, Vec<Attr>, SpanStatus, bool, Shape)> {
            calls
                .into_iter()
                .map(|c| (c.name, c.attributes, c.status, c.incomplete, c.shape))
                .collect()
        };
        assert!(!chunked.calls().is_empty(), "{name}");
        assert_eq!(strip(chunked.calls()), strip(bytewise.calls()), "{name}");
    }
}

#[test]
fn version() {
    let sink = replay("01-version.jsonl", &Arc::new(DockerIds::new()));
    assert_eq!(names_of(&sink.calls()), ["HEAD /_ping", "GET /version"]);
    let ping = sink.call("HEAD /_ping");
    assert_eq!(int_attr(&ping, HTTP_RESPONSE_STATUS_CODE), Some(200));
    assert_eq!(str_attr(&ping, names::DOCKER_API_VERSION), None);
    assert_eq!(str_attr(&ping, URL_PATH), Some("/_ping"));
    assert_eq!(str_attr(&ping, HTTP_REQUEST_METHOD), Some("HEAD"));
    assert_eq!(
        str_attr(&ping, USER_AGENT_ORIGINAL),
        Some("Docker-Client/28.2.2 (linux)")
    );
    let version = sink.call("GET /version");
    assert_eq!(int_attr(&version, HTTP_RESPONSE_STATUS_CODE), Some(200));
    assert_eq!(str_attr(&version, names::DOCKER_API_VERSION), Some("1.41"));
    assert_eq!(str_attr(&version, HTTP_ROUTE), Some("/version"));
    assert_eq!(str_attr(&version, URL_PATH), Some("/v1.41/version"));
    assert_eq!(int_attr(&version, names::RESPONSE_BYTES), Some(792));
    assert_eq!(version.status, SpanStatus::Unset);
    assert!(!version.incomplete);
    assert_eq!(version.shape, Shape::Unary);
}

#[test]
fn run_create_wait_attach_start() {
    let ids = Arc::new(DockerIds::new());
    let sink = replay("02-run-create-wait.jsonl", &ids);
    let create = sink.call("POST /containers/create");
    assert_eq!(str_attr(&create, CONTAINER_IMAGE_NAME), Some("bb"));
    assert_eq!(
        attr(&create, CONTAINER_IMAGE_TAGS),
        Some(&AttrValue::StrList(vec!["latest".into()]))
    );
    assert_eq!(str_attr(&create, CONTAINER_ID), Some(ID_02));
    assert_eq!(int_attr(&create, HTTP_RESPONSE_STATUS_CODE), Some(201));
    assert_eq!(int_attr(&create, names::REQUEST_BYTES), Some(1474));
    let wait = sink.call("POST /containers/{id}/wait");
    assert_eq!(wait.shape, Shape::LongLived);
    assert_eq!(str_attr(&wait, CONTAINER_ID), Some(ID_02));
    assert_eq!(str_attr(&wait, URL_QUERY), Some("condition=removed"));
    assert!(!wait.incomplete);
    let started = sink.started.lock().unwrap().clone();
    assert_eq!(
        started
            .iter()
            .find(|s| s.name == "POST /containers/{id}/wait")
            .unwrap()
            .shape,
        Shape::LongLived
    );

    let sink = replay("03-run-attach.jsonl", &ids);
    let attach = sink.call("POST /containers/{id}/attach");
    assert_eq!(attach.shape, Shape::LongLived);
    assert!(!attach.incomplete);
    assert_eq!(str_attr(&attach, CONTAINER_ID), Some(ID_02));
    assert_eq!(int_attr(&attach, HTTP_RESPONSE_STATUS_CODE), Some(101));
    assert_eq!(int_attr(&attach, names::RESPONSE_BYTES), Some(11));
    assert_eq!(int_attr(&attach, names::REQUEST_BYTES), Some(0));
    // Segments: head, 101, c2s eof, output, s2c eof (the close, step 5).
    assert_eq!(attach.start, sink_wall(&sink, 1));
    assert_eq!(attach.end, sink_wall(&sink, 5));

    let sink = replay("04-run-start.jsonl", &ids);
    let start = sink.call("POST /containers/{id}/start");
    assert_eq!(str_attr(&start, CONTAINER_ID), Some(ID_02));
    assert_eq!(int_attr(&start, HTTP_RESPONSE_STATUS_CODE), Some(204));
    assert_eq!(start.shape, Shape::Unary);
}

/// The wall time of fake step `n` of the replay behind `sink` (the rig's clock and t0 are
/// not kept, so recompute from the first call: step 1 is its start).
fn sink_wall(sink: &Collect, n: u32) -> SystemTime {
    let first = sink.started.lock().unwrap()[0].start;
    first + Duration::from_millis(u64::from(n - 1))
}

#[test]
fn create_then_start_share_the_id_and_a_name_resolves() {
    let ids = Arc::new(DockerIds::new());
    let sink = replay("05-create.jsonl", &ids);
    let create = sink.call("POST /containers/create");
    assert_eq!(str_attr(&create, CONTAINER_ID), Some(ID_05));
    assert_eq!(str_attr(&create, CONTAINER_NAME), Some("fixture-c1"));
    assert_eq!(str_attr(&create, URL_QUERY), Some("name=fixture-c1"));
    let sink = replay("06-start.jsonl", &ids);
    assert_eq!(
        str_attr(&sink.call("POST /containers/{id}/start"), CONTAINER_ID),
        Some(ID_05)
    );

    // `docker start fixture-c1`, and by a short prefix.
    let mut rig = Rig::new(&ids, false);
    rig.send(
        C2S,
        "POST /v1.41/containers/fixture-c1/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n",
    )
    .send(S2C, "HTTP/1.1 204 No Content\r\n\r\n")
    .send(
        C2S,
        "POST /v1.41/containers/3439457a/stop HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n",
    )
    .send(S2C, "HTTP/1.1 204 No Content\r\n\r\n")
    .send(
        C2S,
        "POST /v1.41/containers/other/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n",
    )
    .send(S2C, "HTTP/1.1 204 No Content\r\n\r\n")
    .close();
    let calls = rig.sink.calls();
    assert_eq!(str_attr(&calls[0], CONTAINER_ID), Some(ID_05));
    assert_eq!(str_attr(&calls[0], names::CONTAINER_REF), None);
    assert_eq!(str_attr(&calls[1], CONTAINER_ID), Some(ID_05));
    assert_eq!(str_attr(&calls[2], CONTAINER_ID), None);
    assert_eq!(str_attr(&calls[2], names::CONTAINER_REF), Some("other"));
    rig.sink.check_accounting();
}

#[test]
fn exec_create_and_start() {
    let ids = Arc::new(DockerIds::new());
    let sink = replay("07-exec-create.jsonl", &ids);
    let inspect = sink.call("GET /containers/{id}/json");
    assert_eq!(str_attr(&inspect, CONTAINER_ID), Some(ID_05));
    let create = sink.call("POST /containers/{id}/exec");
    assert_eq!(str_attr(&create, names::CONTAINER_EXEC_ID), Some(EXEC_07));
    assert_eq!(str_attr(&create, CONTAINER_ID), Some(ID_05));
    let exec_inspect = sink.call("GET /exec/{id}/json");
    assert_eq!(str_attr(&exec_inspect, names::CONTAINER_EXEC_ID), Some(EXEC_07));
    assert_eq!(str_attr(&exec_inspect, CONTAINER_ID), Some(ID_05));

    let sink = replay("08-exec-start.jsonl", &ids);
    let start = sink.call("POST /exec/{id}/start");
    assert_eq!(str_attr(&start, names::CONTAINER_EXEC_ID), Some(EXEC_07));
    assert_eq!(str_attr(&start, CONTAINER_ID), Some(ID_05));
    assert_eq!(start.shape, Shape::LongLived);
    assert_eq!(sink.started.lock().unwrap()[0].shape, Shape::LongLived);
    assert!(!start.incomplete);
    assert_eq!(int_attr(&start, names::REQUEST_BYTES), Some(29));
    assert_eq!(int_attr(&start, names::RESPONSE_BYTES), Some(8 + 10));
}

#[test]
fn stop_and_rm_forget_the_container() {
    let ids = Arc::new(DockerIds::new());
    replay("05-create.jsonl", &ids);
    assert_eq!(ids.resolve("fixture-c1").as_deref(), Some(ID_05));
    let sink = replay("09-stop.jsonl", &ids);
    let stop = sink.call("POST /containers/{id}/stop");
    assert_eq!(str_attr(&stop, URL_QUERY), Some("t=1"));
    let sink = replay("10-rm.jsonl", &ids);
    assert_eq!(
        str_attr(&sink.call("DELETE /containers/{id}"), CONTAINER_ID),
        Some(ID_05)
    );
    assert_eq!(ids.resolve("fixture-c1"), None);
}

#[test]
fn not_found_is_the_clients_error() {
    let sink = replay("11-inspect-missing.jsonl", &Arc::new(DockerIds::new()));
    let c = sink.call("GET /containers/{id}/json");
    assert_eq!(int_attr(&c, HTTP_RESPONSE_STATUS_CODE), Some(404));
    assert_eq!(
        str_attr(&c, names::DOCKER_ERROR_MESSAGE),
        Some("No such container: nosuch-fixture")
    );
    assert_eq!(str_attr(&c, names::CONTAINER_REF), Some("nosuch-fixture"));
    assert_eq!(str_attr(&c, CONTAINER_ID), None);
    assert_eq!(c.status, SpanStatus::Unset);
    let image = sink.call("GET /images/{name}/json");
    assert_eq!(str_attr(&image, CONTAINER_IMAGE_NAME), Some("nosuch-fixture"));
    let plugin = sink.call("GET /plugins/{name}/json");
    assert_eq!(
        str_attr(&plugin, names::DOCKER_ERROR_MESSAGE),
        Some("plugin \"nosuch-fixture\" not found")
    );
    let mut n404 = 0;
    for c in sink.calls() {
        if int_attr(&c, HTTP_RESPONSE_STATUS_CODE) == Some(404) {
            n404 += 1;
            assert!(str_attr(&c, names::DOCKER_ERROR_MESSAGE).is_some(), "{}", c.name);
            assert_eq!(c.status, SpanStatus::Unset, "{}", c.name);
        }
    }
    assert_eq!(n404, 5);
    assert_eq!(str_attr(&sink.call("GET /info"), names::DOCKER_ERROR_MESSAGE), None);
}

#[test]
fn logs_and_wait_next_exit() {
    let ids = Arc::new(DockerIds::new());
    let sink = replay("12-logs-create-wait.jsonl", &ids);
    let wait = sink.call("POST /containers/{id}/wait");
    assert_eq!(str_attr(&wait, CONTAINER_ID), Some(ID_12));
    assert_eq!(wait.status, SpanStatus::Unset);
    assert!(!wait.incomplete);
    let sink = replay("14-logs.jsonl", &ids);
    let logs = sink.call("GET /containers/{id}/logs");
    assert_eq!(logs.shape, Shape::Unary);
    assert_eq!(str_attr(&logs, CONTAINER_ID), Some(ID_12));
    assert_eq!(int_attr(&logs, names::RESPONSE_BYTES), Some(24));
    assert_eq!(str_attr(&logs, URL_QUERY), Some("stderr=1&stdout=1&tail=all"));
}

#[test]
fn logs_follow_and_stats_streams_are_long_lived() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    for target in [
        "/v1.41/containers/c1/logs?follow=1&stdout=1",
        "/v1.41/containers/c1/logs?follow=true",
        "/v1.41/containers/c1/logs?follow=0",
        "/v1.41/containers/c1/stats",
        "/v1.41/containers/c1/stats?stream=false",
    ] {
        rig.send(C2S, format!("GET {target} HTTP/1.1\r\nHost: d\r\n\r\n"))
            .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    rig.close();
    let shapes: Vec<Shape> = rig.sink.calls().iter().map(|c| c.shape).collect();
    use Shape::*;
    assert_eq!(shapes, [LongLived, LongLived, Unary, LongLived, Unary]);
}

#[test]
fn start_by_name_after_create() {
    let ids = Arc::new(DockerIds::new());
    replay("05-create.jsonl", &ids);
    let mut rig = Rig::new(&ids, false);
    rig.send(
        C2S,
        "POST /v1.41/containers/fixture-c1/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n",
    )
    .send(S2C, "HTTP/1.1 204 No Content\r\nApi-Version: 1.41\r\n\r\n")
    .close();
    let start = rig.sink.call("POST /containers/{id}/start");
    assert_eq!(str_attr(&start, CONTAINER_ID), Some(ID_05));
    assert_eq!(str_attr(&start, URL_PATH), Some("/v1.41/containers/fixture-c1/start"));
}

#[test]
fn inspect_by_name_learns_the_id() {
    let ids = Arc::new(DockerIds::new());
    let mut rig = Rig::new(&ids, false);
    let body = format!(r#"{{"Id":"{ID_12}","Name":"/web","Config":{{"Env":["A=b"]}}}}"#);
    rig.send(C2S, "GET /v1.41/containers/web/json HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(
            S2C,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .close();
    assert_eq!(
        str_attr(&rig.sink.call("GET /containers/{id}/json"), CONTAINER_ID),
        Some(ID_12)
    );
    assert_eq!(ids.resolve("web").as_deref(), Some(ID_12));
}

#[test]
fn container_list_feeds_the_registry() {
    let ids = Arc::new(DockerIds::new());
    let mut rig = Rig::new(&ids, false);
    let body = format!(r#"[{{"Id":"{ID_12}","Names":["/listed"]}},{{"Names":["/no-id"]}}]"#);
    rig.send(C2S, "GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(
            S2C,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        )
        .close();
    assert_eq!(ids.resolve("listed").as_deref(), Some(ID_12));
}

#[test]
fn secrets_never_reach_the_sink() {
    let ids = Arc::new(DockerIds::new());
    let mut rig = Rig::new(&ids, true);
    let auth = "eyJ1c2VybmFtZSI6ImZpeHR1cmUiLCJwYXNzd29yZCI6Imh1bnRlcjIifQ==";
    let create = r#"{"Image":"bb:latest","Env":["PASSWORD=hunter2","PLAIN=hunter2"],"Cmd":["true"]}"#;
    rig.send(
        C2S,
        format!(
            "POST /v1.41/containers/create?name=s1 HTTP/1.1\r\nHost: d\r\nX-Registry-Auth: {auth}\r\n\
             Authorization: Bearer hunter2\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{create}",
            create.len()
        ),
    );
    let created = format!(r#"{{"Id":"{ID_12}","Warnings":[]}}"#);
    rig.send(
        S2C,
        format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{created}",
            created.len()
        ),
    );
    let exec = r#"{"Cmd":["sh"],"Env":["TOKEN=hunter2"]}"#;
    rig.send(
        C2S,
        format!(
            "POST /v1.41/containers/s1/exec HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{exec}",
            exec.len()
        ),
    )
    .send(S2C, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    let login = r#"{"username":"fixture","password":"hunter2","serveraddress":"r.example"}"#;
    rig.send(
        C2S,
        format!(
            "POST /v1.41/auth HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{login}",
            login.len()
        ),
    )
    .send(
        S2C,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 47\r\n\r\n{\"Status\":\"Login Succeeded\",\"IdentityToken\":\"\"}",
    );
    let inspect = format!(r#"{{"Id":"{ID_12}","Name":"/s1","Config":{{"Env":["PASSWORD=hunter2"]}}}}"#);
    rig.send(C2S, "GET /v1.41/containers/s1/json HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(
            S2C,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{inspect}",
                inspect.len()
            ),
        );
    let secret = r#"{"Name":"s","Data":"aHVudGVyMg=="}"#;
    rig.send(
        C2S,
        format!(
            "POST /v1.41/secrets/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{secret}",
            secret.len()
        ),
    )
    .send(S2C, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    rig.send(
        C2S,
        format!(
            "POST /v1.41/build?t=app&buildargs=%7B%22PW%22%3A%22hunter2%22%7D&remote=https%3A%2F%2Fu%3Ahunter2%40git.example%2Fr HTTP/1.1\r\n\
             Host: d\r\nX-Registry-Config: {auth}\r\nContent-Length: 0\r\n\r\n"
        ),
    )
    .send(S2C, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n")
    .close();
    rig.sink.check_accounting();
    assert!(rig.sink.calls().iter().all(|c| !c.incomplete), "{:?}", rig.sink.calls());

    let all = rig.sink.everything();
    for needle in ["hunter2", auth, "aHVudGVyMg", "Bearer"] {
        assert!(!all.contains(needle), "{needle:?} leaked: {all}");
    }
    // Capture still shows structure, with env values redacted.
    let create = rig.sink.call("POST /containers/create");
    let body = |c: &Call, name: &str| -> String {
        let e = c
            .events
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("capture event {name} in {c:?}"));
        match &e.attributes[0].value {
            AttrValue::Str(s) => s.clone(),
            v => panic!("{v:?}"),
        }
    };
    assert!(body(&create, "request").contains("PASSWORD=***"));
    assert!(body(&create, "request").contains("bb:latest"));
    assert_eq!(str_attr(&create, CONTAINER_IMAGE_NAME), Some("bb"));
    assert_eq!(str_attr(&create, CONTAINER_ID), Some(ID_12));
    let inspect = rig.sink.call("GET /containers/{id}/json");
    assert!(body(&inspect, "response").contains("PASSWORD=***"));
    assert_eq!(body(&rig.sink.call("POST /auth"), "request"), redact::REDACTED);
    let build = rig.sink.call("POST /build");
    assert_eq!(
        str_attr(&build, URL_QUERY),
        Some("t=app&buildargs=REDACTED&remote=REDACTED")
    );
}

#[test]
fn pull_progress_error_is_an_error() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "POST /v1.41/images/create?fromImage=registry.example%2Fnosuch%2Fimage&tag=1.2 HTTP/1.1\r\n\
         Host: d\r\nX-Registry-Auth: e30=\r\nContent-Length: 0\r\n\r\n",
    )
    .send(
        S2C,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let lines = [
        "{\"status\":\"Pulling from nosuch/image\",\"id\":\"1.2\"}\n",
        "{\"errorDetail\":{\"message\":\"Get \\\"https://registry.example/v2/\\\": dial tcp: lookup registry.example: no such host\"},",
        "\"error\":\"Get \\\"https://registry.example/v2/\\\": dial tcp\"}\n",
    ];
    for l in lines {
        rig.send(S2C, format!("{:x}\r\n{l}\r\n", l.len()));
    }
    rig.send(S2C, "0\r\n\r\n").close();
    let pull = rig.sink.call("POST /images/create");
    let msg = "Get \"https://registry.example/v2/\": dial tcp: lookup registry.example: no such host";
    assert_eq!(pull.status, SpanStatus::Error(msg.into()));
    assert_eq!(str_attr(&pull, names::DOCKER_ERROR_MESSAGE), Some(msg));
    assert_eq!(int_attr(&pull, HTTP_RESPONSE_STATUS_CODE), Some(200));
    assert_eq!(
        str_attr(&pull, CONTAINER_IMAGE_NAME),
        Some("registry.example/nosuch/image")
    );
    assert_eq!(
        attr(&pull, CONTAINER_IMAGE_TAGS),
        Some(&AttrValue::StrList(vec!["1.2".into()]))
    );
    assert!(rig.session.buffered_bytes() < 1024);
}

#[test]
fn pull_without_error_and_by_digest() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "POST /v1.41/images/create?fromImage=busybox&tag=sha256%3A7cdd7cbbe2d02bbdbcf522648b1930bf8fd4fcd50a84d1ac1761a968de02a5f2 HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n",
    )
    .send(
        S2C,
        "HTTP/1.1 200 OK\r\nContent-Length: 51\r\n\r\n{\"status\":\"Status: Image is up to date for busybox\"}",
    )
    .close();
    let pull = rig.sink.call("POST /images/create");
    assert_eq!(pull.status, SpanStatus::Unset);
    assert_eq!(str_attr(&pull, CONTAINER_IMAGE_NAME), Some("busybox"));
    assert_eq!(
        str_attr(&pull, CONTAINER_IMAGE_ID),
        Some("sha256:7cdd7cbbe2d02bbdbcf522648b1930bf8fd4fcd50a84d1ac1761a968de02a5f2")
    );
    assert_eq!(attr(&pull, CONTAINER_IMAGE_TAGS), None);
}

#[test]
fn server_error_is_an_error_with_the_message() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    let body = r#"{"message":"failed to create shim task: OCI runtime create failed"}"#;
    rig.send(
        C2S,
        format!("POST /v1.41/containers/{ID_05}/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"),
    )
    .send(
        S2C,
        format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .close();
    let start = rig.sink.call("POST /containers/{id}/start");
    let msg = "failed to create shim task: OCI runtime create failed";
    assert_eq!(start.status, SpanStatus::Error(msg.into()));
    assert_eq!(str_attr(&start, names::DOCKER_ERROR_MESSAGE), Some(msg));
    assert_eq!(str_attr(&start, CONTAINER_ID), Some(ID_05));
}

#[test]
fn events_stream_gives_one_event_per_line() {
    let ids = Arc::new(DockerIds::new());
    let mut rig = Rig::new(&ids, false);
    rig.send(
        C2S,
        "GET /v1.41/events?since=1&until=2 HTTP/1.1\r\nHost: d\r\nUser-Agent: Docker-Client/28.2.2 (linux)\r\n\r\n",
    )
    .send(
        S2C,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let e1 = format!(
        r#"{{"status":"create","id":"{ID_12}","Type":"container","Action":"create","Actor":{{"ID":"{ID_12}","Attributes":{{"image":"bb","name":"evt"}}}},"scope":"local","time":1}}"#
    );
    let e2 = format!(
        r#"{{"status":"start","id":"{ID_12}","Type":"container","Action":"start","Actor":{{"ID":"{ID_12}","Attributes":{{"name":"evt"}}}},"time":2}}"#
    );
    let e3 = format!(
        r#"{{"Type":"container","Action":"exec_start: sh -c echo PASSWORD=hunter2","Actor":{{"ID":"{ID_12}"}}}}"#
    );
    // The first event in one chunk, the second split across two, the third after it.
    rig.send(S2C, format!("{:x}\r\n{e1}\n\r\n", e1.len() + 1));
    let (a, b) = e2.split_at(40);
    rig.send(S2C, format!("{:x}\r\n{a}\r\n", a.len()));
    assert_eq!(rig.sink.events.lock().unwrap().len(), 1);
    assert_eq!(ids.resolve("evt").as_deref(), Some(ID_12));
    rig.send(S2C, format!("{:x}\r\n{b}\n{e3}\n\r\n", b.len() + e3.len() + 2));
    rig.send(S2C, "0\r\n\r\n").close();

    let call = rig.sink.call("GET /events");
    assert_eq!(call.shape, Shape::LongLived);
    let events = rig.sink.events.lock().unwrap().clone();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "event container create",
            "event container start",
            "event container exec_start"
        ]
    );
    for e in &events {
        assert_eq!(e.subscription, call.span_id);
        assert!(e.time >= call.start && e.time <= call.end);
        assert!(e.attributes.contains(&Attr::str(CONTAINER_ID, ID_12)));
        assert!(e.attributes.contains(&Attr::str(names::DOCKER_EVENT_TYPE, "container")));
    }
    assert!(
        events[1]
            .attributes
            .contains(&Attr::str(names::DOCKER_EVENT_ACTION, "start"))
    );
    assert!(!rig.sink.everything().contains("hunter2"));
}

#[test]
fn a_huge_body_is_counted_not_buffered() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n",
    );
    let chunk = vec![b'{'; 64 * 1024];
    for _ in 0..32 {
        rig.send(C2S, &chunk);
        assert!(
            rig.session.buffered_bytes() < 8 * 1024,
            "{}",
            rig.session.buffered_bytes()
        );
    }
    assert_eq!(rig.session.stats().skipped_bodies, 1);
    // Handed over once for /metrics, then forgotten.
    let mut reported = Vec::new();
    rig.session.take_skipped(&mut |label, n| reported.push((label, n)));
    assert_eq!(reported, [("body_not_decoded", 1)]);
    rig.session.take_skipped(&mut |label, n| reported.push((label, n)));
    assert_eq!(reported.len(), 1);
    // A chunked body without a declared length is cut at the cap too.
    rig.close();
    let create = rig.sink.call("POST /containers/create");
    assert!(create.incomplete);
    assert_eq!(int_attr(&create, names::REQUEST_BYTES), Some(32 * 64 * 1024));

    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        rig.send(C2S, format!("{:x}\r\n", chunk.len()));
        rig.send(C2S, &chunk);
        rig.send(C2S, "\r\n");
        assert!(rig.session.buffered_bytes() <= MAX_JSON_BODY + 8 * 1024);
    }
    assert_eq!(rig.session.buffered_bytes(), rig.session.decoder.buffered_bytes());
    assert_eq!(rig.session.stats().skipped_bodies, 1);
    rig.close();
    rig.sink.check_accounting();
}

#[test]
fn an_overlong_stream_line_is_skipped() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(C2S, "GET /events HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(S2C, "HTTP/1.1 200 OK\r\n\r\n");
    let long = "x".repeat(MAX_STREAM_LINE + 10);
    rig.send(S2C, &long);
    rig.send(
        S2C,
        "still the long line\n{\"Type\":\"network\",\"Action\":\"connect\"}\n",
    );
    assert!(rig.session.buffered_bytes() <= MAX_STREAM_LINE + 1024);
    assert_eq!(rig.session.stats().skipped_lines, 1);
    rig.eof(S2C).close();
    let events = rig.sink.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "event network connect");
    let call = rig.sink.call("GET /events");
    assert!(!call.incomplete, "a read-to-close body ends at the server's close");
}

#[test]
fn garbage_makes_the_session_give_up() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(C2S, "\u{1}\u{2}garbage that is not http\r\n\r\n");
    assert_eq!(rig.session.gave_up(), Some("malformed_head"));
    rig.close();
    assert!(rig.sink.calls().is_empty());

    // A call open when the decoder gives up ends incomplete.
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(C2S, "GET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(S2C, "\u{0}\u{1}not a status line\r\n\r\n");
    assert!(rig.session.gave_up().is_some());
    rig.send(C2S, "GET /v1.41/info HTTP/1.1\r\n\r\n").close();
    let calls = rig.sink.calls();
    assert_eq!(names_of(&calls), ["GET /version"]);
    assert!(calls[0].incomplete);
    rig.sink.check_accounting();
}

#[test]
fn close_ends_open_calls_incomplete() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        format!("POST /v1.41/containers/{ID_05}/wait HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"),
    )
    .send(S2C, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    .close();
    let wait = rig.sink.call("POST /containers/{id}/wait");
    assert!(wait.incomplete);
    assert_eq!(wait.end, rig.wall(3));
    assert_eq!(wait.start, rig.wall(1));
    rig.sink.check_accounting();
    // Closing twice, or dropping after close, ends nothing again.
    rig.close();
    rig.sink.check_accounting();
}

#[test]
fn dropping_an_open_session_ends_its_calls() {
    let sink;
    {
        let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
        rig.send(C2S, "GET /v1.41/events HTTP/1.1\r\nHost: d\r\n\r\n");
        sink = rig.sink.clone();
    }
    sink.check_accounting();
    assert!(sink.call("GET /events").incomplete);
}

#[test]
fn times_come_from_the_chunks() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    // Step 1: half a head; 2: the rest; 3: the response and the start of the next head
    // is on the client side at 4 along with the end of... (separately) 5: its rest.
    rig.send(C2S, "GET /v1.41/ver")
        .send(C2S, "sion HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        .send(
            C2S,
            "POST /v1.41/containers/c/start HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /v1.41/in",
        )
        .send(C2S, "fo HTTP/1.1\r\n\r\n")
        .send(S2C, "HTTP/1.1 204 No Content\r\n\r\n")
        .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        .close();
    let calls = rig.sink.calls();
    assert_eq!(
        names_of(&calls),
        ["GET /version", "POST /containers/{id}/start", "GET /info"]
    );
    assert_eq!((calls[0].start, calls[0].end), (rig.wall(1), rig.wall(3)));
    assert_eq!((calls[1].start, calls[1].end), (rig.wall(4), rig.wall(6)));
    assert_eq!((calls[2].start, calls[2].end), (rig.wall(4), rig.wall(7)));
}

#[test]
fn traceparent_becomes_the_remote_parent() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "GET /v1.41/version HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         tracestate: k=v\r\n\r\n",
    )
    .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    .close();
    let call = rig.sink.call("GET /version");
    let parent = call.remote_parent.expect("remote parent");
    assert_eq!(parent.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
    assert_eq!(parent.trace_state.as_deref(), Some("k=v"));
    assert!(rig.sink.started.lock().unwrap()[0].remote_parent.is_some());
}

#[test]
fn unknown_paths_and_methods_do_not_explode_names() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(C2S, "GET /v1.41/nope/abc123 HTTP/1.1\r\n\r\n")
        .send(S2C, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        .send(C2S, "BREW /pot HTTP/1.1\r\n\r\n")
        .send(S2C, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        .close();
    let calls = rig.sink.calls();
    assert_eq!(names_of(&calls), ["GET", "HTTP"]);
    assert_eq!(str_attr(&calls[0], URL_PATH), Some("/v1.41/nope/abc123"));
    assert_eq!(str_attr(&calls[0], HTTP_ROUTE), None);
    assert_eq!(str_attr(&calls[1], HTTP_REQUEST_METHOD), Some("_OTHER"));
}

#[test]
fn load_shedding_keeps_heads_drops_bodies() {
    let ids = Arc::new(DockerIds::new());
    let mut rig = Rig::new(&ids, false);
    rig.session.payloads(false);
    for (dir, seg) in load_capture(&capture_path("docker-cli/05-create.jsonl")) {
        match seg {
            Segment::Data(d) => {
                rig.send(dir, d);
            }
            Segment::Eof => {
                rig.eof(dir);
            }
        }
    }
    rig.close();
    let create = rig.sink.call("POST /containers/create");
    assert_eq!(str_attr(&create, CONTAINER_NAME), Some("fixture-c1"));
    assert_eq!(int_attr(&create, HTTP_RESPONSE_STATUS_CODE), Some(201));
    assert_eq!(str_attr(&create, CONTAINER_IMAGE_NAME), None);
    assert_eq!(str_attr(&create, CONTAINER_ID), None);
    assert_eq!(rig.session.stats().skipped_bodies, 2);
    assert!(ids.is_empty());

    // Shedding mid-stream, then resuming: events resume at the next line.
    let mut rig = Rig::new(&ids, false);
    rig.send(C2S, "GET /events HTTP/1.1\r\n\r\n").send(
        S2C,
        "HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n{\"Type\":\"a\",\"Action\":\"b\"}\n{\"Ty",
    );
    rig.session.payloads(false);
    rig.send(S2C, "pe\":\"x\",\"Action\":\"y\"}\n");
    rig.session.payloads(true);
    rig.send(S2C, "{\"Type\":\"c\"}\n{\"Type\":\"d\",\"Action\":\"e\"}\n");
    rig.close();
    let names: Vec<String> = rig.sink.events.lock().unwrap().iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["event a b", "event d e"]);
}

#[test]
fn pipelined_requests_match_their_responses() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "GET /v1.41/version HTTP/1.1\r\n\r\nGET /v1.41/info HTTP/1.1\r\n\r\nHEAD /_ping HTTP/1.1\r\n\r\n",
    )
    .send(
        S2C,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 500 Oops\r\nContent-Length: 15\r\n\r\n{\"message\":\"x\"}",
    )
    .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    .close();
    let calls = rig.sink.calls();
    assert_eq!(names_of(&calls), ["GET /version", "GET /info", "HEAD /_ping"]);
    assert_eq!(calls[1].status, SpanStatus::Error("x".into()));
    assert_eq!(calls[2].end, rig.wall(3));
    rig.sink.check_accounting();
}

#[test]
fn ten_thousand_keep_alive_exchanges_cost_linear_time() {
    struct Null;
    impl CallSink for Null {
        fn started(&self, _: &CallStart) {}
        fn ended(&self, _: Call) {}
        fn event(&self, _: StreamEvent) {}
    }
    let ctx = SessionCtx {
        conn: conn(false),
        sink: Arc::new(Null),
        clock: Clock::new(),
        long_lived: Default::default(),
    };
    let mut session = HttpSession::new(ctx, Arc::new(DockerIds::new()));
    let t0 = Instant::now();
    let mut lap = Instant::now();
    let mut laps = Vec::new();
    for i in 0..10_000u32 {
        let req = format!("GET /v1.41/nosuch/{i}/thing?x={i} HTTP/1.1\r\nHost: docker\r\n\r\n");
        session.data(Direction::ClientToServer, t0, Bytes::from(req));
        session.data(
            Direction::ServerToClient,
            t0,
            Bytes::from_static(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        );
        if i % 2500 == 2499 {
            laps.push(lap.elapsed());
            lap = Instant::now();
        }
    }
    assert_eq!(session.open_calls(), 0);
    // The last quarter costs about what the first did: nothing grows with the connection.
    assert!(laps[3] < laps[0] * 3 + Duration::from_millis(50), "{laps:?}");
}

/// RFC 9112 §6.3: a request with neither Content-Length nor Transfer-Encoding has no body;
/// the bytes after its head are the next request. When they are a request, both are calls;
/// when they are not (a body sent without a length), the decoder gives up, counted.
#[test]
fn a_request_without_length_has_no_body_and_what_follows_is_the_next_head() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        format!("POST /v1.41/containers/{ID_05}/start HTTP/1.1\r\nHost: d\r\n\r\nGET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n"),
    )
    .send(S2C, "HTTP/1.1 204 No Content\r\n\r\n")
    .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(rig.session.gave_up(), None);
    let start = rig.sink.call("POST /containers/{id}/start");
    assert_eq!(int_attr(&start, names::REQUEST_BYTES), Some(0));
    assert!(!start.incomplete);
    let version = rig.sink.call("GET /version");
    assert_eq!(int_attr(&version, HTTP_RESPONSE_STATUS_CODE), Some(200));
    assert!(!version.incomplete);

    // A JSON body sent without a length is read as the next head: not HTTP, given up.
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n\r\n{\"Image\":\"bb\"}\r\n\r\n",
    );
    assert_eq!(rig.session.gave_up(), Some("malformed_head"));
    rig.close();
    let create = rig.sink.call("POST /containers/create");
    assert_eq!(int_attr(&create, names::REQUEST_BYTES), Some(0));
    assert_eq!(str_attr(&create, CONTAINER_IMAGE_NAME), None, "the body is no body");
    assert!(create.incomplete, "its response was never seen");
    rig.sink.check_accounting();
}

/// `/configs/create` bodies (swarm configs may hold credentials) never reach the sink, even
/// with payload capture on; the call is still a span.
#[test]
fn config_bodies_never_reach_the_sink() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), true);
    for path in ["/v1.41/configs/create", "/v1.41/configs/c1/update?version=3"] {
        let config = r#"{"Name":"app-config","Data":"cGFzc3dvcmQ9aHVudGVyMg=="}"#;
        rig.send(
            C2S,
            format!(
                "POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{config}",
                config.len()
            ),
        )
        .send(
            S2C,
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ID\":\"c1\"}",
        );
    }
    rig.close();
    rig.sink.check_accounting();
    let create = rig.sink.call("POST /configs/create");
    assert!(!create.incomplete);
    rig.sink.call("POST /configs/{id}/update");
    let all = rig.sink.everything();
    for needle in ["cGFzc3dvcmQ9aHVudGVyMg", "app-config"] {
        assert!(!all.contains(needle), "{needle:?} leaked: {all}");
    }
}

/// A 2 GiB Content-Length body, all of it fed (1 MiB refcounted chunks, one buffer shared),
/// then the response: the request ends with its exact size, nothing buffered on the way.
#[test]
fn a_two_gib_body_is_walked_to_its_end_and_counted_exactly() {
    const TWO_GIB: u64 = 2 * 1024 * 1024 * 1024;
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    rig.send(
        C2S,
        format!(
            "PUT /v1.41/containers/{ID_05}/archive?path=/ HTTP/1.1\r\nHost: d\r\nContent-Length: {TWO_GIB}\r\n\r\n"
        ),
    );
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    for i in 0..TWO_GIB / chunk.len() as u64 {
        let at = rig.tick();
        rig.session.data(C2S, at, chunk.clone());
        if i % 256 == 0 {
            assert!(
                rig.session.buffered_bytes() < 8 * 1024,
                "{}",
                rig.session.buffered_bytes()
            );
        }
    }
    rig.send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(rig.session.buffered_bytes(), 0);
    // The request is over at its last byte: the next one on the connection is a new call.
    rig.send(C2S, "GET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n")
        .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(rig.session.gave_up(), None);
    let put = rig.sink.call("PUT /containers/{id}/archive");
    assert!(!put.incomplete);
    assert_eq!(int_attr(&put, names::REQUEST_BYTES), Some(TWO_GIB as i64));
    assert_eq!(int_attr(&put, names::RESPONSE_BYTES), Some(0));
    assert_eq!(int_attr(&put, HTTP_RESPONSE_STATUS_CODE), Some(200));
    rig.sink.call("GET /version");
    rig.close();
    rig.sink.check_accounting();
}

/// Image references in paths: an id (`sha256:` and hex, or 12 to 64 hex digits) is
/// `container.image.id`, never a name `sha256` tagged with the hex; path segments are
/// percent-decoded as paths (`+` stays `+`).
#[test]
fn image_ids_and_path_encoded_names() {
    let mut rig = Rig::new(&Arc::new(DockerIds::new()), false);
    let full = "sha256:7cdd7cbbe2d02bbdbcf522648b1930bf8fd4fcd50a84d1ac1761a968de02a5f2";
    for path in [
        "/v1.41/images/sha256:7cdd7cbb/json".to_owned(),
        "/v1.41/images/7cdd7cbbe2d0/json".to_owned(),
        format!("/v1.41/images/{full}/history"),
        "/v1.41/images/localhost:5000/a+b:v%2B1/json".to_owned(),
        "/v1.41/images/busybox%3Alatest/json".to_owned(),
    ] {
        rig.send(C2S, format!("GET {path} HTTP/1.1\r\nHost: d\r\n\r\n"))
            .send(S2C, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    }
    rig.close();
    let calls = rig.sink.calls();
    let image = |c: &Call| {
        (
            str_attr(c, CONTAINER_IMAGE_NAME).map(str::to_owned),
            attr(c, CONTAINER_IMAGE_TAGS).cloned(),
            str_attr(c, CONTAINER_IMAGE_ID).map(str::to_owned),
        )
    };
    let tags = |t: &str| Some(AttrValue::StrList(vec![t.to_owned()]));
    assert_eq!(image(&calls[0]), (None, None, Some("sha256:7cdd7cbb".to_owned())));
    assert_eq!(image(&calls[1]), (None, None, Some("7cdd7cbbe2d0".to_owned())));
    assert_eq!(image(&calls[2]), (None, None, Some(full.to_owned())));
    assert_eq!(
        image(&calls[3]),
        (Some("localhost:5000/a+b".to_owned()), tags("v+1"), None)
    );
    assert_eq!(image(&calls[4]), (Some("busybox".to_owned()), tags("latest"), None));
}
