//! The waterfall on the traces operators look at most: a docker start, a CRI pod start, an
//! error. Run with `--nocapture` to see them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::trace::attr::Attr;
use crate::trace::span::{ParentRef, SpanKind};

const CTR: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

fn sp(id: u8, parent: Option<u8>, service: &str, name: &str, start: u64, end: u64) -> SpanRecord {
    SpanRecord {
        trace_id: [0xab; 16],
        span_id: [id; 8],
        parent: parent.map(|p| ParentRef {
            span_id: [p; 8],
            remote: false,
        }),
        trace_state: None,
        name: name.into(),
        kind: SpanKind::Server,
        start: at(start),
        end: at(end),
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        status: SpanStatus::Unset,
        service: Arc::from(service),
    }
}

fn with(mut s: SpanRecord, attrs: Vec<Attr>) -> SpanRecord {
    s.attributes.extend(attrs);
    s
}

fn docker_start() -> Vec<SpanRecord> {
    let ok = || Attr::str(RPC_RESPONSE_STATUS_CODE, "OK");
    vec![
        // Arrival order is not tree order: children first, as the exporter may deliver them.
        with(
            sp(
                3,
                Some(1),
                "containerd",
                "containerd.services.tasks.v1.Tasks/Create",
                8,
                40,
            ),
            vec![ok(), Attr::str(CONTAINER_ID, CTR)],
        ),
        with(
            sp(
                2,
                Some(1),
                "containerd",
                "containerd.services.containers.v1.Containers/Get",
                2,
                4,
            ),
            vec![ok(), Attr::str(CONTAINER_ID, CTR)],
        ),
        with(
            sp(
                4,
                Some(1),
                "containerd",
                "containerd.services.tasks.v1.Tasks/Start",
                41,
                52,
            ),
            vec![
                ok(),
                Attr::str(CONTAINER_ID, CTR),
                Attr::int("containerd.task.pid", 4242),
            ],
        ),
        with(
            sp(1, None, "dockerd", "POST /containers/{id}/start", 0, 57),
            vec![
                Attr::int(HTTP_RESPONSE_STATUS_CODE, 204),
                Attr::str(CONTAINER_ID, CTR),
                Attr::str(CONTAINER_IMAGE_NAME, "docker.io/library/busybox"),
                Attr::int("runtime_tap.self_time_ms.dockerd", 11),
                Attr::int("runtime_tap.self_time_ms.containerd", 46),
            ],
        ),
    ]
}

fn pod_start() -> Vec<SpanRecord> {
    let pod = |s: SpanRecord| with(s, vec![Attr::str(K8S_POD_NAME, "nginx-7c5ddbdf54-x2x8q")]);
    let mut root = pod(sp(1, None, "containerd", "pod start", 0, 2400));
    root.kind = SpanKind::Internal;
    root.attributes
        .push(Attr::int("runtime_tap.self_time_ms.containerd", 2250));
    root.attributes.push(Attr::int("runtime_tap.self_time_ms.kubelet", 150));
    vec![
        root,
        sp(
            2,
            Some(1),
            "containerd",
            "runtime.v1.RuntimeService/RunPodSandbox",
            0,
            600,
        ),
        with(
            sp(3, Some(1), "containerd", "runtime.v1.ImageService/PullImage", 650, 2000),
            vec![Attr::str(CONTAINER_IMAGE_NAME, "docker.io/library/nginx")],
        ),
        with(
            sp(
                4,
                Some(1),
                "containerd",
                "runtime.v1.RuntimeService/CreateContainer",
                2050,
                2250,
            ),
            vec![Attr::str(CONTAINER_ID, CTR)],
        ),
        with(
            sp(
                5,
                Some(1),
                "containerd",
                "runtime.v1.RuntimeService/StartContainer",
                2260,
                2400,
            ),
            vec![Attr::str(CONTAINER_ID, CTR)],
        ),
    ]
}

fn failed_start() -> Vec<SpanRecord> {
    let mut child = with(
        sp(
            2,
            Some(1),
            "containerd",
            "containerd.services.tasks.v1.Tasks/Create",
            5,
            30,
        ),
        vec![Attr::str(RPC_RESPONSE_STATUS_CODE, "UNKNOWN")],
    );
    child.status = SpanStatus::Error("failed to create shim task: OCI runtime create failed:\nexec: \"nope\"".into());
    let mut root = with(
        sp(1, None, "dockerd", "POST /containers/{id}/start", 0, 35),
        vec![Attr::int(HTTP_RESPONSE_STATUS_CODE, 500)],
    );
    root.status = SpanStatus::Error(String::new());
    vec![root, child]
}

