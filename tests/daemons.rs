//! Against the real daemons: a private containerd and dockerd (Debian's packages, installed
//! when missing) with runtime-tap in front of both, dockerd's `--containerd` pointed at the
//! containerd intercept and the clients (docker CLI, ctr) at the intercepts. One bed per test
//! binary, shared by the tests; each uses its own names.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use runtime_tap::bed;
use support::stack::Stack;
use support::*;

type Setup = Stack;

// The bed outlives every test of this binary; its watchdog tears it down when the test
// process exits (statics are never dropped).
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| Stack::start("daemons", ""))
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
