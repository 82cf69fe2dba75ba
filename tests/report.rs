//! `runtime-tap report` over a span file written by the real export pipeline (the file sink):
//! the text report's percentiles against ones computed here from the same durations, the
//! slowest operation's per-layer self time, and the `--html` page rendered in headless
//! Chromium (Debian's `chromium` package, installed when missing) with its charts drawn.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runtime_tap::trace::attr::Attr;
use runtime_tap::trace::export::{ExportConfig, Exporter};
use runtime_tap::trace::span::{ParentRef, SpanKind, SpanRecord, SpanStatus, new_span_id, new_trace_id};
use support::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_runtime-tap");
const BASE_NS: u64 = 1_700_000_000_000_000_000;
const START: &str = "POST /containers/{id}/start";
const TASKS_CREATE: &str = "containerd.services.tasks.v1.Tasks/Create";
const TASKS_START: &str = "containerd.services.tasks.v1.Tasks/Start";
const LIST: &str = "runtime.v1.RuntimeService/ListContainers";

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn span(trace: [u8; 16], parent: Option<&SpanRecord>, service: &str, name: &str, start: u64, dur: u64) -> SpanRecord {
    SpanRecord {
        trace_id: trace,
        span_id: new_span_id(),
        parent: parent.map(|p| ParentRef {
            span_id: p.span_id,
            remote: false,
        }),
        trace_state: None,
        name: name.to_owned(),
        kind: SpanKind::Server,
        start: at(start),
        end: at(start + dur),
        attributes: vec![Attr::str("container.id", "9f86d081884c7d659a2feaa0c55ad015")],
        events: Vec::new(),
        links: Vec::new(),
        status: SpanStatus::Unset,
        service: Arc::from(service),
    }
}

/// A deterministic pseudo-random duration between 0.1 ms and ~200 ms, in ns.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    100_000 + (*seed >> 33) % 200_000_000
}

/// The spans of the test file: 40 docker starts (dockerd root, two containerd children each,
/// every 7th Tasks/Start failing), 25 standalone CRI polls, and one slow start whose self
/// times are known: root 0..900 ms, children 100..300, 250..400, 500..600 (union 400 ms).
fn spans() -> Vec<SpanRecord> {
    let mut seed = 7;
    let mut out = Vec::new();
    for i in 0..40u64 {
        let t0 = BASE_NS + i * 1_000_000_000;
        let (a, b) = (next(&mut seed), next(&mut seed));
        let trace = new_trace_id();
        let root = span(trace, None, "dockerd", START, t0, a + b + next(&mut seed));
        let create = span(trace, Some(&root), "containerd", TASKS_CREATE, t0 + 1000, a);
        let mut start = span(trace, Some(&root), "containerd", TASKS_START, t0 + 1000 + a, b);
        if i % 7 == 3 {
            start.status = SpanStatus::Error("OCI runtime start failed".into());
        }
        out.extend([create, start, root]);
    }
    for i in 0..25u64 {
        let mut s = span(
            new_trace_id(),
            None,
            "cri",
            LIST,
            BASE_NS + i * 3_000_000,
            next(&mut seed),
        );
        s.attributes.clear();
        out.push(s);
    }
    let ms = 1_000_000;
    let t0 = BASE_NS + 100_000_000_000;
    let trace = new_trace_id();
    let root = span(trace, None, "dockerd", START, t0, 900 * ms);
    out.push(span(
        trace,
        Some(&root),
        "containerd",
        TASKS_CREATE,
        t0 + 100 * ms,
        200 * ms,
    ));
    out.push(span(
        trace,
        Some(&root),
        "containerd",
        TASKS_CREATE,
        t0 + 250 * ms,
        150 * ms,
    ));
    out.push(span(
        trace,
        Some(&root),
        "containerd",
        TASKS_START,
        t0 + 500 * ms,
        100 * ms,
    ));
    out.push(root);
    out
}

