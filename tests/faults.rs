//! Faults, against the real daemons where the fault is theirs: containerd killed and restarted
//! under load, runtime-tap out of descriptors, clients that read nothing, an upstream that
//! never answers, clients that reset mid-stream, runtime-tap restarted under load with socket
//! activation. Each test asserts what an operator would check: no client hangs, the path
//! recovers, nothing leaks (descriptors, connections, memory), and /metrics counts it.
//! Figures measured along the way are printed (`cargo test --test faults -- --nocapture`).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::json;
use support::proc::{Outcome, cpu_time, eventually, plain, rss_kib, run_with_deadline};
use support::stack::Stack;
use support::*;

/// The deadline the tests give each docker or ctr call, as a user's client would have one;
/// past it the call counts as hung.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// The CRI client's deadline per call (kubelet's default runtime request timeout is 2 min;
/// shorter here, still far above any normal call).
const CRI_DEADLINE: Duration = Duration::from_secs(15);

/// A bed shared by the tests that do not kill its daemons, with a 16 MiB image `big:latest`
/// in dockerd and in containerd's `faults` namespace.
struct Shared {
    stack: Stack,
    /// `docker save big:latest`.
    big_tar: PathBuf,
    /// The digest of its 16 MiB layer blob in containerd's `faults` namespace.
    big_layer: String,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let stack = Stack::start("faults", "");
        let dir = &stack.bed.dir;
        // A rootfs with 16 MiB of random bytes: layer blobs large enough to cut mid-stream.
        let root = dir.join("bigroot");
        std::fs::create_dir_all(&root).unwrap();
        let mut data = vec![0u8; 16 << 20];
        rand::rng().fill_bytes(&mut data);
        std::fs::write(root.join("random.bin"), &data).unwrap();
        let tar = dir.join("bigroot.tar");
        runtime_tap::bed::run(
            std::process::Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )
        .unwrap();
        runtime_tap::bed::run(
            stack
                .bed
                .docker(&stack.bed.docker_socket())
                .arg("import")
                .arg(&tar)
                .arg("big:latest"),
        )
        .unwrap();
        let big_tar = dir.join("big.tar");
        runtime_tap::bed::run(
            stack
                .bed
                .docker(&stack.bed.docker_socket())
                .args(["save", "-o"])
                .arg(&big_tar)
                .arg("big:latest"),
        )
        .unwrap();
        runtime_tap::bed::run(
            stack
                .bed
                .ctr(&stack.bed.containerd_socket())
                .args(["-n", "faults", "images", "import"])
                .arg(&big_tar),
        )
        .unwrap();
        let list = runtime_tap::bed::run(
            stack
                .bed
                .ctr(&stack.bed.containerd_socket())
                .args(["-n", "faults", "content", "ls"]),
        )
        .unwrap();
        // `content ls` columns: DIGEST SIZE AGE LABELS; the layer is the one in megabytes.
        let big_layer = String::from_utf8_lossy(&list.stdout)
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|s| s.starts_with("16.") && s.ends_with("MB"))
            })
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no 16 MiB blob in {}", String::from_utf8_lossy(&list.stdout)));
        Shared {
            stack,
            big_tar,
            big_layer,
        }
    })
}

/// Wait until runtime-tap's descriptors are back at `baseline`; how long it took.
fn fds_return_to(tap: &Tap, baseline: usize, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    eventually(timeout, || tap.fd_count() == baseline).then(|| start.elapsed())
}

// ---------------------------------------------------------------------------------------
// 1. containerd killed and restarted while dockerd, the docker CLI and a CRI client are busy.

/// One client call and how it ended.
#[derive(Debug, Clone)]
struct Call {
    client: &'static str,
    start: Instant,
    end: Instant,
    ok: bool,
    hung: bool,
    detail: String,
}

type Calls = Arc<Mutex<Vec<Call>>>;

fn record(calls: &Calls, client: &'static str, start: Instant, outcome: &Outcome) {
    let (ok, hung, detail) = match outcome {
        Outcome::Ok(_) => (true, false, String::new()),
        Outcome::Failed(e) => (false, false, e.trim().chars().take(200).collect()),
        Outcome::Hung => (false, true, "hung".into()),
    };
    calls.lock().unwrap().push(Call {
        client,
        start,
        end: Instant::now(),
        ok,
        hung,
        detail,
    });
}

