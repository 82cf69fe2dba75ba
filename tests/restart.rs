//! Restarts and upgrades (issue 17, section 1): runtime-tap socket-activated in front of a
//! private containerd and dockerd, as a service manager runs it. The test holds both listening
//! sockets (as systemd does) and restarts runtime-tap on them again and again while kubelet-like
//! CRI clients, dockerd (its own containerd calls) and the docker CLI keep calling: no call may
//! fail and no connection may be refused. And a SIGTERM with only idle connections open ends
//! the process in under a second.
//!
//! The CRI clients retry only what grpc-go (kubelet, dockerd) retries transparently: a call
//! whose stream the GOAWAY refused or that found its connection going away before it was sent
//! (`bed::cri::UNPROCESSED`). Anything else is a failure. The docker CLI is not retried at all.

mod support;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime_tap::bed::Bed;
use serde_json::json;
use support::proc::{Outcome, plain, run_with_deadline};
use support::*;

/// A user's deadline on one docker CLI command; past it the command counts as hung.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// The CRI client's deadline per call.
const CRI_DEADLINE: Duration = Duration::from_secs(15);

/// The bed: private containerd and dockerd, runtime-tap's listeners held by the test.
struct Node {
    bed: Bed,
    dir: PathBuf,
    containerd: UnixListener,
    docker: UnixListener,
    containerd_sock: PathBuf,
    docker_sock: PathBuf,
    config: String,
}

impl Node {
    fn start(label: &str) -> (Node, Tap) {
        let mut bed = Bed::with_generation(label, generation()).expect("test bed");
        bed.start_containerd().expect("containerd");
        let dir = bed.dir.join("tap");
        std::fs::create_dir_all(&dir).unwrap();
        let containerd_sock = dir.join("containerd.sock");
        let docker_sock = dir.join("docker.sock");
        let containerd = UnixListener::bind(&containerd_sock).unwrap();
        let docker = UnixListener::bind(&docker_sock).unwrap();
        let config = format!(
            "[[intercept]]\nname = \"containerd\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n\n\
             [[intercept]]\nname = \"dockerd\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{}\"\n\n[relay]\ngrace_period_secs = 2\n\n\
             [export]\nconsole = false\nfile = \"/dev/null\"\n",
            containerd_sock.display(),
            bed.containerd_socket().display(),
            docker_sock.display(),
            bed.docker_socket().display(),
            free_port(),
        );
        let node = Node {
            bed,
            dir,
            containerd,
            docker,
            containerd_sock,
            docker_sock,
            config,
        };
        let tap = node.tap();
        let mut node = node;
        node.bed
            .start_dockerd(&node.containerd_sock.clone())
            .expect("dockerd through the proxy");
        node.bed
            .make_images(&node.docker_sock)
            .expect("images through the proxy");
        (node, tap)
    }

    /// runtime-tap started on the held listeners, as the socket units would start it.
    fn tap(&self) -> Tap {
        Tap::start_activated_all(
            &self.dir,
            &[(&self.containerd, "containerd"), (&self.docker, "dockerd")],
            &self.config,
        )
    }
}

/// SIGTERM, then how long until the process exited, and its exit code.
fn stop_timed(tap: &mut Tap) -> (Duration, Option<i32>) {
    let start = Instant::now();
    let code = tap.stop();
    (start.elapsed(), code)
}

#[derive(Default)]
struct Tally {
    ok: u64,
    /// CRI calls that grpc-go would have retried transparently (never reached the daemon).
    transparent_retries: u64,
    refused: Vec<String>,
    failed: Vec<String>,
}

fn is_refusal(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("connection refused") || t.contains("no such file")
}

/// A kubelet-like CRI client on one kept-open connection, reconnecting only when its calls
/// say the connection went away before they were sent.
fn cri_client(sock: PathBuf, tally: Arc<Mutex<Tally>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let methods = [
                "runtime.v1.RuntimeService/Version",
                "runtime.v1.RuntimeService/ListPodSandbox",
                "runtime.v1.RuntimeService/ListContainers",
                "runtime.v1.ImageService/ListImages",
            ];
            let mut client: Option<runtime_tap::bed::cri::GrpcClient> = None;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let method = methods[n % methods.len()];
                let mut retries = 0;
                let outcome = loop {
                    let call = async {
                        if client.is_none() {
                            client = Some(runtime_tap::bed::cri::GrpcClient::connect(&sock).await?);
                        }
                        client.as_mut().unwrap().unary(method, json!({}), &[]).await
                    };
                    match tokio::time::timeout(CRI_DEADLINE, call).await {
                        Ok(Err(e)) if e.is_unprocessed() && retries < 5 => {
                            retries += 1;
                            client = None;
                        }
                        other => break other,
                    }
                };
                let failed = {
                    let mut t = tally.lock().unwrap();
                    t.transparent_retries += retries;
                    match outcome {
                        Ok(Ok(_)) => {
                            t.ok += 1;
                            false
                        }
                        Ok(Err(e)) if is_refusal(&e.message) => {
                            t.refused.push(format!("cri {method}: {e}"));
                            false
                        }
                        Ok(Err(e)) => {
                            t.failed.push(format!("cri {method}: {e}"));
                            true
                        }
                        Err(_) => {
                            t.failed.push(format!("cri {method}: hung"));
                            true
                        }
                    }
                };
                if failed {
                    client = None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    })
}