/// Writes `spans` through the real export pipeline's span file sink, in batches of 16.
fn write_span_file(path: &Path, spans: &[SpanRecord]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = ExportConfig {
            file: Some(path.to_owned()),
            max_batch: 16,
            ..ExportConfig::default()
        };
        let (exporter, handle) = Exporter::start(cfg, "node-1".into()).unwrap();
        for s in spans {
            exporter.submit(s.clone());
        }
        drop(exporter);
        let c = handle.shutdown(Duration::from_secs(10)).await;
        assert_eq!(c.exported, spans.len() as u64, "{c:?}");
    });
}

/// Nearest-rank percentile, written independently of the crate: sort, then the element at
/// 1-based rank ceil(p/100 * n).
fn percentile_ns(values: &[u64], p: f64) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.max(1) - 1]
}

fn fmt_ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn report(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("report").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn text_report_percentiles_match_an_independent_computation() {
    let dir = TempDir::new("report-text");
    let file = dir.path("spans.jsonl");
    let spans = spans();
    write_span_file(&file, &spans);
    // A line cut short by a crash is skipped and counted, not fatal.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"resourceSpans\":[{\"reso\n"))
        .unwrap();

    let (ok, text, err) = report(&[file.to_str().unwrap(), "--top", "3"]);
    println!("{text}");
    assert!(ok, "report failed: {err}");
    assert!(!text.contains('\x1b'), "no colour when stdout is not a terminal");
    assert!(
        text.contains(&format!("{} spans in 66 traces, 66 operations", spans.len())),
        "{text}"
    );
    assert!(text.contains("skipped: 1 of "), "{text}");

    // Expected per (service, name): durations in ns and errors.
    let mut expected: BTreeMap<(String, String), (Vec<u64>, usize)> = BTreeMap::new();
    for s in &spans {
        let e = expected.entry((s.service.to_string(), s.name.clone())).or_default();
        e.0.push(s.end.duration_since(s.start).unwrap().as_nanos() as u64);
        e.1 += usize::from(matches!(s.status, SpanStatus::Error(_)));
    }
    assert_eq!(expected.len(), 4);
    for ((service, name), (durations, errors)) in &expected {
        let row = text
            .lines()
            .find(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                t.len() > 6 && t[..t.len() - 6].join(" ") == format!("{service} {name}")
            })
            .unwrap_or_else(|| panic!("no row for {service} {name}"));
        let t: Vec<&str> = row.split_whitespace().collect();
        let nums = &t[t.len() - 6..];
        let want = [
            durations.len().to_string(),
            fmt_ms(percentile_ns(durations, 50.0)),
            fmt_ms(percentile_ns(durations, 90.0)),
            fmt_ms(percentile_ns(durations, 99.0)),
            fmt_ms(*durations.iter().max().unwrap()),
            format!("{:.1}%", *errors as f64 * 100.0 / durations.len() as f64),
        ];
        assert_eq!(nums, want, "{service} {name}: {row}");
    }

    // The slowest operation is the 900 ms start, with self time per layer from its tree:
    // dockerd 900 - 400 (union of children) = 500, containerd 200 + 150 + 100 = 450.
    let slow = text.split("Slowest 3 operations").nth(1).expect("slowest section");
    let first = slow.split("\n 2. ").next().unwrap();
    assert!(
        first.contains(&format!(" 1. {START} · dockerd · 900.000 ms")),
        "{first}"
    );
    let layer = |svc: &str| {
        first
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{svc} ")) && l.contains(" ms "))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
    };
    assert_eq!(layer("dockerd").as_deref(), Some("500.000"), "{first}");
    assert_eq!(layer("containerd").as_deref(), Some("450.000"), "{first}");
    // And its span tree, children by start.
    let create = first
        .find("├─ containerd.services.tasks.v1.Tasks/Create")
        .expect("tree");
    let start = first.find("└─ containerd.services.tasks.v1.Tasks/Start").expect("tree");
    assert!(create < start);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (ok, _, err) = report(&["/nonexistent/spans.jsonl"]);
    assert!(!ok);
    assert!(err.contains("span file /nonexistent/spans.jsonl"), "{err}");
}