/// A CRI client in a loop, reconnecting after a failure, each call under its deadline.
fn cri_loop(socket: PathBuf, calls: Calls, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let mut client: Option<runtime_tap::bed::cri::GrpcClient> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let start = Instant::now();
                let method = if n.is_multiple_of(2) {
                    "runtime.v1.RuntimeService/ListPodSandbox"
                } else {
                    "runtime.v1.RuntimeService/Version"
                };
                let call = async {
                    if client.is_none() {
                        client = Some(runtime_tap::bed::cri::GrpcClient::connect(&socket).await?);
                    }
                    client.as_mut().unwrap().unary(method, json!({}), &[]).await
                };
                let outcome = match tokio::time::timeout(CRI_DEADLINE, call).await {
                    Ok(Ok(_)) => Outcome::Ok(Vec::new()),
                    Ok(Err(status)) => {
                        client = None;
                        Outcome::Failed(status.to_string())
                    }
                    Err(_) => {
                        client = None;
                        Outcome::Hung
                    }
                };
                record(&calls, "cri", start, &outcome);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    })
}

/// A docker CLI command in a loop, each run under the client deadline.
fn docker_loop(
    bed: &runtime_tap::bed::Bed,
    socket: &Path,
    label: &'static str,
    args: &'static [&'static str],
    calls: Calls,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let config = bed.docker_config_dir();
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let outcome = run_with_deadline(
                std::process::Command::new("docker")
                    .env("DOCKER_HOST", format!("unix://{}", socket.display()))
                    .env("DOCKER_CONFIG", &config)
                    .env_remove("DOCKER_CONTEXT")
                    .args(args),
                CLIENT_DEADLINE,
            );
            record(&calls, label, start, &outcome);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[test]
fn containerd_killed_and_restarted_under_load_recovers_through_the_proxy() {
    let mut s = Stack::start("faults-kill", "");
    // Warm up: dockerd's connections to containerd are open before the baseline.
    let warm = run_with_deadline(
        s.bed
            .docker(&s.docker)
            .args(["run", "--rm", "--network", "none", "bb:latest", "true"]),
        CLIENT_DEADLINE,
    );
    assert!(warm.is_ok(), "{warm:?}");
    let fds_before = s.tap.settled_fd_count();

    let calls: Calls = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = vec![
        cri_loop(s.containerd.clone(), calls.clone(), stop.clone()),
        docker_loop(
            &s.bed,
            &s.docker,
            "docker ps",
            &["ps", "-a"],
            calls.clone(),
            stop.clone(),
        ),
        docker_loop(
            &s.bed,
            &s.docker,
            "docker run",
            &["run", "--rm", "--network", "none", "bb:latest", "true"],
            calls.clone(),
            stop.clone(),
        ),
    ];
    std::thread::sleep(Duration::from_secs(3));
    let pid = s.bed.containerd_pid().expect("containerd runs");
    let killed = Instant::now();
    s.bed.kill_containerd();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "containerd {pid} is gone");
    std::thread::sleep(Duration::from_secs(2));
    s.bed
        .start_containerd()
        .expect("containerd restarts on the same socket");
    let restarted = Instant::now();

    // Load goes on until every client has succeeded again after the restart.
    let recovered = |client: &str| {
        calls
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.client == client && c.ok && c.start >= restarted)
            .map(|c| c.end - restarted)
    };
    let all_back = eventually(Duration::from_secs(90), || {
        ["cri", "docker ps", "docker run"]
            .iter()
            .all(|c| recovered(c).is_some())
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let calls = calls.lock().unwrap().clone();
    let summary = |client: &str| {
        let mine: Vec<&Call> = calls.iter().filter(|c| c.client == client).collect();
        let failed: Vec<&str> = mine.iter().filter(|c| !c.ok).map(|c| c.detail.as_str()).collect();
        let longest = mine.iter().map(|c| c.end - c.start).max().unwrap_or_default();
        format!(
            "{client}: {} calls, {} failed, longest {longest:?}, back {:?} after restart; failures: {:?}",
            mine.len(),
            failed.len(),
            recovered(client),
            failed.iter().take(3).collect::<Vec<_>>()
        )
    };
    for client in ["cri", "docker ps", "docker run"] {
        eprintln!("containerd kill: {}", summary(client));
    }
    eprintln!("containerd kill: down for {:?}", restarted.duration_since(killed));

    let hung: Vec<&Call> = calls.iter().filter(|c| c.hung).collect();
    assert!(hung.is_empty(), "calls ran past their deadline: {hung:?}");
    assert!(all_back, "not every client recovered: {calls:?}");
    // Calls failed while containerd was down (else the kill was not seen through the proxy).
    assert!(
        calls.iter().any(|c| c.client == "cri" && !c.ok && c.end >= killed),
        "no CRI call failed while containerd was down"
    );
    // dockerd reconnected through the intercept: a container runs again end to end.
    let out = run_with_deadline(
        s.bed
            .docker(&s.docker)
            .args(["run", "--rm", "--network", "none", "bb:latest", "echo", "back"]),
        CLIENT_DEADLINE,
    );
    match out {
        Outcome::Ok(stdout) => assert_eq!(String::from_utf8_lossy(&stdout), "back\n"),
        other => panic!("docker run after the restart: {other:?}"),
    }
    assert!(s.tap.child.try_wait().unwrap().is_none(), "runtime-tap stayed up");
    assert_eq!(
        s.tap.metric("runtime_tap_listener_up{intercept=\"containerd\"}"),
        Some(1)
    );
    let failures = s
        .tap
        .metric("runtime_tap_upstream_connect_failures_total{intercept=\"containerd\"}")
        .unwrap_or(0);
    eprintln!("containerd kill: upstream connect failures counted {failures}");
    assert!(failures > 0, "upstream connect failures are counted on /metrics");
    let back = fds_return_to(&s.tap, fds_before, Duration::from_secs(30));
    eprintln!(
        "containerd kill: runtime-tap fds {fds_before} before, {} after (back in {back:?})",
        s.tap.fd_count()
    );
    assert!(
        back.is_some(),
        "runtime-tap's descriptors: {fds_before} before, {} after",
        s.tap.fd_count()
    );
}

// ---------------------------------------------------------------------------------------
// 2. runtime-tap out of file descriptors.

/// Echo `data` over an open connection to an echo server and read exactly as much back.
fn echo_exact(s: &mut UnixStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut w = s.try_clone()?;
    let payload = data.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&payload));
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = vec![0u8; data.len()];
    let read = s.read_exact(&mut got);
    writer.join().unwrap()?;
    read.map(|()| got)
}

