//! Against the real daemons: a private containerd and dockerd (of the generation
//! `RTAP_GENERATION` names: bookworm's packages, installed when missing, or trixie's or sid's,
//! unpacked privately) with runtime-tap in front of both, dockerd's `--containerd` pointed at
//! the containerd intercept and the clients (docker CLI, ctr, a CRI client) at the intercepts.
//! One bed per test binary, shared by the tests; each uses its own names. Where generations
//! differ on the wire, the tests say which does what.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use runtime_tap::bed::{self, Generation};
use serde_json::json;
use support::cri::GrpcClient;
use support::otlp::{OtlpReceiver, ReceivedSpan, Val};
use support::stack::Stack;
use support::*;

struct Setup {
    rt: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
    stack: Stack,
}

/// The tests mostly use the stack: `s.bed`, `s.docker`...
impl std::ops::Deref for Setup {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

// The bed outlives every test of this binary; its watchdog tears it down when the test
// process exits (statics are never dropped).
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = runtime();
        let receiver = rt.block_on(OtlpReceiver::start());
        let export = format!(
            "[export]\nendpoint = \"{}\"\n\n[sampling]\ndefault_rules = false\n",
            receiver.endpoint()
        );
        let stack = Stack::start("daemons", &export);
        Setup { rt, receiver, stack }
    })
}

fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.map(<[u8]>::to_vec);
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        if let Some(data) = input {
            let _ = pipe.write_all(&data);
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn docker(s: &Setup, args: &[&str]) -> Output {
    output(s.bed.docker(&s.docker).args(args), None)
}

#[test]
fn docker_run_prints_exactly_hello_and_exit_codes_pass_through() {
    let s = setup();
    let out = docker(s, &["run", "--rm", "--network", "none", "bb:latest", "echo", "hello"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    let out = docker(
        s,
        &["run", "--rm", "--network", "none", "bb:latest", "sh", "-c", "exit 3"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_run_interactive_cat_returns_10_mib_of_stdin_byte_identical() {
    let s = setup();
    let mut data = vec![0u8; 10 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    let out = output(
        s.bed
            .docker(&s.docker)
            .args(["run", "-i", "--rm", "--network", "none", "bb:latest", "cat"]),
        Some(&data),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));
}

#[test]
fn docker_save_through_the_proxy_equals_direct() {
    let s = setup();
    let via_tap = s.bed.dir.join("save-tap.tar");
    let direct = s.bed.dir.join("save-direct.tar");
    let a = output(
        s.bed
            .docker(&s.docker)
            .args(["save", "-o"])
            .arg(&via_tap)
            .arg("bb:latest"),
        None,
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = output(
        s.bed
            .docker(&s.bed.docker_socket())
            .args(["save", "-o"])
            .arg(&direct)
            .arg("bb:latest"),
        None,
    );
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert!(std::fs::metadata(&via_tap).unwrap().len() > 1_000_000);
    assert_eq!(sha256_file(&via_tap), sha256_file(&direct));
}

fn ctr(s: &Setup, socket: &Path, args: &[&str]) -> Output {
    let out = output(s.bed.ctr(socket).args(args), None);
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn ctr_version_namespaces_import_and_every_blob_byte_identical() {
    let s = setup();
    let version = ctr(s, &s.containerd, &["version"]);
    assert!(String::from_utf8_lossy(&version.stdout).contains("Server:"));
    let out = ctr(
        s,
        &s.containerd,
        &["-n", "rt-ctr", "images", "import", s.images_tar.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bb:latest"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let namespaces = ctr(s, &s.containerd, &["namespaces", "ls", "-q"]);
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(namespaces.lines().any(|l| l == "rt-ctr"), "{namespaces}");
    let list = ctr(s, &s.containerd, &["-n", "rt-ctr", "content", "ls", "-q"]);
    let digests: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(digests.len() >= 3, "manifest, config and layer at least: {digests:?}");
    let mut compared = 0;
    for digest in &digests {
        let get = |socket: &Path| output(s.bed.ctr(socket).args(["-n", "rt-ctr", "content", "get", digest]), None);
        let (via_tap, direct) = (get(&s.containerd), get(&s.bed.containerd_socket()));
        if !direct.status.success() {
            // Unreferenced content the import left behind may be garbage-collected meanwhile.
            assert!(String::from_utf8_lossy(&direct.stderr).contains("not found"));
            continue;
        }
        assert!(via_tap.status.success(), "{}", String::from_utf8_lossy(&via_tap.stderr));
        assert_eq!(
            format!("sha256:{}", sha256(&via_tap.stdout)),
            *digest,
            "content through the proxy matches its digest"
        );
        assert_eq!(via_tap.stdout, direct.stdout);
        compared += 1;
    }
    assert!(compared >= 3, "manifest, config and layer at least: {compared}");
}

#[test]
fn dockerd_reaches_containerd_through_the_intercept() {
    let s = setup();
    // dockerd's own containerd connections are relayed and counted.
    let _ = docker(s, &["run", "--rm", "--network", "none", "bb:latest", "true"]);
    let accepted = s
        .tap
        .metric("runtime_tap_connections_accepted_total{intercept=\"containerd\"}")
        .unwrap();
    assert!(
        accepted >= 2,
        "dockerd opens its main and plugins connections: {accepted}"
    );
    let h2 = s
        .tap
        .metric("runtime_tap_protocols_sniffed_total{intercept=\"containerd\",protocol=\"http2\"}")
        .unwrap();
    assert!(h2 >= 2, "{h2}");
    let http1 = s
        .tap
        .metric("runtime_tap_protocols_sniffed_total{intercept=\"dockerd\",protocol=\"http1\"}")
        .unwrap();
    assert!(http1 >= 1, "{http1}");
    let _ = bed::which("dockerd").expect("dockerd installed");
}

/// The major and minor numbers of the first `N.N` after `marker` in `text`.
fn version_after(text: &str, marker: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[test]
fn the_bed_runs_the_generation_asked_for() {
    let s = setup();
    let (generation, versions) = (s.bed.generation(), s.bed.versions());
    assert_eq!(generation, support::generation());
    let containerd = version_after(&versions.containerd, "containerd ")
        .or_else(|| version_after(&versions.containerd, "containerd/v2 "))
        .unwrap_or_else(|| panic!("{versions}"));
    let dockerd = version_after(&versions.dockerd, "version ").unwrap_or_else(|| panic!("{versions}"));
    let api = s.bed.docker_api_version().unwrap();
    let api = version_after(&api, "").unwrap_or_else(|| panic!("docker API {api}"));
    // The API version the docker CLI (28.x) speaks after negotiation: the daemon's newest, or
    // the CLI's own newest where the daemon's is newer. sid moves: only lower bounds there.
    let expected = match generation {
        Generation::Bookworm => containerd == (1, 6) && dockerd == (20, 10) && api == (1, 41),
        Generation::Trixie => containerd == (1, 7) && dockerd == (26, 1) && api == (1, 45),
        Generation::Sid => containerd >= (2, 1) && dockerd >= (28, 5) && api >= (1, 50),
    };
    assert!(expected, "{generation}: {versions}, docker API {api:?}");
}

#[test]
fn a_cri_pod_starts_and_stops_through_the_proxy() {
    let s = setup();
    s.bed.import_cri_images(&s.containerd, &s.images_tar).unwrap();
    let log_dir = s.bed.dir.join("daemons-pods");
    std::fs::create_dir_all(&log_dir).unwrap();
    let sock = s.containerd.clone();
    let state = s.rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        let rs = "runtime.v1.RuntimeService";
        let config = json!({
            "metadata": {"name": "daemons-pod", "namespace": "daemons", "uid": "daemons-pod-uid", "attempt": 0},
            "log_directory": log_dir,
            "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
        });
        let run = c
            .unary(&format!("{rs}/RunPodSandbox"), json!({"config": config.clone()}), &[])
            .await;
        let sandbox = run.unwrap()["podSandboxId"].as_str().unwrap().to_string();
        let create = json!({
            "pod_sandbox_id": sandbox,
            "config": {
                "metadata": {"name": "daemons-ctr"},
                "image": {"image": bed::SANDBOX_IMAGE},
                "command": ["/bin/sh", "-c", "echo hi; exec sleep 3600"],
                "log_path": "daemons-ctr.log"
            },
            "sandbox_config": config
        });
        let created = c.unary(&format!("{rs}/CreateContainer"), create, &[]).await.unwrap();
        let container = created["containerId"].as_str().unwrap().to_string();
        let id = json!({"container_id": container});
        c.unary(&format!("{rs}/StartContainer"), id.clone(), &[]).await.unwrap();
        let status = c.unary(&format!("{rs}/ContainerStatus"), id, &[]).await.unwrap();
        let pod = json!({"pod_sandbox_id": sandbox});
        c.unary(&format!("{rs}/StopPodSandbox"), pod.clone(), &[])
            .await
            .unwrap();
        c.unary(&format!("{rs}/RemovePodSandbox"), pod, &[]).await.unwrap();
        status["status"]["state"].as_str().unwrap_or_default().to_string()
    });
    assert_eq!(state, "CONTAINER_RUNNING");
}

fn str_attr<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    match span.attributes.get(key) {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    }
}

const CONTENT_WRITE: &str = "containerd.services.content.v1.Content/Write";
const TRANSFER: &str = "containerd.services.transfer.v1.Transfer/Transfer";
const STREAM: &str = "containerd.services.streaming.v1.Streaming/Stream";

#[test]
fn ctr_images_import_uses_each_generations_api() {
    let s = setup();
    let ns = "rt-import-api";
    let out = output(
        s.bed
            .ctr(&s.containerd)
            .args(["-n", ns, "images", "import"])
            .arg(&s.images_tar),
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let by_ctr = |spans: &[ReceivedSpan], name: &str| {
        spans
            .iter()
            .filter(|x| x.name == name && str_attr(x, "runtime_tap.client.executable") == Some("ctr"))
            .filter(|x| name == STREAM || str_attr(x, "containerd.namespace") == Some(ns))
            .count()
    };
    // The import's last call: Images/Create (or Update) of its names on 1.x, from ctr; on
    // 2.x the Transfer service creates them itself, and Transfer/Transfer ends last.
    let last = |x: &ReceivedSpan| match s.bed.generation() {
        Generation::Sid => x.name == TRANSFER,
        Generation::Bookworm | Generation::Trixie => x.name.starts_with("containerd.services.images.v1.Images/"),
    };
    let spans = s.rt.block_on(s.receiver.wait_for(
        |spans| {
            spans
                .iter()
                .any(|x| last(x) && str_attr(x, "containerd.namespace") == Some(ns))
        },
        support::otlp::SPAN_WAIT,
    ));
    let (writes, transfers, streams) = (
        by_ctr(&spans, CONTENT_WRITE),
        by_ctr(&spans, TRANSFER),
        by_ctr(&spans, STREAM),
    );
    let versions = s.bed.versions();
    match s.bed.generation() {
        // containerd 1.x's ctr writes each blob itself: one Content/Write stream per blob.
        Generation::Bookworm | Generation::Trixie => {
            assert!(writes >= 3, "{versions}: {writes} Content/Write");
            assert_eq!((transfers, streams), (0, 0), "{versions}");
        }
        // containerd 2.x's ctr hands the tar to the Transfer service (source and destination
        // are Any: an import stream, an image store) and sends the data and receives the
        // progress over Streaming/Stream calls: no Content/Write from the client.
        Generation::Sid => {
            assert_eq!(writes, 0, "{versions}");
            assert!(
                transfers >= 1 && streams >= 1,
                "{versions}: {transfers} Transfer, {streams} Stream"
            );
        }
    }
}