/// Debian's chromium, installed when missing (tests/run should list it).
fn chromium() -> String {
    let found = |name: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(p) = found("chromium") {
        return p;
    }
    eprintln!("chromium missing: installing Debian's chromium package");
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium",
        ])
        .status();
    match (status, found("chromium")) {
        (Ok(s), Some(p)) if s.success() => p,
        (status, _) => panic!(
            "headless Chromium is needed to check the HTML report and could not be installed \
             ({status:?}): install Debian's `chromium` package (apt-get install chromium)"
        ),
    }
}

/// The DOM after the page's scripts ran, from headless Chromium.
fn dump_dom(page: &Path, profile: &Path) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The markup of the element whose `id` attribute is `id`, up to its closing `</svg>`.
fn svg_by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}"));
    let open = dom[..at].rfind("<svg").unwrap();
    let close = at + dom[at..].find("</svg>").unwrap();
    &dom[open..close]
}

/// `(width, height)` of every `<rect>` in `svg`.
fn rects(svg: &str) -> Vec<(f64, f64)> {
    let attr = |tag: &str, name: &str| -> f64 {
        let k = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        tag[k..k + tag[k..].find('"').unwrap()].parse().unwrap()
    };
    svg.match_indices("<rect")
        .map(|(i, _)| {
            let tag = &svg[i..i + svg[i..].find('>').unwrap()];
            (attr(tag, "width"), attr(tag, "height"))
        })
        .collect()
}

#[test]
fn html_report_draws_its_charts_in_headless_chromium() {
    let dir = TempDir::new("report-html");
    let file = dir.path("spans.jsonl");
    let page = dir.path("report.html");
    write_span_file(&file, &spans());
    let (ok, _, err) = report(&[file.to_str().unwrap(), "--top", "4", "--html", page.to_str().unwrap()]);
    assert!(ok, "report failed: {err}");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no external script, style, image or font.
    for needle in ["src=", "<link", "@import", "url(", "https://", "http://"] {
        let hits: Vec<&str> = html
            .match_indices(needle)
            .map(|(i, _)| &html[i..(i + 40).min(html.len())])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(hits.is_empty(), "external reference {needle}: {hits:?}");
    }

    let dom = dump_dom(&page, &dir.path("profile"));
    let drawn: usize = dom
        .split("data-drawn=\"")
        .nth(1)
        .and_then(|s| s[..s.find('"')?].parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the page's script did not finish drawing: {}",
                &dom[..dom.len().min(2000)]
            )
        });
    assert!(drawn > 0);
    let mut bars = 0;
    for i in 0..4 {
        let svg = svg_by_id(&dom, &format!("hist-{i}"));
        let r = rects(svg);
        assert!(!r.is_empty(), "histogram {i} has no bars");
        assert!(
            r.iter().all(|(w, h)| *w > 0.0 && *h > 0.0),
            "empty bar in histogram {i}: {r:?}"
        );
        bars += r.len();
    }
    // The slowest operation's timeline: a bar per span (root and three children), the root's
    // the full width of the time axis.
    for i in 0..4 {
        let r = rects(svg_by_id(&dom, &format!("tl-{i}")));
        assert!(
            r.iter().all(|(w, h)| *w > 0.0 && *h > 0.0),
            "empty bar in timeline {i}: {r:?}"
        );
        if i == 0 {
            assert_eq!(r.len(), 4, "timeline 0 rows");
            assert!(r[1..].iter().all(|(w, _)| *w < r[0].0));
        }
        bars += r.len();
    }
    assert_eq!(bars, drawn, "every bar drawn is in a chart");
    assert!(!dom.contains("id=\"hist-4\""), "four methods, four histograms");
}

const POD_PHASES: [&str; 5] = [
    "runtime_tap.pod_start.phase.sandbox_ms",
    "runtime_tap.pod_start.phase.image_pull_ms",
    "runtime_tap.pod_start.phase.create_ms",
    "runtime_tap.pod_start.phase.start_ms",
    "runtime_tap.pod_start.phase.kubelet_ms",
];
const EVENTS: &str = "containerd.services.events.v1.Events/Subscribe";