/// What happened to one probe connection: echoed, closed by runtime-tap, or no answer.
#[derive(Debug, PartialEq)]
enum Probe {
    Echoed,
    Closed,
    NoAnswer,
}

fn probe(s: &mut UnixStream, wait: Duration) -> Probe {
    s.set_read_timeout(Some(wait)).unwrap();
    if s.write_all(b"ping").is_err() {
        return Probe::Closed;
    }
    let mut buf = [0u8; 4];
    match s.read_exact(&mut buf) {
        Ok(()) => Probe::Echoed,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Probe::NoAnswer,
        Err(_) => Probe::Closed,
    }
}

#[test]
fn out_of_descriptors_logs_once_keeps_connections_and_recovers() {
    let dir = TempDir::new("emfile");
    echo_server(&dir.path("echo.sock"));
    let port = free_port();
    let tap = Tap::start(
        &dir.0,
        &one_intercept(
            "fd",
            &dir.path("tap.sock"),
            &dir.path("echo.sock"),
            &format!("127.0.0.1:{port}"),
        ),
    );
    assert_eq!(tap.metric("runtime_tap_accept_errors_total{intercept=\"fd\"}"), Some(0));
    let baseline = tap.settled_fd_count();
    // Room for 16 relayed connections (two descriptors each) and nothing more.
    let limit = baseline + 32;
    runtime_tap::bed::run(
        std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(tap.pid().to_string())
            .arg(format!("--nofile={limit}:{limit}")),
    )
    .unwrap();

    let mut held = Vec::new();
    let mut closed_by_tap = 0;
    let mut admin_hold = Vec::new();
    let pending = loop {
        assert!(held.len() < 40, "never ran out of descriptors (limit {limit})");
        let mut s = connect(&dir.path("tap.sock"));
        match probe(&mut s, Duration::from_secs(1)) {
            Probe::Echoed => held.push(s),
            Probe::NoAnswer => break s,
            Probe::Closed => {
                // One descriptor short of the limit: accept succeeds, the upstream connect
                // fails (and closes the client). Take that one descriptor with an idle admin
                // connection, so the next accept is the one that fails.
                closed_by_tap += 1;
                assert!(closed_by_tap < 4, "connections keep being closed, accept never fails");
                admin_hold.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let exhausted = Instant::now();
    eprintln!(
        "emfile: baseline {baseline} fds, limit {limit}, {} connections relayed, {closed_by_tap} closed at the upstream connect",
        held.len()
    );
    tap.wait_log(|l| plain(l).contains("accept failed"), Duration::from_secs(5));

    // No busy loop while the condition lasts.
    let cpu_before = cpu_time(tap.pid());
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time(tap.pid()) - cpu_before;
    eprintln!("emfile: runtime-tap used {cpu:?} of CPU over 2 s of exhaustion");
    assert!(
        cpu < Duration::from_millis(300),
        "accept loop spins: {cpu:?} of CPU in 2 s"
    );

    // Existing connections relay exact bytes.
    for s in held.iter_mut().take(3) {
        let mut data = vec![0u8; 1 << 20];
        rand::rng().fill_bytes(&mut data);
        let got = echo_exact(s, &data).expect("an existing connection goes on");
        assert!(got == data, "echoed bytes differ during exhaustion");
    }

    // One clear line per episode, naming the cause and the intercept.
    let log = plain(&tap.log_text());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("accept failed") && l.contains("intercept=\"fd\""))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line per episode, got:\n{}\nlog:\n{log}",
        lines.join("\n")
    );
    assert!(lines[0].contains("Too many open files"), "{}", lines[0]);
    assert!(
        lines[0].contains("too many open files: the process hit RLIMIT_NOFILE"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&dir.path("tap.sock").display().to_string()),
        "{}",
        lines[0]
    );

    // Freeing descriptors lets the waiting connection in, and new ones after it.
    held.truncate(held.len() - 3);
    drop(admin_hold);
    let freed = Instant::now();
    let mut pending = pending;
    let mut buf = [0u8; 4];
    pending.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    pending
        .read_exact(&mut buf)
        .expect("the connection waiting in the backlog is served");
    assert_eq!(&buf, b"ping");
    let recovery = freed.elapsed();
    let mut fresh = connect(&dir.path("tap.sock"));
    assert_eq!(probe(&mut fresh, Duration::from_secs(5)), Probe::Echoed);
    eprintln!(
        "emfile: exhausted for {:?}; after freeing, the waiting connection was served in {recovery:?}",
        freed - exhausted
    );
    tap.wait_log(|l| plain(l).contains("accepting again"), Duration::from_secs(5));
    let errors = tap.metric("runtime_tap_accept_errors_total{intercept=\"fd\"}").unwrap();
    eprintln!("emfile: accept errors counted {errors}");
    assert!(errors >= 1, "accept errors are counted");
    drop((held, pending, fresh));
    assert!(
        fds_return_to(&tap, baseline, Duration::from_secs(10)).is_some(),
        "descriptors: {baseline} before, {} after",
        tap.fd_count()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Clients that read nothing of a large response.

/// A unix HTTP/1.1 server: `GET /big` answers `size` bytes (streamed, never held whole),
/// anything else a 5-byte body, keep-alive. Returns the count of /big body bytes written.
fn big_body_server(path: &Path, size: u64) -> Arc<AtomicU64> {
    let written = Arc::new(AtomicU64::new(0));
    let listener = UnixListener::bind(path).unwrap();
    let counter = written.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                // Small writes, so the count is close to what the socket took.
                let chunk = vec![b'x'; 16 * 1024];
                loop {
                    let mut request = String::new();
                    loop {
                        let mut line = String::new();
                        match std::io::BufRead::read_line(&mut reader, &mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => request.push_str(&line),
                        }
                    }
                    if request.starts_with("GET /big ") {
                        if write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").is_err() {
                            return;
                        }
                        let mut left = size;
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if w.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            left -= n as u64;
                        }
                    } else if w
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    written
}

/// GET `path` on a connection and read the whole small response.
fn small_get(s: &mut UnixStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let want = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn clients_that_read_nothing_stall_no_one_and_grow_no_memory() {
    const SLOW: usize = 4;
    const SIZE: u64 = 512 << 20;
    let dir = TempDir::new("slow");
    let written = big_body_server(&dir.path("up.sock"), SIZE);
    let tap = Tap::start(
        &dir.0,
        &(one_intercept(
            "slow",
            &dir.path("tap.sock"),
            &dir.path("up.sock"),
            &format!("127.0.0.1:{}", free_port()),
        ) + "\n[export]\nconsole = false\nfile = \"/dev/null\"\n"),
    );
    // Warm up the paths the other clients use, then take the baseline.
    let mut keepalive = connect(&dir.path("tap.sock"));
    for _ in 0..20 {
        small_get(&mut keepalive).unwrap();
        small_get(&mut connect(&dir.path("tap.sock"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(tap.pid());

    let slow: Vec<UnixStream> = (0..SLOW)
        .map(|_| {
            let mut s = connect(&dir.path("tap.sock"));
            s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Wait until the upstream is stuck: nothing more written for a second.
    let mut last = u64::MAX;
    assert!(
        eventually(Duration::from_secs(30), || {
            std::thread::sleep(Duration::from_millis(900));
            let now = written.load(Ordering::Relaxed);
            let still = now == last;
            last = now;
            still && now > 0
        }),
        "the upstream never stopped writing"
    );
    let in_flight = written.load(Ordering::Relaxed);
    // Meanwhile other clients' calls complete, on a kept-alive and on new connections.
    let start = Instant::now();
    for _ in 0..50 {
        small_get(&mut keepalive).expect("a call on a kept-alive connection");
        small_get(&mut connect(&dir.path("tap.sock"))).expect("a call on a new connection");
    }
    let others = start.elapsed();
    let rss_after = rss_kib(tap.pid());
    eprintln!(
        "slow readers: {SLOW} x {} MiB pending, upstream wrote {:.1} MiB before stalling; VmRSS {} -> {} KiB (+{} KiB); 100 other calls took {others:?}",
        SIZE >> 20,
        in_flight as f64 / (1 << 20) as f64,
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before)
    );
    assert!(
        in_flight < 64 << 20,
        "runtime-tap read {in_flight} bytes ahead of clients that read nothing"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "VmRSS grew from {rss_before} to {rss_after} KiB with responses pending"
    );
    drop(slow);
    assert!(eventually(Duration::from_secs(10), || {
        tap.metric("runtime_tap_connections_active{intercept=\"slow\"}") == Some(1)
    }));
}

// ---------------------------------------------------------------------------------------
// 4. An upstream that accepts and never answers.

/// A unix server that reads everything and never writes; records when each connection ended
/// (EOF or error) on its side.
fn mute_server(path: &Path) -> Arc<Mutex<Vec<Instant>>> {
    let ended = Arc::new(Mutex::new(Vec::new()));
    let listener = UnixListener::bind(path).unwrap();
    let log = ended.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                log.lock().unwrap().push(Instant::now());
            });
        }
    });
    ended
}

#[test]
fn an_upstream_that_never_answers_gets_no_timeout_and_is_freed_when_the_client_gives_up() {
    const WAIT: Duration = Duration::from_secs(15);
    let dir = TempDir::new("mute");
    let ended = mute_server(&dir.path("up.sock"));
    let tap = Tap::start(
        &dir.0,
        &one_intercept(
            "mute",
            &dir.path("tap.sock"),
            &dir.path("up.sock"),
            &format!("127.0.0.1:{}", free_port()),
        ),
    );
    assert_eq!(
        tap.metric("runtime_tap_connections_active{intercept=\"mute\"}"),
        Some(0)
    );
    let baseline = tap.settled_fd_count();

    // A gRPC client with a deadline of its own gives up after 2 s and drops its connection.
    let socket = dir.path("tap.sock");
    let grpc = std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut c = runtime_tap::bed::cri::GrpcClient::connect(&socket).await.unwrap();
            let call = c.unary("runtime.v1.RuntimeService/Version", json!({}), &[]);
            let r = tokio::time::timeout(Duration::from_secs(2), call).await;
            assert!(r.is_err(), "no answer can come: {r:?}");
            drop(c);
            Instant::now()
        })
    });
    // An HTTP client waits as long as it likes: runtime-tap neither answers nor closes.
    let mut s = connect(&dir.path("tap.sock"));
    s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let read = s.read(&mut buf);
    let waited = start.elapsed();
    assert!(
        matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "after {waited:?}: {read:?} (runtime-tap closed or answered)"
    );
    assert!(waited >= WAIT - Duration::from_millis(100));
    assert_eq!(
        tap.metric("runtime_tap_connections_active{intercept=\"mute\"}"),
        Some(1)
    );

    // The gRPC client gave up long ago: its upstream connection was closed then.
    let gave_up = grpc.join().unwrap();
    let grpc_freed = ended
        .lock()
        .unwrap()
        .first()
        .map(|t| t.saturating_duration_since(gave_up));
    // The HTTP client gives up now.
    drop(s);
    let closed = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || ended.lock().unwrap().len() == 2),
        "the upstream saw {} of 2 connections end",
        ended.lock().unwrap().len()
    );
    let http_freed = ended.lock().unwrap()[1].saturating_duration_since(closed);
    eprintln!(
        "mute upstream: held {waited:?}; upstream saw EOF {grpc_freed:?} after the gRPC client gave up, {http_freed:?} after the HTTP client closed"
    );
    assert!(grpc_freed.is_some_and(|d| d < Duration::from_secs(2)));
    assert!(http_freed < Duration::from_secs(2));
    assert!(eventually(Duration::from_secs(5), || {
        tap.metric("runtime_tap_connections_active{intercept=\"mute\"}") == Some(0)
    }));
    assert!(
        fds_return_to(&tap, baseline, Duration::from_secs(10)).is_some(),
        "descriptors: {baseline} before, {} after",
        tap.fd_count()
    );
}