/// A docker CLI command in a loop, never retried.
fn docker_client(
    bed: &Bed,
    sock: &Path,
    args: &'static [&'static str],
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let config = bed.docker_config_dir();
    let sock = sock.to_owned();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let outcome = run_with_deadline(
                std::process::Command::new("docker")
                    .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                    .env("DOCKER_CONFIG", &config)
                    .env_remove("DOCKER_CONTEXT")
                    .args(args),
                CLIENT_DEADLINE,
            );
            let mut t = tally.lock().unwrap();
            match outcome {
                Outcome::Ok(_) => t.ok += 1,
                Outcome::Failed(e) if is_refusal(&e) => t.refused.push(format!("docker {args:?}: {}", e.trim())),
                Outcome::Failed(e) => t.failed.push(format!("docker {args:?}: {}", e.trim())),
                Outcome::Hung => t.failed.push(format!("docker {args:?}: hung")),
            }
        }
    })
}

#[test]
fn twenty_restarts_under_load_fail_no_call_and_refuse_no_connection() {
    let (node, mut tap) = Node::start("restart");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(cri_client(node.containerd_sock.clone(), tally.clone(), stop.clone()));
    }
    for args in [
        &["ps", "-a"][..],
        &["inspect", "bb:latest"][..],
        &["run", "--rm", "bb:latest", "true"][..],
    ] {
        clients.push(docker_client(
            &node.bed,
            &node.docker_sock,
            args,
            tally.clone(),
            stop.clone(),
        ));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut stops = Vec::new();
    let (mut drained, mut cut) = (0, 0);
    for round in 0..20 {
        let (took, code) = stop_timed(&mut tap);
        let log = plain(&tap.log_text());
        assert_eq!(code, Some(0), "round {round}: exit code; log:\n{log}");
        drained += log.matches("connection drained: no call left").count();
        cut += log.matches("connection cut at the end of the grace period").count();
        assert!(node.containerd_sock.exists() && node.docker_sock.exists());
        stops.push(took);
        tap = node.tap();
        std::thread::sleep(Duration::from_millis(600));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let t = tally.lock().unwrap();
    let longest = stops.iter().max().copied().unwrap_or_default();
    eprintln!(
        "restart: 20 restarts, SIGTERM to exit {stops:?} (longest {longest:?}); {} calls ok, {} CRI calls retried transparently, {} refused, {} failed; {drained} connections drained, {cut} cut at the grace period's end",
        t.ok,
        t.transparent_retries,
        t.refused.len(),
        t.failed.len()
    );
    if let Ok(keep) = std::env::var("RTAP_RESTART_KEEP_LOGS") {
        // Debugging aid: the daemons' and runtime-tap's logs, kept past the bed's teardown.
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(&node.bed.dir)
            .arg(&keep)
            .status();
    }
    assert!(t.refused.is_empty(), "refused: {:?}", t.refused);
    assert!(
        t.failed.is_empty(),
        "{} failed: {:?}",
        t.failed.len(),
        &t.failed[..t.failed.len().min(5)]
    );
    assert!(t.ok > 100, "only {} calls", t.ok);
    assert!(drained >= 20, "only {drained} connections drained in 20 restarts");
    assert_eq!(tap.stop(), Some(0));
}

#[test]
fn sigterm_with_only_idle_connections_exits_in_under_a_second() {
    let (node, mut tap) = Node::start("restart-idle");
    // A CRI client's kept-open connection, idle after its calls.
    let rt = runtime();
    let mut cri = rt
        .block_on(runtime_tap::bed::cri::GrpcClient::connect(&node.containerd_sock))
        .unwrap();
    for _ in 0..3 {
        rt.block_on(cri.unary("runtime.v1.RuntimeService/Version", json!({}), &[]))
            .unwrap();
    }
    // An idle HTTP/1.1 keep-alive connection to dockerd, after one exchange.
    let mut keep = connect(&node.docker_sock);
    let api = node.bed.docker_api_version().unwrap();
    std::io::Write::write_all(
        &mut keep,
        format!("GET /v{api}/_ping HTTP/1.1\r\nHost: docker\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut reader = buf_reader(keep.try_clone().unwrap());
    read_until(&mut reader, "OK");
    // dockerd's own connections to containerd, idle once the images are in.
    std::thread::sleep(Duration::from_millis(500));
    let (took, code) = stop_timed(&mut tap);
    assert_eq!(code, Some(0));
    let log = plain(&tap.log_text());
    eprintln!("idle: SIGTERM to exit {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM to exit took {took:?} with only idle connections:\n{log}"
    );
    assert!(log.contains("connection drained: no call left"), "{log}");
    // The CRI client was told: its next call goes on a new connection to the next process.
    let tap = node.tap();
    let again = rt.block_on(cri.unary("runtime.v1.RuntimeService/Version", json!({}), &[]));
    assert!(
        again.as_ref().is_err_and(|e| e.is_unprocessed()),
        "after GOAWAY the old connection takes no new call: {again:?}"
    );
    drop(tap);
}