/// A `pod start` root of `total` ms whose phases are `phases` ms (sandbox, image pull, create,
/// start, kubelet) and whose SLI is `sli` ms, with its four CRI calls laid end to end.
fn pod_start(t0: u64, total: u64, phases: [u64; 5], sli: u64) -> Vec<SpanRecord> {
    let ms = 1_000_000;
    let trace = new_trace_id();
    let mut root = span(trace, None, "kubelet", "pod start", t0, total * ms);
    root.kind = SpanKind::Internal;
    root.attributes = POD_PHASES
        .iter()
        .zip(phases)
        .map(|(k, v)| Attr::double(*k, v as f64))
        .chain([Attr::double("runtime_tap.pod_start.sli_ms", sli as f64)])
        .collect();
    let calls = ["RunPodSandbox", "PullImage", "CreateContainer", "StartContainer"];
    let mut at = t0;
    let mut out = Vec::new();
    for (call, d) in calls.iter().zip(phases) {
        let service = if *call == "PullImage" {
            "ImageService"
        } else {
            "RuntimeService"
        };
        let mut s = span(
            trace,
            Some(&root),
            "containerd",
            &format!("runtime.v1.{service}/{call}"),
            at,
            d * ms,
        );
        if *call == "PullImage" {
            s.attributes = vec![
                Attr::str("container.image.name", "registry.k8s.io/pause"),
                Attr::list("container.image.tags", vec!["3.6".into()]),
            ];
        }
        at += d * ms;
        out.push(s);
    }
    out.push(root);
    out
}

/// What the report leads with: two pod starts, a `docker pull` of two layers with its
/// per-layer children, and an event subscription open far longer than any operation.
fn answer_spans() -> Vec<SpanRecord> {
    let ms = 1_000_000;
    let t0 = BASE_NS + 200_000_000_000;
    let mut out = pod_start(t0, 2000, [300, 1200, 100, 200, 200], 800);
    out.extend(pod_start(t0 + 5_000 * ms, 1000, [100, 500, 100, 100, 200], 500));
    let trace = new_trace_id();
    let mut pull = span(
        trace,
        None,
        "dockerd",
        "POST /images/create",
        t0 + 10_000 * ms,
        500 * ms,
    );
    pull.attributes = vec![
        Attr::str("url.query", "fromImage=127.0.0.1%3A5000%2Fbb&tag=2"),
        Attr::str("container.image.name", "127.0.0.1:5000/bb"),
        Attr::list("container.image.tags", vec!["2".into()]),
        Attr::int("runtime_tap.image.bytes", 3_000_000),
        Attr::int("runtime_tap.image.layers", 2),
    ];
    let layer = |name: &str, id: &str, bytes: i64, start: u64, dur: u64| {
        let mut s = span(
            trace,
            Some(&pull),
            "dockerd",
            name,
            t0 + (10_000 + start) * ms,
            dur * ms,
        );
        s.kind = SpanKind::Internal;
        s.attributes = vec![
            Attr::str("runtime_tap.image.layer.id", id),
            Attr::int("runtime_tap.image.layer.bytes", bytes),
        ];
        s
    };
    out.extend([
        layer("layer download", "aaaaaaaaaaaa", 2_000_000, 10, 100),
        layer("layer download", "bbbbbbbbbbbb", 1_000_000, 10, 200),
        layer("layer extract", "aaaaaaaaaaaa", 2_000_000, 220, 50),
        layer("layer extract", "bbbbbbbbbbbb", 1_000_000, 280, 30),
    ]);
    out.push(pull);
    let mut events = span(new_trace_id(), None, "containerd", EVENTS, BASE_NS, 1_000_000 * ms);
    events.attributes = vec![Attr::bool("runtime_tap.long_lived", true)];
    out.push(events);
    out
}

/// The row of a table whose first columns read `label`: its last `n` columns.
fn row_numbers(text: &str, label: &str, n: usize) -> Vec<String> {
    let row = text
        .lines()
        .find(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.len() > n && t[..t.len() - n].join(" ") == label
        })
        .unwrap_or_else(|| panic!("no row {label:?} in\n{text}"));
    let t: Vec<&str> = row.split_whitespace().collect();
    t[t.len() - n..].iter().map(|s| s.to_string()).collect()
}