// ---------------------------------------------------------------------------------------
// 5. Clients that reset mid-stream, on gRPC to containerd and HTTP/1.1 to dockerd.

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A containerd Content/Read of `digest` in namespace `ns`, as the bytes a gRPC client sends:
/// preface, SETTINGS (a large window), WINDOW_UPDATE, HEADERS (HPACK literals), DATA.
fn content_read_request(ns: &str, digest: &str) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let window: u32 = (1 << 31) - 1;
    let mut settings = vec![0, 4];
    settings.extend_from_slice(&window.to_be_bytes());
    out.extend(h2_frame(4, 0, 0, &settings));
    out.extend(h2_frame(8, 0, 0, &(window - 65_535).to_be_bytes()));
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/containerd.services.content.v1.Content/Read"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("containerd-namespace", ns),
    ] {
        // Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2).
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    out.extend(h2_frame(1, 4, 1, &block));
    // ReadContentRequest { digest = 1 }
    let mut msg = vec![0x0a, digest.len() as u8];
    msg.extend_from_slice(digest.as_bytes());
    let mut data = vec![0];
    data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    data.extend(msg);
    out.extend(h2_frame(0, 1, 1, &data));
    out
}

/// Read at least `n` bytes (a transfer well under way), then wait for more to arrive unread.
fn read_some(s: &mut impl Read, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf) {
            Ok(0) => panic!("stream ended after {got} bytes, before the reset"),
            Ok(k) => got += k,
            Err(e) => panic!("after {got} bytes: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn clients_that_reset_mid_stream_leave_other_clients_and_the_daemons_unharmed() {
    const RESETS: usize = 8;
    let sh = shared();
    let bed = &sh.stack.bed;
    let dir = TempDir::new("reset");
    let port = free_port();
    let grpc_sock = dir.path("containerd.sock");
    let config = format!(
        "[[intercept]]\nname = \"grpc\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n\n\
         [[intercept]]\nname = \"http\"\nlisten = \"tcp://127.0.0.1:{port}\"\nupstream = \"unix://{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n\n[export]\nconsole = false\nfile = \"/dev/null\"\n",
        grpc_sock.display(),
        bed.containerd_socket().display(),
        bed.docker_socket().display(),
        free_port()
    );
    let tap = Tap::start(&dir.0, &config);
    let baseline = tap.settled_fd_count();
    let docker_host = format!("tcp://127.0.0.1:{port}");
    let docker = || {
        let mut c = bed.docker(&bed.docker_socket());
        c.env("DOCKER_HOST", &docker_host);
        c
    };

    // Other clients, busy all along: every call must succeed with the exact bytes.
    let stop = Arc::new(AtomicBool::new(false));
    let others = {
        let stop = stop.clone();
        let ctr_sock = grpc_sock.clone();
        let layer = sh.big_layer.clone();
        let mut save = docker();
        save.args(["image", "inspect", "--format", "{{.Id}}", "big:latest"]);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) || ok < 4 {
                let got = run_with_deadline(
                    std::process::Command::new("ctr")
                        .arg("-a")
                        .arg(&ctr_sock)
                        .args(["-n", "faults", "content", "get", &layer]),
                    CLIENT_DEADLINE,
                );
                match got {
                    Outcome::Ok(bytes) if format!("sha256:{}", sha256(&bytes)) == layer => ok += 1,
                    other => failed.push(format!("ctr content get: {:?}", other.is_ok())),
                }
                match run_with_deadline(&mut save, CLIENT_DEADLINE) {
                    Outcome::Ok(id) if String::from_utf8_lossy(&id).starts_with("sha256:") => ok += 1,
                    other => failed.push(format!("docker image inspect: {other:?}")),
                }
            }
            (ok, failed)
        })
    };

    let tar = std::fs::read(&sh.big_tar).unwrap();
    for _ in 0..RESETS {
        // gRPC: a 16 MiB Content/Read, cut after 256 KiB by a close with unread data (the
        // unix-socket reset: runtime-tap's next read or write fails with ECONNRESET).
        let mut s = UnixStream::connect(&grpc_sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&content_read_request("faults", &sh.big_layer)).unwrap();
        read_some(&mut s, 256 * 1024);
        drop(s);
        // HTTP/1.1 download: `docker save` of the image, reset (RST, SO_LINGER 0) after 256 KiB.
        let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        t.write_all(b"GET /v1.41/images/get?names=big%3Alatest HTTP/1.1\r\nHost: docker\r\n\r\n")
            .unwrap();
        read_some(&mut t, 256 * 1024);
        socket2::SockRef::from(&t).set_linger(Some(Duration::ZERO)).unwrap();
        drop(t);
        // HTTP/1.1 upload: `docker load` of the image tar, reset after half of it was sent.
        let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            t,
            "POST /v1.41/images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
            tar.len()
        )
        .unwrap();
        t.write_all(&tar[..tar.len() / 2]).unwrap();
        socket2::SockRef::from(&t).set_linger(Some(Duration::ZERO)).unwrap();
        drop(t);
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = others.join().unwrap();
    eprintln!(
        "resets: {RESETS} x 3 resets; other clients: {ok} calls ok, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "other clients' calls failed: {failed:?}");

    // The daemons still serve, directly and through runtime-tap.
    for sock in [&grpc_sock, &bed.containerd_socket()] {
        let v = run_with_deadline(bed.ctr(sock).arg("version"), CLIENT_DEADLINE);
        assert!(v.is_ok(), "ctr version on {}: {v:?}", sock.display());
    }
    let v = run_with_deadline(docker().arg("version"), CLIENT_DEADLINE);
    assert!(v.is_ok(), "docker version: {v:?}");

    // Nothing leaks, and /metrics counts what happened.
    for name in ["grpc", "http"] {
        assert!(
            eventually(Duration::from_secs(10), || {
                tap.metric(&format!("runtime_tap_connections_active{{intercept=\"{name}\"}}")) == Some(0)
            }),
            "{name}: connections still active"
        );
    }
    let back = fds_return_to(&tap, baseline, Duration::from_secs(10));
    let fds_after = tap.fd_count();
    let metric = |m: &str, i: &str| {
        tap.metric(&format!("runtime_tap_{m}{{intercept=\"{i}\"}}"))
            .unwrap_or(0)
    };
    eprintln!(
        "resets: grpc accepted {} relay errors {}; http accepted {} relay errors {}; fds {baseline} -> {} (back in {back:?})",
        metric("connections_accepted_total", "grpc"),
        metric("relay_errors_total", "grpc"),
        metric("connections_accepted_total", "http"),
        metric("relay_errors_total", "http"),
        fds_after
    );
    assert!(
        back.is_some(),
        "descriptors: {baseline} before, {} after",
        tap.fd_count()
    );
    assert!(
        metric("relay_errors_total", "grpc") >= RESETS as u64,
        "each gRPC reset is a counted relay error"
    );
    assert!(
        metric("relay_errors_total", "http") >= 2 * RESETS as u64,
        "each HTTP reset is a counted relay error"
    );
    assert!(metric("connections_accepted_total", "grpc") >= RESETS as u64);
}

