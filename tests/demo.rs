//! `runtime-tap demo --once`, run as a newcomer runs it (the built binary, no terminal): it
//! must show the waterfall of a docker run and of a CRI pod with the layers stitched, exit 0,
//! leave nothing behind, and with `OTEL_EXPORTER_OTLP_ENDPOINT` set export the same spans
//! while still showing the waterfall.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::otlp::{OtlpReceiver, ReceivedSpan, Val};
use support::proc::{plain, run_captured};

/// Each demo starts its own containerd and dockerd: one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The longest a demo may take (it installs nothing here; it took about 20 s on the bed).
const DEADLINE: Duration = Duration::from_secs(300);

struct Run {
    code: Option<i32>,
    stdout: String,
    /// Without colour sequences.
    stderr: String,
    took: Duration,
}

/// Run `runtime-tap demo --once` with `env` added (and no OTLP variables of our own).
fn demo(env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let (status, stdout, stderr) = run_captured(
        Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
            .args(["demo", "--once"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().copied()),
        DEADLINE,
    );
    let Some(status) = status else {
        panic!("demo --once still running after {DEADLINE:?}");
    };
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: plain(&stderr),
        took: start.elapsed(),
    };
    println!("demo --once took {:.1} s", run.took.as_secs_f64());
    run
}

/// The waterfall blocks of a run: each `trace ...` header with the tree lines under it.
fn waterfalls(stderr: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut lines = stderr.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with("trace ") {
            continue;
        }
        let mut block = vec![line];
        while let Some(l) = lines.next_if(|l| !l.trim().is_empty()) {
            block.push(l);
        }
        blocks.push(block);
    }
    blocks
}

/// The block whose root (first line after the header) starts with `root`.
fn block_rooted<'a>(blocks: &'a [Vec<&'a str>], root: &str) -> Option<&'a Vec<&'a str>> {
    blocks
        .iter()
        .find(|b| b.get(1).is_some_and(|l| l.trim_start().starts_with(root)))
}

/// A child line of the tree (drawn with `├─` or `└─`) naming `name`.
fn has_child(block: &[&str], name: &str) -> bool {
    block
        .iter()
        .any(|l| (l.contains("├─ ") || l.contains("└─ ")) && l.contains(name))
}

/// The private directory the demo printed (from its DOCKER_HOST line).
fn private_dir(stdout: &str) -> PathBuf {
    let host = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("DOCKER_HOST=unix://"))
        .expect("the demo prints its DOCKER_HOST");
    PathBuf::from(host.trim_end_matches("/tap/docker.sock"))
}

/// What every demo run must show, whatever the export.
fn check_demo_output(run: &Run) {
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("A container ran through it and printed: hello from a container, through runtime-tap"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("A CRI pod started and stopped through it"));
    assert!(run.stdout.contains("Metrics: curl -s http://127.0.0.1:"));
    let dir = private_dir(&run.stdout);
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());

    let blocks = waterfalls(&run.stderr);
    // The docker run: the start request with the containerd calls it caused, stitched.
    let start = block_rooted(&blocks, "POST /containers/{id}/start")
        .unwrap_or_else(|| panic!("no waterfall rooted at the start; stderr:\n{}", run.stderr));
    for call in ["Containers/Create", "Tasks/Create", "Tasks/Start"] {
        assert!(
            has_child(start, call),
            "{call} not under the start:\n{}",
            start.join("\n")
        );
    }
    assert!(
        start.iter().any(|l| l.contains("containerd")) && start.iter().any(|l| l.contains("dockerd")),
        "both layers in the start's tree"
    );
    assert!(
        start.iter().any(|l| l.contains("self time: dockerd")),
        "per-layer self time on the root"
    );
    // The CRI pod: its `pod start` root over the calls that started it (the root is exported
    // 5 s after the pod's last call; the console waits for a parent its spans name).
    let pod = block_rooted(&blocks, "pod start")
        .unwrap_or_else(|| panic!("no waterfall rooted at `pod start`; stderr:\n{}", run.stderr));
    for call in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        assert!(
            has_child(pod, call),
            "{call} not under the pod start:\n{}",
            pod.join("\n")
        );
    }
    assert!(pod.iter().any(|l| l.contains("pod=demo-pod")));
}

#[test]
fn demo_once_shows_the_docker_run_and_the_pod_as_waterfalls_and_cleans_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let run = demo(&[]);
    check_demo_output(&run);
}

#[test]
fn demo_once_with_an_otlp_endpoint_exports_and_still_shows_the_waterfall() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = support::runtime();
    let receiver = rt.block_on(OtlpReceiver::start());
    let run = demo(&[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())]);
    // The spans arrived: flushed before the demo exited, so no waiting here.
    let spans = receiver.spans();
    let one = |service: &str, name: &str| -> Vec<&ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect()
    };
    let start = one("dockerd", "POST /containers/{id}/start");
    assert_eq!(
        start.len(),
        1,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // The image came from the bed's registry: the pull, with a download and an extract span
    // per layer of its two.
    let pulls: Vec<_> = one("dockerd", "POST /images/create")
        .into_iter()
        .filter(|p| matches!(p.attributes.get("container.image.name"), Some(Val::Str(n)) if n.ends_with("/demo/bb")))
        .collect();
    assert_eq!(pulls.len(), 1, "one pull of the demo image");
    let layers = spans
        .iter()
        .filter(|l| l.parent_span_id == pulls[0].span_id && l.name.starts_with("layer "))
        .count();
    assert_eq!(layers, 4, "{:?}", pulls[0]);
    let task_start = one("containerd", "containerd.services.tasks.v1.Tasks/Start");
    assert!(
        task_start
            .iter()
            .any(|t| t.parent_span_id == start[0].span_id && t.trace_id == start[0].trace_id),
        "Tasks/Start under the docker start"
    );
    // The demo makes the CRI calls from its own process: the root is in that client's resource.
    let pod = one("runtime-tap", "pod start");
    assert_eq!(pod.len(), 1);
    for m in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        let name = format!("runtime.v1.RuntimeService/{m}");
        assert!(
            one("containerd", &name)
                .iter()
                .any(|s| s.parent_span_id == pod[0].span_id),
            "{m} under the pod start"
        );
    }
    // And the waterfall was still shown.
    check_demo_output(&run);
}