#[test]
fn text_report_leads_with_pod_starts_pulls_and_container_starts() {
    let dir = TempDir::new("report-answers");
    let file = dir.path("spans.jsonl");
    let mut all = spans();
    all.extend(answer_spans());
    write_span_file(&file, &all);
    let (ok, text, err) = report(&[file.to_str().unwrap(), "--top", "3"]);
    println!("{text}");
    assert!(ok, "report failed: {err}");

    // The answers first, in this order; long-lived streams last.
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no {needle:?} in\n{text}"));
    let order = [
        "Pod starts: 2",
        "Slowest 2 pod starts",
        "Image pulls: 3",
        "Slowest 3 pulls, layer by layer",
        "Container starts (POST /containers/{id}/start): 41",
        "Latency per service and span name",
        "Slowest 3 operations",
        "Long-lived streams",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{:?} before {:?}", pair[0], pair[1]);
    }

    // Per phase: count, p50, p90, p99, max over the two pods (nearest rank: p50 is the smaller).
    let pods = &text[at("Pod starts: 2")..at("Slowest 2 pod starts")];
    let num = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        row_numbers(pods, "total", 5),
        num(&["2", "1000.000", "2000.000", "2000.000", "2000.000"])
    );
    assert_eq!(
        row_numbers(pods, "SLI (pulls excluded)", 5),
        num(&["2", "500.000", "800.000", "800.000", "800.000"])
    );
    assert_eq!(
        row_numbers(pods, "sandbox", 5),
        num(&["2", "100.000", "300.000", "300.000", "300.000"])
    );
    assert_eq!(
        row_numbers(pods, "image pull", 5),
        num(&["2", "500.000", "1200.000", "1200.000", "1200.000"])
    );
    assert_eq!(
        row_numbers(pods, "kubelet", 5),
        num(&["2", "200.000", "200.000", "200.000", "200.000"])
    );
    // The slowest pod whole: its phases and its calls.
    let slow_pods = &text[at("Slowest 2 pod starts")..at("Image pulls: 3")];
    assert!(
        slow_pods.contains(" 1. pod start · kubelet · 2000.000 ms"),
        "{slow_pods}"
    );
    assert!(
        slow_pods.contains("phases: SLI (pulls excluded) 800.000 ms · sandbox 300.000 ms · image pull 1200.000 ms"),
        "{slow_pods}"
    );
    assert!(
        slow_pods.contains("└─ runtime.v1.RuntimeService/StartContainer"),
        "{slow_pods}"
    );

    // Pulls: per image, then the slowest layer by layer (bytes exact, MB/s = bytes / download).
    let pulls = &text[at("Image pulls: 3")..at("Container starts")];
    assert_eq!(
        row_numbers(pulls, "127.0.0.1:5000/bb:2", 6),
        num(&["1", "500.000", "500.000", "3000000", "6.0", "0"])
    );
    assert_eq!(row_numbers(pulls, "registry.k8s.io/pause:3.6", 6)[0], "2");
    assert!(
        pulls.contains(" 1. registry.k8s.io/pause:3.6 · containerd · 1200.000 ms"),
        "{pulls}"
    );
    // Ties (500 ms) go earlier first.
    assert!(
        pulls.contains(" 3. 127.0.0.1:5000/bb:2 · dockerd · 500.000 ms · 3000000 bytes · 6.0 MB/s"),
        "{pulls}"
    );
    assert_eq!(
        row_numbers(pulls, "aaaaaaaaaaaa", 4),
        num(&["2000000", "100.000", "50.000", "20.0"])
    );
    assert_eq!(
        row_numbers(pulls, "bbbbbbbbbbbb", 4),
        num(&["1000000", "200.000", "30.000", "5.0"])
    );
    assert!(pulls.contains("no per-layer progress on this socket"), "{pulls}");

    // Container starts: the 41 starts and each layer's self time; the 900 ms start's dockerd
    // self time (500 ms) is the largest.
    let starts = &text[at("Container starts")..at("Latency per service")];
    assert_eq!(row_numbers(starts, "whole start", 5)[0], "41");
    assert_eq!(row_numbers(starts, "dockerd", 5)[0], "41");
    assert_eq!(row_numbers(starts, "dockerd", 5)[4], "500.000");

    // The subscription, open 1,000 s, is no slow operation and no row of the latency table.
    let table = &text[at("Latency per service")..at("Slowest 3 operations")];
    let slowest = &text[at("Slowest 3 operations")..at("Long-lived streams")];
    assert!(!table.contains(EVENTS) && !slowest.contains(EVENTS), "{table}{slowest}");
    assert!(slowest.contains(" 1. pod start · kubelet · 2000.000 ms"), "{slowest}");
    let long = &text[at("Long-lived streams")..];
    assert_eq!(
        row_numbers(long, &format!("containerd {EVENTS}"), 6)[..2],
        num(&["1", "1000000.000"])
    );
}