// ---------------------------------------------------------------------------------------
// 6. runtime-tap restarted under real load, with socket activation.

/// How the calls of the activation test ended.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Cut on a connection open at a restart, then retried (and so completed).
    retried: u64,
    /// A connection refused, or the socket missing: never allowed.
    refused: Vec<String>,
    /// Failed even after retries.
    failed: Vec<String>,
}

fn is_refusal(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("connection refused") || t.contains("no such file")
}

#[test]
fn socket_activated_restarts_under_real_load_refuse_no_connection() {
    let sh = shared();
    let bed = &sh.stack.bed;
    let dir = TempDir::new("activated");
    let sock = dir.path("act.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let config = format!(
        "[[intercept]]\nname = \"act\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n\n[admin]\nlisten = \"off\"\n\n[relay]\ngrace_period_secs = 1\n\n[export]\nconsole = false\nfile = \"/dev/null\"\n",
        sock.display(),
        bed.containerd_socket().display()
    );
    let mut tap = Tap::start_activated(&dir.0, &listener, "act", &config);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = Vec::new();
    // Two ctr clients: a process and a connection per call.
    for args in [
        &["-n", "faults", "content", "ls", "-q"][..],
        &["-n", "faults", "images", "ls", "-q"][..],
    ] {
        let (stop, tally, sock) = (stop.clone(), tally.clone(), sock.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut tries = 0;
                loop {
                    tries += 1;
                    let out = run_with_deadline(
                        std::process::Command::new("ctr").arg("-a").arg(&sock).args(&args),
                        CLIENT_DEADLINE,
                    );
                    let mut t = tally.lock().unwrap();
                    match out {
                        Outcome::Ok(_) => {
                            t.ok += 1;
                            t.retried += u64::from(tries > 1);
                            break;
                        }
                        Outcome::Failed(e) if is_refusal(&e) => t.refused.push(e),
                        other if tries >= 3 => t.failed.push(format!("{other:?}")),
                        _ => continue,
                    }
                    break;
                }
            }
        }));
    }
    // Two CRI clients, each on one kept-open connection as kubelet: a call cut at a restart
    // is retried on a new connection.
    for _ in 0..2 {
        let (stop, tally, sock) = (stop.clone(), tally.clone(), sock.clone());
        clients.push(std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut client = None;
                while !stop.load(Ordering::Relaxed) {
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        let call = async {
                            if client.is_none() {
                                client = Some(runtime_tap::bed::cri::GrpcClient::connect(&sock).await?);
                            }
                            client
                                .as_mut()
                                .unwrap()
                                .unary("runtime.v1.RuntimeService/Version", json!({}), &[])
                                .await
                        };
                        let r = tokio::time::timeout(CRI_DEADLINE, call).await;
                        let mut t = tally.lock().unwrap();
                        match r {
                            Ok(Ok(_)) => {
                                t.ok += 1;
                                t.retried += u64::from(tries > 1);
                                break;
                            }
                            Ok(Err(e)) if is_refusal(&e.message) => t.refused.push(e.to_string()),
                            other if tries >= 3 => t.failed.push(format!("{other:?}")),
                            _ => {
                                client = None;
                                continue;
                            }
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        }));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let mut restarts = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(tap.stop(), Some(0));
        assert!(sock.exists(), "runtime-tap removed a handed-over socket");
        tap = Tap::start_activated(&dir.0, &listener, "act", &config);
        restarts.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(1000));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let t = tally.lock().unwrap();
    eprintln!(
        "activation: 3 restarts ({restarts:?} each, stop + start); {} calls ok, {} of them retried after a cut, {} refused, {} failed",
        t.ok,
        t.retried,
        t.refused.len(),
        t.failed.len()
    );
    assert!(t.refused.is_empty(), "refused: {:?}", t.refused);
    assert!(t.failed.is_empty(), "failed: {:?}", t.failed);
    assert!(t.ok > 40, "only {} calls", t.ok);
    assert_eq!(tap.stop(), Some(0));
}