/// The text without ANSI escapes.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn check_width(text: &str, width: usize) {
    for line in plain(text).lines() {
        assert!(line.chars().count() <= width, "wider than {width}: {line:?}");
    }
}

/// The filled cells of the bar on a line: (first, last) column offsets inside the bar.
fn bar_cells(line: &str) -> (usize, usize) {
    let bar: Vec<char> = line.rsplit('│').nth(1).unwrap().chars().collect();
    let first = bar.iter().position(|c| *c == '█').unwrap();
    let last = bar.iter().rposition(|c| *c == '█').unwrap();
    (first, last)
}

#[test]
fn docker_start_is_a_tree_with_bars_and_self_time() {
    let text = render(&docker_start(), 80, false);
    println!("{text}");
    check_width(&text, 80);
    assert!(!text.contains('\x1b'));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("trace abababababababababababababababab · "));
    assert!(lines[0].ends_with("4 spans · 57.0ms"), "{}", lines[0]);
    // Root first, then children by start, with full names where they fit.
    assert!(lines[1].starts_with("  POST /containers/{id}/start "), "{}", lines[1]);
    assert!(lines[1].contains(" dockerd ") && lines[1].contains(" 57.0ms "));
    assert!(lines[2].contains("ctr=9f86d081884c ") && lines[2].contains("status=204"));
    assert!(lines[2].contains("image=docker.io/library/busybox"));
    assert!(!text.contains(CTR), "container ids are shortened");
    let rest: Vec<&&str> = lines[3..].iter().filter(|l| l.contains("─ ")).collect();
    assert_eq!(rest.len(), 3);
    assert!(rest[0].contains("├─ ") && rest[0].contains("Get"));
    assert!(rest[1].contains("├─ ") && rest[1].contains("Tasks/Create"));
    assert!(rest[2].contains("└─ ") && rest[2].contains("Tasks/Start"));
    // Children share the root's container: not repeated. OK statuses are not shown.
    assert_eq!(text.matches("ctr=").count(), 1);
    assert!(!text.contains("status=OK"));
    // Bars: the root spans the whole bar; children lie inside it, in time order.
    let bar_w = bar_cells(lines[1]).1 + 1;
    assert_eq!(bar_cells(lines[1]).0, 0);
    let cells: Vec<(usize, usize)> = rest.iter().map(|l| bar_cells(l)).collect();
    assert!(cells[0].1 < cells[1].1 && cells[1].0 <= cells[2].0);
    assert_eq!(cells[2].1, bar_w * 52 / 57, "Tasks/Start ends at 52 of 57ms");
    assert_eq!(
        lines.last().unwrap().trim(),
        "self time: dockerd 11.0ms (19%) · containerd 46.0ms (81%)"
    );
}

#[test]
fn pod_start_shows_pod_image_and_kubelet_time() {
    let text = render(&pod_start(), 80, false);
    println!("{text}");
    check_width(&text, 80);
    assert!(text.contains("pod start"));
    assert_eq!(text.matches("pod=nginx-7c5ddbdf54-x2x8q").count(), 1);
    assert!(text.contains("image=docker.io/library/nginx"));
    // Container ids differ from the parent's (none): shown on each container call.
    assert_eq!(text.matches("ctr=9f86d081884c").count(), 2);
    assert!(text.contains("RuntimeService/RunPodSandbox"));
    assert!(text.contains("self time: containerd 2.25s (94%) · kubelet 150.0ms (6%)"));
}

#[test]
fn errors_are_marked_and_red_on_a_terminal() {
    let text = render(&failed_start(), 80, false);
    println!("{text}");
    check_width(&text, 80);
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("✗ ")).collect();
    assert_eq!(marked.len(), 2);
    assert!(text.contains("status=UNKNOWN") && text.contains("status=500"));
    let msg = text
        .lines()
        .find(|l| l.contains("error: failed to create shim task"))
        .unwrap();
    assert!(msg.contains("create failed: exec"), "newlines flattened: {msg}");
    let colored = render(&failed_start(), 80, true);
    assert!(colored.contains("\x1b[31m✗ \x1b[0m"));
    assert!(colored.contains("\x1b[31mTasks/Create\x1b[0m") || colored.contains("\x1b[31mcontainerd.services"));
    assert_eq!(plain(&colored), text, "colour adds escapes only");
}

