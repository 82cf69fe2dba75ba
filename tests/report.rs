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