// ---------------------------------------------------------------------------------------
// 7. A slow collector (answers each export after a delay) under real traffic.

#[test]
fn a_slow_collector_costs_clients_nothing_and_every_span_is_accounted_for() {
    const CRI_CALLS: usize = 300;
    let sh = shared();
    let bed = &sh.stack.bed;
    let rt = runtime();
    let receiver = rt.block_on(support::otlp::OtlpReceiver::start_slow(Duration::from_secs(1)));
    let dir = TempDir::new("slow-collector");
    let sock = dir.path("containerd.sock");
    let config = one_intercept(
        "slowcol",
        &sock,
        &bed.containerd_socket(),
        &format!("127.0.0.1:{}", free_port()),
    ) + &format!(
        "\n[export]\nendpoint = \"{}\"\nconsole = false\n\n[sampling]\ndefault_rules = false\n",
        receiver.endpoint()
    );
    // A small queue and batch, so a one-second collector falls behind within the test.
    let tap = Tap::start_with(&dir.0, &config, |cmd| {
        cmd.env("OTEL_BSP_MAX_QUEUE_SIZE", "64")
            .env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16");
    });
    let rss_before = rss_kib(tap.pid());

    // Real traffic: two CRI clients and ctr, every call must succeed.
    let cri: Vec<_> = (0..2)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                runtime().block_on(async move {
                    let mut c = runtime_tap::bed::cri::GrpcClient::connect(&sock).await.unwrap();
                    for i in 0..CRI_CALLS / 2 {
                        let method = if i.is_multiple_of(2) {
                            "runtime.v1.RuntimeService/Version"
                        } else {
                            "runtime.v1.ImageService/ListImages"
                        };
                        let r = tokio::time::timeout(CRI_DEADLINE, c.unary(method, json!({}), &[])).await;
                        assert!(matches!(r, Ok(Ok(_))), "{method}: {r:?}");
                    }
                })
            })
        })
        .collect();
    for _ in 0..20 {
        let out = run_with_deadline(
            bed.ctr(&sock).args(["-n", "faults", "content", "ls", "-q"]),
            CLIENT_DEADLINE,
        );
        assert!(out.is_ok(), "ctr content ls: {out:?}");
    }
    for c in cri {
        c.join().unwrap();
    }
    let rss_after = rss_kib(tap.pid());

    // Every call is accounted for: exported (and received) or dropped with a reason.
    let m = |series: &str| tap.metric(series).unwrap_or(0);
    let balanced = eventually(Duration::from_secs(30), || {
        m("runtime_tap_export_queue_spans") == 0
            && m("runtime_tap_spans_submitted_total")
                == m("runtime_tap_spans_exported_total")
                    + m("runtime_tap_spans_dropped_total{reason=\"queue_full\"}")
                    + m("runtime_tap_spans_dropped_total{reason=\"export_failed\"}")
            && receiver.spans().len() as u64 == m("runtime_tap_spans_exported_total")
    });
    let (calls, submitted, exported) = (
        m("runtime_tap_calls_total"),
        m("runtime_tap_spans_submitted_total"),
        m("runtime_tap_spans_exported_total"),
    );
    let (queue_full, failed) = (
        m("runtime_tap_spans_dropped_total{reason=\"queue_full\"}"),
        m("runtime_tap_spans_dropped_total{reason=\"export_failed\"}"),
    );
    eprintln!(
        "slow collector: {calls} calls observed, {submitted} spans submitted, {exported} exported ({} received in {} requests), dropped queue_full {queue_full} export_failed {failed}; VmRSS {rss_before} -> {rss_after} KiB",
        receiver.spans().len(),
        receiver.requests()
    );
    assert!(balanced, "spans not accounted for");
    assert!(calls >= CRI_CALLS as u64 + 20, "{calls} calls observed");
    assert!(
        queue_full > 0,
        "a 1 s collector behind a 64-span queue drops, counted as queue_full"
    );
    assert_eq!(
        failed, 0,
        "slow is not failed: every export was answered within its timeout"
    );
    assert!(exported > 0);
    assert_eq!(submitted, calls, "one span per call, none lost before the queue");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
}
