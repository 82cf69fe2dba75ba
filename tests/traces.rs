//! Docker Engine API spans and cross-layer traces, end to end: the docker CLI → runtime-tap →
//! dockerd → runtime-tap → containerd, and a CRI client → runtime-tap → containerd, with an
//! OTLP receiver reading what runtime-tap exports.

mod support;

use std::collections::HashSet;
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use runtime_tap::trace::sample;
use serde_json::json;
use support::cri::GrpcClient;
use support::otlp::{
    KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, OtlpReceiver, ReceivedSpan, STATUS_ERROR, STATUS_UNSET, Val, double_attr,
    int_attr, str_attr,
};
use support::stack::Stack;

struct Setup {
    rt: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
    stack: Stack,
    /// An image in the bed's private registry (`127.0.0.1:PORT/kubelet-app:1`), for real pulls.
    registry_image: String,
}

/// The tests of this file run one at a time: calls of concurrent operations are (rightly)
/// ambiguous to the correlator, and each test checks what one operation alone produces.
fn setup() -> (std::sync::MutexGuard<'static, ()>, &'static Setup) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    (guard, shared())
}

fn shared() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| start_setup("traces", ""))
}

/// A stack named `label` exporting to a receiver of its own, with no default sampling rules and
/// `extra` appended to runtime-tap's config; the bed's registry holds the kubelet helper's image.
fn start_setup(label: &str, extra: &str) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = rt.block_on(OtlpReceiver::start());
    let mut stack = Stack::start(
        label,
        &format!(
            "[export]\nendpoint = \"{}\"\n\n[sampling]\ndefault_rules = false\n{extra}",
            receiver.endpoint()
        ),
    );
    let versions = stack.bed.versions().clone();
    stack
        .bed
        .start_registry()
        .unwrap_or_else(|e| panic!("registry ({versions}): {e:#}"));
    let registry_image = stack
        .bed
        .push_two_layer_image(&stack.docker, "kubelet-app:1")
        .unwrap_or_else(|e| panic!("push an image to the registry ({versions}): {e:#}"));
    Setup {
        rt,
        receiver,
        stack,
        registry_image,
    }
}

fn wait_spans(s: &Setup, what: &str, pred: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
    s.receiver.wait_spans(what, pred)
}