/// A screenshot of `page` at `width` × `height` from headless Chromium, as PNG bytes.
fn screenshot(page: &Path, profile: &Path, png: &Path, (width, height): (u32, u32)) -> Vec<u8> {
    let status = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "chromium --screenshot: {status}");
    std::fs::read(png).unwrap()
}

#[test]
fn html_report_leads_with_the_answers_and_keeps_every_label_inside() {
    let dir = TempDir::new("report-html-answers");
    let file = dir.path("spans.jsonl");
    let page = dir.path("report.html");
    let mut all = spans();
    all.extend(answer_spans());
    // A deep span with a long name whose bar ends at the trace's end: its name must be cut to
    // the label column and its duration label kept inside the drawing.
    let ms = 1_000_000;
    let t0 = BASE_NS + 300_000_000_000;
    let trace = new_trace_id();
    let root = span(trace, None, "dockerd", START, t0, 5_000 * ms);
    let mut parent = root.clone();
    for depth in 0..6u64 {
        let name = format!("containerd.services.snapshots.v1.Snapshots/Prepare-with-a-very-long-name-{depth}");
        let s = span(
            trace,
            Some(&parent),
            "containerd",
            &name,
            t0 + (depth + 1) * ms,
            5_000 * ms - (depth + 1) * ms,
        );
        all.push(s.clone());
        parent = s;
    }
    all.push(root);
    write_span_file(&file, &all);
    let (ok, _, err) = report(&[file.to_str().unwrap(), "--top", "3", "--html", page.to_str().unwrap()]);
    assert!(ok, "report failed: {err}");
    let html = std::fs::read_to_string(&page).unwrap();
    let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("no {needle:?}"));
    let order = [
        "<h2>Pod starts</h2>",
        "id=\"pod-phases\"",
        "id=\"pod-tl-0\"",
        "<h2>Image pulls</h2>",
        "id=\"pull-images\"",
        "id=\"pull-2-layers\"",
        "<h2>Container starts</h2>",
        "id=\"start-layers\"",
        "<h2>Latency per service and span name</h2>",
        "id=\"tl-0\"",
        "<h2>Long-lived streams</h2>",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{:?} before {:?}", pair[0], pair[1]);
    }
    assert!(html.contains("<td>aaaaaaaaaaaa</td><td>2000000</td><td>100.000</td><td>50.000</td><td>20.0</td>"));

    let dom = dump_dom(&page, &dir.path("profile"));
    let outside: usize = dom
        .split("<body data-")
        .nth(1)
        .and_then(|s| s.split("data-outside=\"").nth(1))
        .and_then(|s| s[..s.find('"')?].parse().ok())
        .unwrap_or_else(|| panic!("the page's script did not finish: {}", &dom[..dom.len().min(2000)]));
    assert_eq!(outside, 0, "labels outside their timeline");
    // The slowest pod's timeline: the root and its four calls.
    assert_eq!(rects(svg_by_id(&dom, "pod-tl-0")).len(), 5);
    // The long-named trace is the slowest operation: seven rows, names cut with "…".
    let tl = svg_by_id(&dom, "tl-0");
    assert_eq!(rects(tl).len(), 7);
    assert!(tl.contains("…"), "long names are cut: {tl}");
    assert!(tl.contains("data-outside=\"0\""), "{tl}");

    // And as a user sees it, on a narrow window: the screenshot is drawn (kept beside the page
    // for a look).
    let png = screenshot(&page, &dir.path("profile-shot"), &dir.path("report.png"), (900, 2400));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
    if let Ok(keep) = std::env::var("RTAP_KEEP_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
}