#[test]
fn narrow_and_deep_traces_keep_the_width() {
    let mut spans = docker_start();
    // A chain 12 deep under the last child.
    for d in 0..12u8 {
        let parent = if d == 0 { 4 } else { 10 + d - 1 };
        spans.push(sp(
            10 + d,
            Some(parent),
            "containerd",
            "a.very.long.package.name.v1.Service/SomeMethodName",
            42,
            50,
        ));
    }
    for width in [20, 60, 80, 132] {
        let text = render(&spans, width, width % 2 == 0);
        check_width(&text, width.max(MIN_WIDTH));
        assert_eq!(plain(&text).matches("dName ").count(), 12, "{text}");
    }
}

#[test]
fn computed_self_time_without_attributes() {
    let mut spans = docker_start();
    spans[3].attributes.retain(|a| !a.key.starts_with(SELF_TIME_PREFIX));
    let text = render(&spans, 80, false);
    // Root 0..57, children cover 2..4, 8..40, 41..52 = 45ms.
    assert!(
        text.contains("self time: dockerd 12.0ms (21%) · containerd 45.0ms (79%)"),
        "{text}"
    );
}

#[test]
fn names_shorten_sensibly() {
    assert_eq!(fit_name("containerd.services.tasks.v1.Tasks/Start", 20), "Tasks/Start");
    assert_eq!(
        fit_name("containerd.services.tasks.v1.Tasks/Start", 99),
        "containerd.services.tasks.v1.Tasks/Start"
    );
    assert_eq!(fit_name("POST /containers/{id}/start", 16), "POST /co…}/start");
    assert_eq!(fmt_duration(Duration::from_micros(420)), "0.42ms");
    assert_eq!(fmt_duration(Duration::from_millis(185_000)), "3m05s");
    assert_eq!(render(&[], 80, true), "");
}

#[test]
fn a_lone_span_is_one_line() {
    let s = with(
        sp(1, None, "dockerd", "HEAD /_ping", 0, 1),
        vec![Attr::int(HTTP_RESPONSE_STATUS_CODE, 200)],
    );
    let text = render(&[s], 80, false);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("  HEAD /_ping "), "{text}");
    assert!(text.lines().nth(1).unwrap().trim() == "status=200", "{text}");
}

/// `docker_start` with the docker CLI's CLIENT span above the start (`client_spans`), the
/// self times on it as the correlator puts them.
fn client_docker_start() -> Vec<SpanRecord> {
    let mut spans = docker_start();
    let start = spans.iter_mut().find(|s| s.span_id == [1; 8]).unwrap();
    start.parent = Some(ParentRef {
        span_id: [9; 8],
        remote: false,
    });
    let selfs: Vec<Attr> = start
        .attributes
        .iter()
        .filter(|a| a.key.starts_with(SELF_TIME_PREFIX))
        .cloned()
        .collect();
    start.attributes.retain(|a| !a.key.starts_with(SELF_TIME_PREFIX));
    let mut client = sp(9, None, "docker", "POST /containers/{id}/start", 0, 57);
    client.kind = SpanKind::Client;
    client
        .attributes
        .push(Attr::double("runtime_tap.self_time_ms.docker", 0.0));
    client.attributes.extend(selfs);
    spans.push(client);
    spans
}

#[test]
fn a_client_span_is_folded_into_its_calls_line() {
    let text = render(&client_docker_start(), 80, false);
    println!("{text}");
    check_width(&text, 80);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with("5 spans · 57.0ms"),
        "every span is counted: {}",
        lines[0]
    );
    // One line for the call, at the top, saying who called; its children one level below it.
    assert_eq!(text.matches("POST /containers/{id}/start").count(), 1, "{text}");
    assert!(lines[1].starts_with("  POST /containers/{id}/start ") && lines[1].contains(" dockerd "));
    assert!(lines[2].contains("from docker ctr=9f86d081884c"), "{}", lines[2]);
    assert!(lines.iter().any(|l| l.contains("└─ ") && l.contains("Tasks/Start")));
    assert!(
        !lines.iter().any(|l| l.contains("│  └─") || l.contains("   └─ ")),
        "{text}"
    );
    assert_eq!(
        lines.last().unwrap().trim(),
        "self time: docker 0.00ms (0%) · dockerd 11.0ms (19%) · containerd 46.0ms (81%)"
    );
    // A CLIENT span with its SERVER call and nothing else is one call: one line.
    let mut lone = vec![
        sp(1, Some(9), "dockerd", "HEAD /_ping", 0, 1),
        sp(9, None, "docker", "HEAD /_ping", 0, 1),
    ];
    lone[1].kind = SpanKind::Client;
    assert_eq!(lone_call(&lone).map(|s| s.span_id), Some([1; 8]));
    let text = render(&lone, 80, false);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().trim() == "from docker", "{text}");
    // Not a pair: two SERVER spans.
    lone[1].kind = SpanKind::Server;
    assert!(lone_call(&lone).is_none());
}