/// Waits until every call that ended has been exported: no call pending in the correlator
/// (deciding or held, a gauge taken each tick), an empty export queue and every submitted span
/// accounted for (exported or dropped), seen twice a tick apart, so that a call ending just before the first look is counted by the second.
fn settled(s: &Setup) {
    let tap = &s.stack.tap;
    let idle = || {
        let m = tap.metrics();
        let get = |k: &str| m.get(k).copied().unwrap_or(-1.0);
        let dropped = ["queue_full", "export_failed", "shutdown"]
            .iter()
            .map(|r| get(&format!("runtime_tap_spans_dropped_total{{reason=\"{r}\"}}")))
            .sum::<f64>();
        get("runtime_tap_correlator_pending_calls") == 0.0
            && get("runtime_tap_export_queue_spans") == 0.0
            && get("runtime_tap_spans_submitted_total") == get("runtime_tap_spans_exported_total") + dropped
    };
    let start = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 2 {
        assert!(
            start.elapsed() < support::otlp::SPAN_WAIT,
            "calls still pending after {:?}",
            support::otlp::SPAN_WAIT
        );
        in_a_row = if idle() { in_a_row + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn is_incomplete(span: &ReceivedSpan) -> bool {
    span.attributes.get("runtime_tap.incomplete") == Some(&Val::Bool(true))
}

/// Now, in the receiver's clock (unix nanoseconds).
/// `service.name` of what this test process does as a client: its executable's file name.
fn client_service_name() -> String {
    std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn docker(s: &Setup, args: &[&str]) -> Output {
    s.stack
        .bed
        .docker(&s.stack.docker)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn docker_ok(s: &Setup, args: &[&str]) -> String {
    let out = docker(s, args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dockerd_spans<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == "dockerd" && s.name == name)
        .collect()
}

fn with_container<'a>(spans: &'a [ReceivedSpan], name: &str, id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && str_attr(s, "container.id") == Some(id))
        .collect()
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut c: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect();
    c.sort_by_key(|s| s.start_ns);
    c
}

const CONTAINERS: &str = "containerd.services.containers.v1.Containers";
const TASKS: &str = "containerd.services.tasks.v1.Tasks";

#[test]
fn cli_basics_are_http_spans_named_by_route() {
    let (_serial, s) = setup();
    docker_ok(s, &["version"]);
    docker_ok(s, &["ps", "-a"]);
    docker_ok(s, &["images"]);
    let spans = wait_spans(s, "docker images", |sp| {
        !dockerd_spans(sp, "GET /images/json").is_empty()
    });
    for name in [
        "HEAD /_ping",
        "GET /version",
        "GET /containers/json",
        "GET /images/json",
    ] {
        let found = dockerd_spans(&spans, name);
        assert!(!found.is_empty(), "{name}");
        let sp = found[0];
        assert_eq!(int_attr(sp, "http.response.status_code"), Some(200), "{name}");
        assert_eq!(str_attr(sp, "http.request.method"), name.split(' ').next());
        assert_eq!(str_attr(sp, "http.route"), name.split(' ').nth(1));
        assert_eq!(str_attr(sp, "runtime_tap.client.executable"), Some("docker"));
        assert_eq!(str_attr(sp, "runtime_tap.server.executable"), Some("dockerd"));
    }
    // The version the CLI negotiated with this generation's dockerd (1.41 on 20.10, 1.45 on
    // 26.1, 1.51 on 28.5).
    let api = s.stack.bed.docker_api_version().expect("docker API version");
    assert!(
        dockerd_spans(&spans, "GET /version")
            .iter()
            .any(|v| str_attr(v, "docker.api.version") == Some(api.as_str())),
        "docker.api.version {api} ({})",
        s.stack.bed.versions()
    );
}

#[test]
fn docker_run_rm_is_create_attach_wait_start_and_one_trace_per_layer() {
    let (_serial, s) = setup();
    let before = now_ns();
    let out = docker(
        s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--name",
            "tr-run",
            "bb:latest",
            "echo",
            "hi",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(out.status.code(), Some(0));
    let after = now_ns();
    wait_spans(s, "run --rm", |sp| {
        let Some(id) = dockerd_spans(sp, "POST /containers/create")
            .iter()
            .find(|c| str_attr(c, "container.name") == Some("tr-run"))
            .and_then(|c| str_attr(c, "container.id"))
        else {
            return false;
        };
        [
            "POST /containers/{id}/attach",
            "POST /containers/{id}/wait",
            &format!("{CONTAINERS}/Delete"),
            &format!("{TASKS}/Delete"),
        ]
        .iter()
        .all(|name| !with_container(sp, name, id).is_empty())
    });
    // A DELETE the CLI sent would have ended before it exited: once the correlator holds no
    // ended call and the export queue is empty, it would have reached the receiver.
    settled(s);
    let spans = s.receiver.spans();
    let create = *dockerd_spans(&spans, "POST /containers/create")
        .iter()
        .find(|c| str_attr(c, "container.name") == Some("tr-run"))
        .unwrap();
    assert_eq!(str_attr(create, "container.image.name"), Some("bb"));
    assert_eq!(
        create.attributes.get("container.image.tags"),
        Some(&Val::StrList(vec!["latest".into()]))
    );
    let id = str_attr(create, "container.id")
        .expect("container.id from the create response")
        .to_string();
    assert_eq!(id.len(), 64);
    let attach = with_container(&spans, "POST /containers/{id}/attach", &id);
    assert_eq!(
        attach.len(),
        1,
        "{:#?}",
        spans.iter().filter(|x| x.name.contains("attach")).collect::<Vec<_>>()
    );
    assert_eq!(int_attr(attach[0], "http.response.status_code"), Some(101));
    assert!(
        int_attr(attach[0], "runtime_tap.response.bytes").unwrap_or(0) >= 3,
        "the hijacked stream's bytes are counted"
    );
    let wait = with_container(&spans, "POST /containers/{id}/wait", &id);
    assert_eq!(wait.len(), 1);
    // docker 20.10's CLI waits for the removal when the daemon removes the container (--rm).
    assert_eq!(str_attr(wait[0], "url.query"), Some("condition=removed"));
    let start = with_container(&spans, "POST /containers/{id}/start", &id);
    assert_eq!(start.len(), 1);
    let start = start[0];
    // With --rm the daemon removes the container itself: no DELETE of any kind is sent while
    // the run lasts (the tests of this file run one at a time, so nothing else sends one).
    let deletes: Vec<_> = spans
        .iter()
        .filter(|x| {
            x.service == "dockerd" && x.name.starts_with("DELETE ") && x.start_ns >= before && x.start_ns <= after
        })
        .collect();
    assert!(deletes.is_empty(), "--rm sends no DELETE: {deletes:#?}");
    // The start carries the containerd calls it caused, not the attach or the wait.
    assert!(start.parent_span_id.is_empty(), "the start is a root");
    let kids = children(&spans, start);
    let names: Vec<&str> = kids.iter().map(|k| k.name.as_str()).collect();
    for expected in [
        "containerd.services.leases.v1.Leases/Create",
        &format!("{CONTAINERS}/Create"),
        &format!("{CONTAINERS}/Get"),
        &format!("{TASKS}/Create"),
        &format!("{TASKS}/Start"),
    ] {
        assert!(names.contains(&expected), "{expected} not under the start: {names:?}");
    }
    for k in &kids {
        assert_eq!(k.service, "containerd");
        assert!(
            start.start_ns <= k.start_ns && k.end_ns <= start.end_ns,
            "{} outside the start",
            k.name
        );
        assert!(str_attr(k, "runtime_tap.link").is_some());
    }
    // Deletion after exit lands under a request still open for that container.
    let delete = with_container(&spans, &format!("{TASKS}/Delete"), &id);
    assert_eq!(delete.len(), 1);
    assert!(
        [wait[0].span_id.as_str(), attach[0].span_id.as_str()].contains(&delete[0].parent_span_id.as_str()),
        "Tasks/Delete under wait or attach"
    );
    assert_eq!(str_attr(delete[0], "runtime_tap.link"), Some("entity"));
    let remove = with_container(&spans, &format!("{CONTAINERS}/Delete"), &id);
    assert_eq!(remove.len(), 1);
    assert!(
        [wait[0].span_id.as_str(), attach[0].span_id.as_str()].contains(&remove[0].parent_span_id.as_str()),
        "Containers/Delete under wait or attach: {:?}",
        remove[0]
    );
    assert_eq!(str_attr(remove[0], "runtime_tap.link"), Some("entity"));
    // The wait for the removal ends only once containerd has deleted the container.
    assert!(
        wait[0].end_ns >= remove[0].end_ns,
        "wait ended {} ns before Containers/Delete did",
        remove[0].end_ns - wait[0].end_ns
    );
    // Each layer's self time, exact to the microsecond: dockerd calls containerd one call at
    // a time, so the layers add up to the start's duration (cut to whole milliseconds per
    // span they missed it by up to 4.8 ms).
    let layers: Vec<f64> = ["dockerd", "containerd"]
        .iter()
        .map(|svc| double_attr(start, &format!("runtime_tap.self_time_ms.{svc}")).expect(svc))
        .collect();
    let duration_ms = (start.end_ns - start.start_ns) as f64 / 1e6;
    assert!(
        (layers.iter().sum::<f64>() - duration_ms).abs() < 0.5,
        "self times {layers:?} against the start's {duration_ms} ms"
    );
}

#[test]
fn docker_start_of_a_created_container_is_one_trace_across_dockerd_and_containerd() {
    let (_serial, s) = setup();
    let id = docker_ok(
        s,
        &["create", "--network", "none", "--name", "tr-start", "bb:latest", "true"],
    )
    .trim()
    .to_string();
    // By name: the proxy resolves it to the full id it saw in the create response.
    docker_ok(s, &["start", "tr-start"]);
    let spans = wait_spans(s, "docker start", |sp| {
        with_container(sp, "POST /containers/{id}/start", &id)
            .iter()
            .any(|st| children(sp, st).iter().any(|k| k.name == format!("{TASKS}/Start")))
    });
    let start = with_container(&spans, "POST /containers/{id}/start", &id)[0];
    assert_eq!(start.service, "dockerd");
    assert!(start.parent_span_id.is_empty());
    let kids: Vec<&ReceivedSpan> = children(&spans, start)
        .into_iter()
        .filter(|k| {
            [
                format!("{CONTAINERS}/Create"),
                format!("{TASKS}/Create"),
                format!("{TASKS}/Start"),
            ]
            .contains(&k.name)
        })
        .collect();
    let names: Vec<&str> = kids.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{CONTAINERS}/Create"),
            format!("{TASKS}/Create"),
            format!("{TASKS}/Start")
        ],
        "in that order"
    );
    for k in kids {
        assert_eq!(k.service, "containerd");
        assert_eq!(str_attr(k, "container.id"), Some(id.as_str()));
        assert_eq!(k.trace_id, start.trace_id);
        assert!(start.start_ns <= k.start_ns && k.end_ns <= start.end_ns);
    }
    docker_ok(s, &["rm", "-f", "tr-start"]);
}

#[test]
fn concurrent_starts_never_cross_wire_their_children() {
    let (_serial, s) = setup();
    for round in 0..20 {
        let a = docker_ok(s, &["create", "--network", "none", "bb:latest", "true"])
            .trim()
            .to_string();
        let b = docker_ok(s, &["create", "--network", "none", "bb:latest", "true"])
            .trim()
            .to_string();
        let (sa, sb) = (
            s.stack
                .bed
                .docker(&s.stack.docker)
                .args(["start", &a])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
            s.stack
                .bed
                .docker(&s.stack.docker)
                .args(["start", &b])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for mut c in [sa, sb] {
            assert!(c.wait().unwrap().success(), "round {round}");
        }
        for id in [&a, &b] {
            let spans = wait_spans(s, "concurrent starts", |sp| {
                with_container(sp, "POST /containers/{id}/start", id)
                    .iter()
                    .any(|st| children(sp, st).iter().any(|k| k.name == format!("{TASKS}/Start")))
            });
            let start = with_container(&spans, "POST /containers/{id}/start", id)[0];
            for k in children(&spans, start) {
                if let Some(c) = str_attr(k, "container.id") {
                    assert_eq!(
                        c,
                        id.as_str(),
                        "round {round}: {} of another container under this start: link {:?}, start {}..{}, child {}..{}",
                        k.name,
                        str_attr(k, "runtime_tap.link"),
                        start.start_ns,
                        start.end_ns,
                        k.start_ns,
                        k.end_ns
                    );
                }
            }
            // Every containerd call for this container made during the start is under it.
            for k in spans.iter().filter(|x| {
                x.kind == KIND_SERVER
                    && x.service == "containerd"
                    && str_attr(x, "container.id") == Some(id.as_str())
                    && x.start_ns >= start.start_ns
                    && x.end_ns <= start.end_ns
            }) {
                assert_eq!(
                    k.parent_span_id, start.span_id,
                    "round {round}: {} not under its start",
                    k.name
                );
            }
        }
        docker_ok(s, &["rm", "-f", &a, &b]);
    }
}

#[test]
fn background_calls_stay_roots_while_docker_events_is_open() {
    let (_serial, s) = setup();
    let mut events = s
        .stack
        .bed
        .docker(&s.stack.docker)
        .args(["events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // A volume made until its event is printed: the subscription is live before the run.
    let mut lines = support::Lines::of(events.stdout.take().unwrap());
    let probes = lines.until_seen("volume create tr-bg-probe-", |i| {
        docker_ok(s, &["volume", "create", &format!("tr-bg-probe-{i}")]);
    });
    for i in 0..probes {
        docker_ok(s, &["volume", "rm", &format!("tr-bg-probe-{i}")]);
    }
    // A container that exits on its own: dockerd learns it from its containerd event
    // subscription and cleans the task up (Tasks/Delete...) while no request is open.
    let id = docker_ok(
        s,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "tr-bg",
            "bb:latest",
            "sleep",
            "1",
        ],
    )
    .trim()
    .to_string();
    // Its exit reached dockerd (and the cleanup is under way) when the die event is printed.
    assert!(
        lines.wait_for(&format!("container die {id}"), Duration::from_secs(30)),
        "no die event: {}",
        lines.seen()
    );
    docker_ok(s, &["ps"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = events.wait();
    let spans = wait_spans(s, "GET /events ended and the exit cleanup", |sp| {
        !dockerd_spans(sp, "GET /events").is_empty() && !with_container(sp, &format!("{TASKS}/Delete"), &id).is_empty()
    });
    let stream = dockerd_spans(&spans, "GET /events");
    assert_eq!(stream.len(), 1, "one events stream in this test: {stream:#?}");
    let stream = stream[0];
    // Nothing is placed under the events stream: it is never a parent.
    let under: Vec<_> = spans.iter().filter(|x| x.parent_span_id == stream.span_id).collect();
    assert!(under.is_empty(), "under GET /events: {under:#?}");
    // It delivered events (as linked event spans) while open.
    let delivered: Vec<_> = spans
        .iter()
        .filter(|x| x.name.starts_with("event container ") && x.links.iter().any(|l| l.span_id == stream.span_id))
        .collect();
    assert!(
        delivered.iter().any(|x| x.name == "event container die"),
        "{delivered:#?}"
    );
    // dockerd's calls to containerd during the stream that no request caused (outside every
    // other dockerd request's time) are roots.
    let requests: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|x| x.service == "dockerd" && x.kind == KIND_SERVER && x.span_id != stream.span_id)
        .collect();
    let background: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|x| {
            x.service == "containerd"
                && x.kind == KIND_SERVER
                && str_attr(x, "runtime_tap.client.executable") == Some("dockerd")
                && x.start_ns >= stream.start_ns
                && x.end_ns <= stream.end_ns
                && !requests
                    .iter()
                    .any(|r| r.start_ns <= x.start_ns && x.end_ns <= r.end_ns)
        })
        .collect();
    let names: Vec<&str> = background.iter().map(|x| x.name.as_str()).collect();
    assert!(
        background
            .iter()
            .any(|x| x.name == format!("{TASKS}/Delete") && str_attr(x, "container.id") == Some(id.as_str())),
        "the exit cleanup is among the background calls: {names:?}"
    );
    for x in &background {
        // dockerd 26 sends a fresh traceparent on every containerd call: with no request of
        // its own above it, runtime-tap follows it, and says so (README "Remote trace context").
        if str_attr(x, "runtime_tap.remote_parent").is_some() {
            assert_eq!(
                s.stack.bed.generation(),
                runtime_tap::bed::Generation::Trixie,
                "{}: only dockerd 26 sends contexts with no tracing on",
                x.name
            );
            assert_eq!(str_attr(x, "runtime_tap.remote_parent"), Some("followed"));
            assert_eq!(str_attr(x, "runtime_tap.link"), Some("traceparent"));
            continue;
        }
        assert!(
            x.parent_span_id.is_empty(),
            "{} made outside any request has a parent (link {:?})",
            x.name,
            str_attr(x, "runtime_tap.link")
        );
    }
    println!(
        "{} background calls while /events was open, all roots: {names:?}",
        background.len()
    );
    // The docker ps during the stream is a root of its own too.
    let ps: Vec<_> = dockerd_spans(&spans, "GET /containers/json")
        .into_iter()
        .filter(|x| x.start_ns >= stream.start_ns && x.end_ns <= stream.end_ns)
        .collect();
    assert!(!ps.is_empty());
    assert!(ps.iter().all(|x| x.parent_span_id.is_empty()));
    docker_ok(s, &["rm", "tr-bg"]);
}

#[test]
fn errors_logs_exec_pull_events_and_secrets() {
    let (_serial, s) = setup();
    let id = docker_ok(
        s,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "tr-logs",
            "-e",
            "PASSWORD=hunter2",
            "bb:latest",
            "sh",
            "-c",
            "echo logged; sleep 30",
        ],
    )
    .trim()
    .to_string();
    let mut logs = s
        .stack
        .bed
        .docker(&s.stack.docker)
        .args(["logs", "-f", "tr-logs"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is open once it has shown the container's first line.
    // (The reader is kept open until the CLI ends, so its writes never meet a closed pipe.)
    let mut logs_out = std::io::BufReader::new(logs.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut logs_out, &mut first).unwrap();
    assert_eq!(first, "logged\n");
    let exec = docker_ok(s, &["exec", "tr-logs", "echo", "from-exec"]);
    assert_eq!(exec, "from-exec\n");
    docker_ok(s, &["stop", "-t", "1", "tr-logs"]);
    let _ = logs.wait();
    drop(logs_out);
    docker_ok(s, &["rm", "tr-logs"]);
    let missing = docker(s, &["inspect", "nosuch-trace"]);
    assert!(!missing.status.success());
    let pull = docker(s, &["pull", "registry.invalid/nosuch/image:1.0"]);
    assert!(!pull.status.success());
    let _ = docker(
        s,
        &["login", "-u", "tr-user", "-p", "hunter2-login", "registry.invalid"],
    );
    let since = "2000-01-01T00:00:00";
    let until = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let past = docker_ok(s, &["events", "--since", since, "--until", &until]);
    assert!(past.contains("container start"), "{past}");
    let spans = wait_spans(s, "pull and events", |sp| {
        dockerd_spans(sp, "POST /images/create")
            .iter()
            .any(|p| str_attr(p, "container.image.name") == Some("registry.invalid/nosuch/image"))
            && dockerd_spans(sp, "GET /containers/{id}/json")
                .iter()
                .any(|x| str_attr(x, "runtime_tap.container.ref") == Some("nosuch-trace"))
            && dockerd_spans(sp, "GET /events")
                .iter()
                .any(|x| str_attr(x, "url.query").is_some_and(|q| q.contains("until=")))
            && dockerd_spans(sp, "DELETE /containers/{id}")
                .iter()
                .any(|x| str_attr(x, "container.id") == Some(id.as_str()))
    });
    // 404 with the daemon's message, not an error status.
    let inspect: Vec<_> = dockerd_spans(&spans, "GET /containers/{id}/json")
        .into_iter()
        .filter(|x| str_attr(x, "runtime_tap.container.ref") == Some("nosuch-trace"))
        .collect();
    assert!(
        !inspect.is_empty(),
        "{:#?}",
        spans
            .iter()
            .filter(|x| x.name.contains("json") && x.service == "dockerd")
            .collect::<Vec<_>>()
    );
    assert_eq!(int_attr(inspect[0], "http.response.status_code"), Some(404));
    assert!(str_attr(inspect[0], "docker.error.message").is_some_and(|m| m.contains("nosuch-trace")));
    assert_eq!(inspect[0].status_code, STATUS_UNSET);
    // A pull without a registry is an error.
    let pulls = dockerd_spans(&spans, "POST /images/create");
    assert!(
        pulls.iter().any(|p| p.status_code == STATUS_ERROR
            && str_attr(p, "container.image.name") == Some("registry.invalid/nosuch/image")),
        "{pulls:?}"
    );
    // logs -f, exec, stop and rm by name resolve to the full id.
    let stop: Vec<_> = dockerd_spans(&spans, "POST /containers/{id}/stop")
        .into_iter()
        .filter(|x| str_attr(x, "container.id") == Some(id.as_str()))
        .collect();
    assert_eq!(stop.len(), 1);
    let stop = stop[0];
    assert_eq!(int_attr(stop, "http.response.status_code"), Some(204));
    let logs: Vec<_> = dockerd_spans(&spans, "GET /containers/{id}/logs")
        .into_iter()
        .filter(|l| str_attr(l, "container.id") == Some(id.as_str()))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let logs = logs[0];
    assert!(
        str_attr(logs, "url.query").is_some_and(|q| q.contains("follow=1")),
        "{logs:?}"
    );
    // A long-lived stream: open before the exec, ended by the container stopping, not cut.
    assert!(!is_incomplete(logs), "{logs:?}");
    assert!(logs.end_ns >= stop.start_ns, "logs -f ended before the stop");
    assert!(int_attr(logs, "runtime_tap.response.bytes").unwrap_or(0) >= "logged\n".len() as i64);
    // exec: the create names the container and returns the exec id; the start is hijacked,
    // with bytes each way, about the same exec.
    let exec_create: Vec<_> = dockerd_spans(&spans, "POST /containers/{id}/exec")
        .into_iter()
        .filter(|e| str_attr(e, "container.id") == Some(id.as_str()))
        .collect();
    assert_eq!(exec_create.len(), 1);
    let exec_id = str_attr(exec_create[0], "container.exec.id").expect("container.exec.id from the exec create");
    assert_eq!(exec_id.len(), 64);
    assert!(
        logs.start_ns < exec_create[0].start_ns,
        "logs -f was open before the exec"
    );
    let exec_start = dockerd_spans(&spans, "POST /exec/{id}/start");
    assert_eq!(exec_start.len(), 1, "{exec_start:#?}");
    let exec_start = exec_start[0];
    assert_eq!(str_attr(exec_start, "container.exec.id"), Some(exec_id));
    // docker 20.10's CLI asks for `Upgrade: tcp` and dockerd switches protocols.
    assert_eq!(
        int_attr(exec_start, "http.response.status_code"),
        Some(101),
        "{exec_start:?}"
    );
    // Request: the start's JSON body; response: one stdout frame (8-byte header + line).
    assert!(
        int_attr(exec_start, "runtime_tap.request.bytes").unwrap_or(0) > 0,
        "{exec_start:?}"
    );
    assert!(
        int_attr(exec_start, "runtime_tap.response.bytes").unwrap_or(0) >= (8 + "from-exec\n".len()) as i64,
        "{exec_start:?}"
    );
    // docker rm: a DELETE with the full id, answered 204.
    let rm: Vec<_> = dockerd_spans(&spans, "DELETE /containers/{id}")
        .into_iter()
        .filter(|x| str_attr(x, "container.id") == Some(id.as_str()))
        .collect();
    assert_eq!(rm.len(), 1, "{:#?}", dockerd_spans(&spans, "DELETE /containers/{id}"));
    assert_eq!(int_attr(rm[0], "http.response.status_code"), Some(204));
    // docker events --since --until: the past events as linked event spans, and the stream
    // ends normally when --until passes.
    let stream: Vec<_> = dockerd_spans(&spans, "GET /events")
        .into_iter()
        .filter(|x| str_attr(x, "url.query").is_some_and(|q| q.contains("until=")))
        .collect();
    assert_eq!(stream.len(), 1, "{:#?}", dockerd_spans(&spans, "GET /events"));
    let stream = stream[0];
    assert!(!is_incomplete(stream), "{stream:?}");
    assert_eq!(int_attr(stream, "http.response.status_code"), Some(200));
    let delivered: Vec<_> = spans
        .iter()
        .filter(|x| {
            x.service == "dockerd"
                && x.name.starts_with("event ")
                && x.start_ns >= stream.start_ns
                && x.start_ns <= stream.end_ns
        })
        .collect();
    assert!(
        delivered.iter().any(|x| x.name == "event container start"),
        "{:?}",
        delivered.iter().map(|x| &x.name).collect::<Vec<_>>()
    );
    for ev in &delivered {
        assert_eq!(ev.kind, KIND_INTERNAL);
        assert_eq!(ev.links.len(), 1, "{ev:?}");
        assert_eq!(ev.links[0].span_id, stream.span_id, "{} linked elsewhere", ev.name);
        assert_eq!(ev.links[0].trace_id, stream.trace_id);
    }
    // The secrets never reach the exporter.
    let all = format!("{:?}", s.receiver.resource_spans());
    for secret in ["hunter2", "tr-user"] {
        assert!(!all.contains(secret), "{secret} reached the exporter");
    }
}

#[test]
fn cri_pod_starts_are_one_trace_each_and_traceparent_is_honoured() {
    let (_serial, s) = setup();
    // Imported on containerd's own socket: the wait for the CRI plugin's cache makes
    // ImageStatus calls, which through runtime-tap would join the first pod's start.
    s.stack
        .bed
        .import_cri_images(&s.stack.bed.containerd_socket(), &s.stack.images_tar)
        .expect("CRI images");
    let sock = s.stack.containerd.clone();
    let log_dir = s.stack.bed.dir.join("pods");
    std::fs::create_dir_all(&log_dir).unwrap();
    let pods = s.rt.block_on(async move {
        // Each pod runs its own image, so that an ImageStatus belongs to one pod only.
        let start_pod = |name: &'static str, image: &'static str| {
            let sock = sock.clone();
            let log_dir = log_dir.clone();
            async move {
                let mut c = GrpcClient::connect(&sock).await;
                let rs = "runtime.v1.RuntimeService";
                let config = json!({
                    "metadata": {"name": name, "namespace": "tr-ns", "uid": format!("uid-{name}"), "attempt": 0},
                    "log_directory": log_dir,
                    "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
                });
                let run = c.unary(&format!("{rs}/RunPodSandbox"), json!({"config": config.clone()}), &[]).await.unwrap();
                let sandbox = run["podSandboxId"].as_str().unwrap().to_string();
                let _ = c
                    .unary("runtime.v1.ImageService/PullImage", json!({"image": {"image": "registry.invalid/app:1"}, "sandbox_config": config.clone()}), &[])
                    .await;
                let mut containers = Vec::new();
                for ctr in ["one", "two"] {
                    // As kubelet does before each container: is the image there?
                    c.unary("runtime.v1.ImageService/ImageStatus", json!({"image": {"image": image}}), &[]).await.unwrap();
                    let create = c
                        .unary(
                            &format!("{rs}/CreateContainer"),
                            json!({"pod_sandbox_id": sandbox, "config": {"metadata": {"name": ctr}, "image": {"image": image}, "command": ["/bin/sleep", "1"], "log_path": format!("{ctr}.log")}, "sandbox_config": config}),
                            &[],
                        )
                        .await
                        .unwrap();
                    let id = create["containerId"].as_str().unwrap().to_string();
                    c.unary(&format!("{rs}/StartContainer"), json!({"container_id": id}), &[]).await.unwrap();
                    containers.push(id);
                }
                (name, sandbox, containers)
            }
        };
        let (a, b) = tokio::join!(
            start_pod("tr-pod-a", "registry.k8s.io/pause:3.6"),
            start_pod("tr-pod-b", "docker.io/library/bb:latest")
        );
        // A CRI call that carries kubelet's trace context joins that trace.
        let mut c = GrpcClient::connect(&sock).await;
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        c.unary("runtime.v1.RuntimeService/Version", json!({}), &[("traceparent", tp), ("tracestate", "k=v")]).await.unwrap();
        for (_, sandbox, _) in [&a, &b] {
            c.unary("runtime.v1.RuntimeService/StopPodSandbox", json!({"pod_sandbox_id": sandbox}), &[]).await.unwrap();
            c.unary("runtime.v1.RuntimeService/RemovePodSandbox", json!({"pod_sandbox_id": sandbox}), &[]).await.unwrap();
        }
        [a, b]
    });
    // The receiver is shared: other tests' pod starts are there too.
    let spans = wait_spans(s, "two pod start roots", |sp| {
        pods.iter().all(|(name, _, _)| {
            sp.iter()
                .any(|x| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some(name))
        })
    });
    for (name, sandbox, containers) in &pods {
        let root = spans
            .iter()
            .find(|x| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some(name))
            .expect("pod start root");
        assert_eq!(str_attr(root, "k8s.namespace.name"), Some("tr-ns"));
        assert_eq!(str_attr(root, "k8s.pod.uid"), Some(format!("uid-{name}").as_str()));
        assert_eq!(str_attr(root, "cri.pod_sandbox.id"), Some(sandbox.as_str()));
        assert!(root.parent_span_id.is_empty());
        let members: Vec<&ReceivedSpan> = spans.iter().filter(|x| x.parent_span_id == root.span_id).collect();
        let count = |m: &str| members.iter().filter(|x| x.name == format!("runtime.v1.{m}")).count();
        assert_eq!(count("RuntimeService/RunPodSandbox"), 1);
        assert_eq!(count("ImageService/PullImage"), 1);
        assert_eq!(count("RuntimeService/CreateContainer"), 2);
        assert_eq!(count("RuntimeService/StartContainer"), 2);
        assert_eq!(
            count("RuntimeService/StopPodSandbox"),
            0,
            "stop is not part of the start"
        );
        for m in &members {
            assert_eq!(m.trace_id, root.trace_id);
            if let Some(c) = str_attr(m, "container.id") {
                assert!(
                    containers.iter().any(|x| x == c),
                    "another pod's container under {name}"
                );
            }
        }
    }
    let version = spans
        .iter()
        .find(|x| x.name == "runtime.v1.RuntimeService/Version" && !x.parent_span_id.is_empty())
        .expect("Version with traceparent");
    assert_eq!(version.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(version.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(version.trace_state, "k=v");
    assert_eq!(str_attr(version, "runtime_tap.link"), Some("traceparent"));
    for ((name, _, _), image) in pods.iter().zip(["registry.k8s.io/pause", "docker.io/library/bb"]) {
        image_status_joins_its_pod_start(&spans, name, image);
    }
}

/// The pod's ImageStatus calls (one before each CreateContainer of its image) are members of
/// its `pod start` trace, under the root.
fn image_status_joins_its_pod_start(spans: &[ReceivedSpan], pod: &str, image: &str) {
    let root = spans
        .iter()
        .find(|x| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some(pod))
        .expect("pod start root");
    let status: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|x| {
            x.name == "runtime.v1.ImageService/ImageStatus" && str_attr(x, "container.image.name") == Some(image)
        })
        .collect();
    assert_eq!(
        status.len(),
        2,
        "{pod}: one ImageStatus of {image} per container: {status:#?}"
    );
    for st in status {
        assert_eq!(
            (st.trace_id.as_str(), st.parent_span_id.as_str()),
            (root.trace_id.as_str(), root.span_id.as_str()),
            "{pod}: ImageStatus of {image} not under its pod start (link {:?})",
            str_attr(st, "runtime_tap.link")
        );
    }
}

#[test]
fn default_sampling_keeps_the_pod_start_and_a_counted_fraction_of_polls() {
    let (_serial, s) = setup();
    // A second runtime-tap in front of the same containerd, with the default sampling rules.
    let dir = support::TempDir::new("sampling");
    let port = support::free_port();
    let config = support::one_intercept(
        "cri-sampled",
        &dir.path("cri.sock"),
        &s.stack.bed.containerd_socket(),
        &format!("127.0.0.1:{port}"),
    ) + &format!("\n[export]\nendpoint = \"{}\"\n", s.receiver.endpoint());
    let tap = support::Tap::start(&dir.0, &config);
    s.stack
        .bed
        .import_cri_images(&s.stack.bed.containerd_socket(), &s.stack.images_tar)
        .expect("CRI images");
    let sock = dir.path("cri.sock");
    let log_dir = dir.path("pods");
    std::fs::create_dir_all(&log_dir).unwrap();
    // kubelet's loop: ListPodSandbox + ListContainers every second for a minute.
    let polls = 60;
    let started = Instant::now();
    s.rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        let rs = "runtime.v1.RuntimeService";
        let config = json!({"metadata": {"name": "sampled-pod", "namespace": "tr-ns", "uid": "uid-sampled", "attempt": 0}, "log_directory": log_dir, "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}});
        let poller = {
            let sock = sock.clone();
            tokio::spawn(async move {
                let mut p = GrpcClient::connect(&sock).await;
                for _ in 0..polls {
                    p.unary(&format!("{rs}/ListPodSandbox"), json!({}), &[]).await.unwrap();
                    p.unary(&format!("{rs}/ListContainers"), json!({}), &[]).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        // One pod start during the polls, as kubelet makes it (the pull fails: no registry).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let run = c.unary(&format!("{rs}/RunPodSandbox"), json!({"config": config.clone()}), &[]).await.unwrap();
        let sandbox = run["podSandboxId"].as_str().unwrap().to_string();
        let pull = c
            .unary("runtime.v1.ImageService/PullImage", json!({"image": {"image": "registry.invalid/app:1"}, "sandbox_config": config.clone()}), &[])
            .await;
        assert!(pull.is_err());
        let create = c
            .unary(&format!("{rs}/CreateContainer"), json!({"pod_sandbox_id": sandbox, "config": {"metadata": {"name": "c"}, "image": {"image": "registry.k8s.io/pause:3.6"}, "command": ["/bin/true"], "log_path": "c.log"}, "sandbox_config": config}), &[])
            .await
            .unwrap();
        c.unary(&format!("{rs}/StartContainer"), json!({"container_id": create["containerId"]}), &[]).await.unwrap();
        poller.await.unwrap();
        c.unary(&format!("{rs}/StopPodSandbox"), json!({"pod_sandbox_id": sandbox}), &[]).await.unwrap();
        c.unary(&format!("{rs}/RemovePodSandbox"), json!({"pod_sandbox_id": sandbox}), &[]).await.unwrap();
    });
    let elapsed = started.elapsed().as_secs_f64();
    let is_root = |x: &ReceivedSpan| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some("sampled-pod");
    let spans = wait_spans(s, "sampled pod start and the stop after the polls", |sp| {
        sp.iter().any(is_root)
            && sp
                .iter()
                .any(|x| x.service == "cri-sampled" && x.name == "runtime.v1.RuntimeService/RemovePodSandbox")
    });
    let mine: Vec<&ReceivedSpan> = spans.iter().filter(|x| x.service == "cri-sampled").collect();
    // The pod start in full: every call of it, under its root, which is in the resource of the
    // client that made the calls (this test's executable), not the intercept's.
    let root = spans.iter().find(|x| is_root(x)).unwrap();
    assert_eq!(root.service, client_service_name());
    let members: Vec<&str> = mine
        .iter()
        .filter(|x| x.parent_span_id == root.span_id && x.trace_id == root.trace_id)
        .map(|x| x.name.as_str())
        .collect();
    for m in [
        "RuntimeService/RunPodSandbox",
        "ImageService/PullImage",
        "RuntimeService/CreateContainer",
        "RuntimeService/StartContainer",
    ] {
        assert_eq!(
            members.iter().filter(|x| **x == format!("runtime.v1.{m}")).count(),
            1,
            "{m} kept under the pod start: {members:?}"
        );
    }
    let kept = |m: &str| {
        mine.iter()
            .filter(|x| x.name == format!("runtime.v1.RuntimeService/{m}"))
            .count()
    };
    // The default rule for a poll: a token bucket of one trace per 10 s per method, holding
    // one at the start. Over `elapsed` seconds that keeps at most 1 + elapsed/10 (plus a
    // second of slack for when the decisions are made); with a poll every second, a token
    // never waits more than about a second to be used.
    let most = 1 + ((elapsed + 1.0) * sample::DEFAULT_POLL_PER_SECOND).floor() as usize;
    let least = 1 + ((elapsed - 2.0) / (1.0 / sample::DEFAULT_POLL_PER_SECOND + 2.0)).floor() as usize;
    for m in ["ListPodSandbox", "ListContainers"] {
        println!(
            "{m}: {} of {polls} kept in {elapsed:.1} s (allowed {least}..={most})",
            kept(m)
        );
        assert!((least..=most).contains(&kept(m)), "{m}: {} of {polls} kept", kept(m));
    }
    // Every call is accounted for: the sampled-out polls are counted.
    let dropped = tap
        .metric("runtime_tap_spans_dropped_total{reason=\"sampled_out\"}")
        .unwrap();
    assert_eq!(
        dropped as usize,
        2 * polls - kept("ListPodSandbox") - kept("ListContainers")
    );
    // RED metrics: every call is in the histogram, sampled or not, and for the calls that
    // were all kept, the histogram's sum is the exported spans' durations.
    let metrics = tap.metrics();
    let series = |kind: &str, method: &str, status: &str| {
        let key = format!(
            "runtime_tap_call_duration_seconds_{kind}{{intercept=\"cri-sampled\",method=\"runtime.v1.{method}\",status=\"{status}\"}}"
        );
        *metrics.get(&key).unwrap_or_else(|| panic!("{key} not on /metrics"))
    };
    for (method, status, calls) in [
        ("RuntimeService/ListPodSandbox", "OK", polls),
        ("RuntimeService/ListContainers", "OK", polls),
        ("RuntimeService/RunPodSandbox", "OK", 1),
        ("ImageService/PullImage", "UNKNOWN", 1),
        ("RuntimeService/CreateContainer", "OK", 1),
        ("RuntimeService/StartContainer", "OK", 1),
        ("RuntimeService/StopPodSandbox", "OK", 1),
        ("RuntimeService/RemovePodSandbox", "OK", 1),
    ] {
        assert_eq!(series("count", method, status), calls as f64, "{method} count");
        if calls == 1 {
            let span = mine
                .iter()
                .find(|x| x.name == format!("runtime.v1.{method}"))
                .unwrap_or_else(|| panic!("{method} exported"));
            let span_seconds = (span.end_ns - span.start_ns) as f64 / 1e9;
            let sum = series("sum", method, status);
            assert!(
                (sum - span_seconds).abs() < 1e-6,
                "{method}: histogram {sum} vs span {span_seconds}"
            );
        }
    }
}

const TRANSFER: &str = "containerd.services.transfer.v1.Transfer/Transfer";
const STREAM: &str = "containerd.services.streaming.v1.Streaming/Stream";

#[test]
fn ctr_images_import_is_one_trace_on_every_generation() {
    let (_serial, s) = setup();
    let ns = "tr-import";
    let out = s
        .stack
        .bed
        .ctr(&s.stack.containerd)
        .args(["-n", ns, "images", "import"])
        .arg(&s.stack.images_tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let versions = s.stack.bed.versions();
    if s.stack.bed.generation() != runtime_tap::bed::Generation::Sid {
        // containerd 1.x: ctr writes each blob itself (Content/Write) and names the images
        // (Images/Create); no Transfer service on the wire.
        let spans = wait_spans(s, "ctr import's Images/Create", |sp| {
            sp.iter().any(|x| {
                x.name == "containerd.services.images.v1.Images/Create"
                    && str_attr(x, "containerd.namespace") == Some(ns)
            })
        });
        assert!(!spans.iter().any(|x| x.name == TRANSFER), "{versions}");
        return;
    }
    // containerd 2.x: one Transfer/Transfer naming the image the archive holds, with the
    // data and progress streams it named under it in its trace, though they opened first.
    let transfer_of = |sp: &[ReceivedSpan]| {
        sp.iter()
            .find(|x| x.name == TRANSFER && str_attr(x, "containerd.namespace") == Some(ns))
            .cloned()
    };
    let spans = wait_spans(s, "ctr import's Transfer and its two streams", |sp| {
        transfer_of(sp).is_some_and(|t| children(sp, &t).iter().filter(|k| k.name == STREAM).count() == 2)
    });
    let t = transfer_of(&spans).unwrap();
    assert!(t.parent_span_id.is_empty(), "ctr's Transfer is a root");
    assert_eq!(
        str_attr(&t, "containerd.transfer.source.type"),
        Some("containerd.types.transfer.ImageImportStream"),
        "{versions}"
    );
    assert_eq!(
        str_attr(&t, "containerd.transfer.destination.type"),
        Some("containerd.types.transfer.ImageStore")
    );
    let image = str_attr(&t, "container.image.name");
    assert!(
        matches!(image, Some("docker.io/library/bb" | "registry.k8s.io/pause")),
        "the Transfer names an image of the archive: {image:?} ({versions})"
    );
    let streams = children(&spans, &t);
    let named: HashSet<&str> = ["containerd.transfer.stream", "containerd.transfer.progress_stream"]
        .iter()
        .filter_map(|k| str_attr(&t, k))
        .collect();
    for st in streams.iter().filter(|k| k.name == STREAM) {
        assert_eq!(st.trace_id, t.trace_id);
        assert_eq!(str_attr(st, "runtime_tap.link"), Some("stream"));
        assert!(
            named.contains(str_attr(st, "containerd.stream.id").unwrap_or("")),
            "{st:?}"
        );
        assert!(st.start_ns <= t.start_ns, "the stream opened before its Transfer");
    }
    assert_eq!(named.len(), 2);
}

/// Environment of [`kubelet_pod_start`]: the CRI socket, and the folder for the pod's logs.
const KUBELET_SOCK: &str = "RTAP_TEST_KUBELET_SOCK";
const KUBELET_LOGS: &str = "RTAP_TEST_KUBELET_LOGS";
/// The image the pod pulls (from the bed's registry) and runs.
const KUBELET_IMAGE: &str = "RTAP_TEST_KUBELET_IMAGE";
/// The pod's W3C context, in its annotations.
const POD_TRACEPARENT: &str = "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01";

/// Not a test: the CRI client of
/// [`a_pod_start_from_kubelet_has_phases_that_add_up_and_kubelets_sli_buckets`], run by it in a
/// process whose executable is named `kubelet` (this test binary, hard-linked). It starts one pod
/// as kubelet does and prints `sandbox container` on a line of its own.
#[test]
#[ignore = "helper process of a_pod_start_from_kubelet_..., which runs it with its environment"]
fn kubelet_pod_start() {
    let sock = std::path::PathBuf::from(std::env::var(KUBELET_SOCK).expect("run by the kubelet test"));
    let log_dir = std::env::var(KUBELET_LOGS).expect("run by the kubelet test");
    let image = std::env::var(KUBELET_IMAGE).expect("run by the kubelet test");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sandbox, container) = rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        let rs = "runtime.v1.RuntimeService";
        let config = json!({
            "metadata": {"name": "kubelet-pod", "namespace": "tr-ns", "uid": "uid-kubelet-pod", "attempt": 0},
            "log_directory": log_dir,
            "annotations": {"tracing.example.io/traceparent": POD_TRACEPARENT},
            "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
        });
        let run = c.unary(&format!("{rs}/RunPodSandbox"), json!({"config": config.clone()}), &[]).await.unwrap();
        let sandbox = run["podSandboxId"].as_str().unwrap().to_string();
        // As kubelet does: is the image there? No: pull it (from the bed's registry), create.
        c.unary("runtime.v1.ImageService/ImageStatus", json!({"image": {"image": image}}), &[]).await.unwrap();
        c.unary("runtime.v1.ImageService/PullImage", json!({"image": {"image": image}, "sandbox_config": config.clone()}), &[])
            .await
            .unwrap();
        let create = c
            .unary(
                &format!("{rs}/CreateContainer"),
                json!({"pod_sandbox_id": sandbox, "config": {"metadata": {"name": "c"}, "image": {"image": image}, "command": ["/bin/sleep", "1"], "log_path": "c.log"}, "sandbox_config": config}),
                &[],
            )
            .await
            .unwrap();
        let id = create["containerId"].as_str().unwrap().to_string();
        c.unary(&format!("{rs}/StartContainer"), json!({"container_id": id}), &[]).await.unwrap();
        (sandbox, id)
    });
    println!("\nKUBELET-POD {sandbox} {container}");
}

/// This test binary under the file name `kubelet` (a hard link, else a copy: /proc/PID/exe
/// names the file, a symbolic link would resolve to the original).
fn as_kubelet(dir: &std::path::Path) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let kubelet = dir.join("kubelet");
    if std::fs::hard_link(&exe, &kubelet).is_err() {
        std::fs::copy(&exe, &kubelet).unwrap();
    }
    kubelet
}

/// Starts (and removes) one pod as kubelet does, through `s`'s containerd intercept, from a
/// process named `kubelet` (the [`kubelet_pod_start`] helper); returns its sandbox and container.
fn kubelet_starts_a_pod(s: &Setup) -> (String, String) {
    s.stack
        .bed
        .import_cri_images(&s.stack.bed.containerd_socket(), &s.stack.images_tar)
        .expect("CRI images");
    let dir = support::TempDir::new("kubelet");
    let logs = dir.0.join("pods");
    std::fs::create_dir_all(&logs).unwrap();
    let out = std::process::Command::new(as_kubelet(&dir.0))
        .args([
            "kubelet_pod_start",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KUBELET_SOCK, &s.stack.containerd)
        .env(KUBELET_LOGS, &logs)
        .env(KUBELET_IMAGE, &s.registry_image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubelet helper: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KUBELET-POD "))
        .expect("helper's result");
    let (sandbox, container) = line.split_once(' ').unwrap();
    let (sandbox, container) = (sandbox.to_string(), container.to_string());
    {
        let sock = s.stack.containerd.clone();
        let sandbox = sandbox.clone();
        s.rt.block_on(async move { GrpcClient::connect(&sock).await.remove_pod(&sandbox).await });
    }
    (sandbox, container)
}

#[test]
fn a_pod_start_from_kubelet_has_phases_that_add_up_and_kubelets_sli_buckets() {
    let (_serial, s) = setup();
    let (sandbox, container) = kubelet_starts_a_pod(s);
    let spans = wait_spans(s, "the kubelet pod's start root", |sp| {
        sp.iter()
            .any(|x| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some("kubelet-pod"))
    });
    let root = spans
        .iter()
        .find(|x| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some("kubelet-pod"))
        .unwrap();
    // The root is kubelet's operation, in kubelet's resource; its calls stay containerd's.
    assert_eq!(root.service, "kubelet");
    assert!(
        matches!(root.resource.get("host.name"), Some(Val::Str(h)) if !h.is_empty()),
        "{:?}",
        root.resource
    );
    assert_eq!(root.kind, KIND_INTERNAL);
    assert_eq!(str_attr(root, "cri.pod_sandbox.id"), Some(sandbox.as_str()));
    let members: Vec<&ReceivedSpan> = spans.iter().filter(|x| x.parent_span_id == root.span_id).collect();
    let member = |m: &str| {
        let found: Vec<&&ReceivedSpan> = members.iter().filter(|x| x.name == format!("runtime.v1.{m}")).collect();
        found
    };
    for m in &members {
        assert_eq!(m.service, "containerd", "{}", m.name);
        assert_eq!(m.trace_id, root.trace_id);
        assert_eq!(
            str_attr(m, "runtime_tap.client.executable"),
            Some("kubelet"),
            "{}",
            m.name
        );
    }
    assert_eq!(member("RuntimeService/StartContainer").len(), 1);
    assert_eq!(
        str_attr(member("RuntimeService/StartContainer")[0], "container.id"),
        Some(container.as_str())
    );
    // The phases and kubelet's gaps add up to the root, to the millisecond.
    let phase = |k: &str| double_attr(root, &format!("runtime_tap.pod_start.{k}")).unwrap_or_else(|| panic!("{k}"));
    let total_ms = (root.end_ns - root.start_ns) as f64 / 1e6;
    let phases = ["sandbox", "image_pull", "image_check", "create", "start", "kubelet"];
    let sum: f64 = phases.iter().map(|p| phase(&format!("phase.{p}_ms"))).sum();
    eprintln!(
        "pod start {total_ms:.3} ms = {}; sum {sum:.3} ms",
        phases
            .map(|p| format!("{p} {:.3}", phase(&format!("phase.{p}_ms"))))
            .join(" + ")
    );
    assert!((sum - total_ms).abs() < 1.0, "phases {sum} ms, root {total_ms} ms");
    // Calls one at a time: each phase is its calls' durations.
    let dur = |x: &ReceivedSpan| (x.end_ns - x.start_ns) as f64 / 1e6;
    let sum_of = |m: &str| member(m).iter().map(|x| dur(x)).sum::<f64>();
    for (p, m) in [
        ("sandbox", "RuntimeService/RunPodSandbox"),
        ("image_pull", "ImageService/PullImage"),
        ("create", "RuntimeService/CreateContainer"),
        ("start", "RuntimeService/StartContainer"),
    ] {
        assert_eq!(member(m).len(), 1, "{m} in the pod start");
        assert!(
            (phase(&format!("phase.{p}_ms")) - sum_of(m)).abs() < 0.01,
            "{p}: {} vs {m} {}",
            phase(&format!("phase.{p}_ms")),
            sum_of(m)
        );
    }
    // A real pull, from the bed's registry: the two layers downloaded and unpacked.
    let pull = member("ImageService/PullImage")[0];
    assert_eq!(pull.status_code, STATUS_UNSET, "{:?}", pull.status_message);
    assert!(phase("phase.image_pull_ms") > 0.0);
    assert!((phase("phase.image_pull_longest_ms") - sum_of("ImageService/PullImage")).abs() < 0.01);
    // The SLI excludes the pull, nothing else.
    assert!((phase("sli_ms") - (total_ms - phase("phase.image_pull_ms"))).abs() < 0.01);
    // The pod's own context (its annotation) is a link of the root.
    assert!(
        root.links
            .iter()
            .any(|l| l.trace_id == POD_TRACEPARENT[3..35] && l.span_id == POD_TRACEPARENT[36..52]),
        "{:?}",
        root.links
    );
    // /metrics: the pod start histograms, the SLI with kubelet's buckets.
    settled(s);
    let m = s.stack.tap.metrics();
    for le in [
        "0.5", "1", "2", "3", "4", "5", "6", "8", "10", "20", "30", "45", "60", "120", "180", "240", "300", "360",
        "480", "600", "900", "1200", "1800", "2700", "3600", "+Inf",
    ] {
        let key = format!("runtime_tap_pod_start_sli_duration_seconds_bucket{{le=\"{le}\"}}");
        // Every bucket is there; those at or above this pod's SLI count it (a loaded machine
        // can make the SLI longer than the first bucket).
        let count = m.get(&key).copied();
        let bound = le.parse::<f64>().unwrap_or(f64::INFINITY);
        let counted = bound * 1e3 >= phase("sli_ms");
        assert!(count.is_some_and(|n| !counted || n >= 1.0), "{key}: {count:?}");
    }
    for p in [
        "sandbox",
        "image_pull",
        "image_check",
        "create",
        "start",
        "kubelet",
        "total",
    ] {
        let key = format!("runtime_tap_pod_start_duration_seconds_count{{phase=\"{p}\"}}");
        assert!(m.get(&key).is_some_and(|n| *n >= 1.0), "{key}");
    }
    assert!(
        m.get("runtime_tap_pod_start_duration_seconds_sum{phase=\"total\"}")
            .is_some_and(|s| *s >= total_ms / 1e3 - 1e-6)
    );
}

/// Prints the spans an operation added, by kind (the README's span volume figure).
fn print_volume(what: &str, added: &[ReceivedSpan], in_trace: usize) {
    let count = |k: i32| added.iter().filter(|x| x.kind == k).count();
    println!(
        "VOLUME {what}: {} SERVER, {} CLIENT, {} INTERNAL spans ({in_trace} in its trace)",
        count(KIND_SERVER),
        count(KIND_CLIENT),
        count(KIND_INTERNAL),
    );
}

/// The span `child`'s parent, in its trace.
fn parent_of<'a>(spans: &'a [ReceivedSpan], child: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|p| p.span_id == child.parent_span_id && p.trace_id == child.trace_id)
}

#[test]
fn client_spans_draw_docker_to_dockerd_to_containerd_and_kubelet_to_containerd() {
    // A stack of its own: the shared one keeps the default (off).
    let s = &start_setup("client-spans", "\n[correlation]\nclient_spans = true\n");
    // docker -> dockerd -> containerd.
    let id = docker_ok(
        s,
        &["create", "--network", "none", "--name", "cs-start", "bb:latest", "true"],
    )
    .trim()
    .to_string();
    settled(s);
    let before = s.receiver.spans().len();
    docker_ok(s, &["start", "cs-start"]);
    let spans = wait_spans(s, "docker start with its CLIENT span", |sp| {
        with_container(sp, "POST /containers/{id}/start", &id).iter().any(|st| {
            st.kind == KIND_SERVER
                && children(sp, st).iter().any(|k| k.name == format!("{TASKS}/Start"))
                && parent_of(sp, st).is_some()
        })
    });
    let start = with_container(&spans, "POST /containers/{id}/start", &id)
        .into_iter()
        .find(|x| x.kind == KIND_SERVER)
        .unwrap();
    assert_eq!(start.service, "dockerd");
    let client = parent_of(&spans, start).expect("the start's CLIENT parent");
    assert_eq!(client.kind, KIND_CLIENT);
    assert_eq!(client.service, "docker", "the docker CLI's own resource");
    assert_eq!(client.name, start.name);
    assert_eq!((client.start_ns, client.end_ns), (start.start_ns, start.end_ns));
    assert!(client.parent_span_id.is_empty(), "the trace's root");
    assert_eq!(str_attr(client, "runtime_tap.client.executable"), Some("docker"));
    assert_eq!(str_attr(client, "http.request.method"), Some("POST"));
    assert!(str_attr(client, "server.address").is_some());
    assert_eq!(str_attr(client, "network.transport"), Some("unix"));
    // The self times are on the root, the CLI's layer with none of its own.
    assert_eq!(double_attr(client, "runtime_tap.self_time_ms.docker"), Some(0.0));
    assert!(double_attr(client, "runtime_tap.self_time_ms.containerd").is_some_and(|v| v > 0.0));
    // dockerd's containerd calls: SERVER children of the start, no CLIENT span of their own.
    let task_start = children(&spans, start)
        .into_iter()
        .find(|k| k.name == format!("{TASKS}/Start"))
        .expect("Tasks/Start under the start");
    assert_eq!(
        (task_start.service.as_str(), task_start.kind),
        ("containerd", KIND_SERVER)
    );
    settled(s);
    let spans = s.receiver.spans();
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|x| x.trace_id == start.trace_id).collect();
    let clients: Vec<&&ReceivedSpan> = trace.iter().filter(|x| x.kind == KIND_CLIENT).collect();
    assert_eq!(clients.len(), 1, "one CLIENT span in the start's trace: {clients:#?}");
    // The volume the README states: what `docker start` added, by kind.
    print_volume("docker start", &spans[before..], trace.len());
    docker_ok(s, &["rm", "-f", "cs-start"]);

    // kubelet -> containerd: pod start (kubelet) -> CLIENT (kubelet) -> SERVER (containerd).
    settled(s);
    let before = s.receiver.spans().len();
    kubelet_starts_a_pod(s);
    let is_root = |x: &ReceivedSpan| x.name == "pod start" && str_attr(x, "k8s.pod.name") == Some("kubelet-pod");
    let spans = wait_spans(s, "the kubelet pod's start root", |sp| sp.iter().any(is_root));
    let root = spans.iter().find(|x| is_root(x)).unwrap();
    assert_eq!((root.service.as_str(), root.kind), ("kubelet", KIND_INTERNAL));
    let run = spans
        .iter()
        .find(|x| {
            x.name == "runtime.v1.RuntimeService/RunPodSandbox" && x.trace_id == root.trace_id && x.kind == KIND_SERVER
        })
        .expect("RunPodSandbox in the pod's trace");
    assert_eq!(run.service, "containerd");
    let client = parent_of(&spans, run).expect("RunPodSandbox's CLIENT parent");
    assert_eq!(
        (client.kind, client.service.as_str(), client.name.as_str()),
        (KIND_CLIENT, "kubelet", run.name.as_str())
    );
    assert_eq!(
        client.parent_span_id, root.span_id,
        "the CLIENT span hangs from the pod start root"
    );
    assert_eq!(str_attr(client, "rpc.method"), Some(run.name.as_str()));
    // Every call of the pod start has its CLIENT span: one per SERVER span of the trace.
    settled(s);
    let spans = s.receiver.spans();
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|x| x.trace_id == root.trace_id).collect();
    let servers = trace.iter().filter(|x| x.kind == KIND_SERVER).count();
    let clients: Vec<&&ReceivedSpan> = trace.iter().filter(|x| x.kind == KIND_CLIENT).collect();
    assert_eq!(clients.len(), servers, "{trace:#?}");
    for c in &clients {
        assert_eq!(
            (c.service.as_str(), c.parent_span_id.as_str()),
            ("kubelet", root.span_id.as_str())
        );
    }
    print_volume("kubelet pod start", &spans[before..], trace.len());
    // The accounting on /metrics holds with CLIENT spans counted on their own.
    let m = s.stack.tap.metrics();
    let get = |k: &str| m.get(k).copied().unwrap_or(-1.0);
    assert!(get("runtime_tap_client_spans_total") >= 1.0 + clients.len() as f64);
    let dropped = |r: &str| get(&format!("runtime_tap_spans_dropped_total{{reason=\"{r}\"}}"));
    assert_eq!(
        get("runtime_tap_calls_total")
            + get("runtime_tap_event_spans_total")
            + get("runtime_tap_pod_spans_total")
            + get("runtime_tap_child_spans_total")
            + get("runtime_tap_client_spans_total")
            - dropped("sampled_out")
            - dropped("not_sampled"),
        get("runtime_tap_spans_submitted_total"),
        "calls + events + pods + children + clients - drops = submitted"
    );
}
