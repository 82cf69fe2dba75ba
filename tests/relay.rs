//! The relay end to end, with the real binary and test servers (no daemons needed):
//! byte-exactness under random chunking, half-close, upstream down, leaks, socket access,
//! socket activation across a restart, admin endpoint, lifecycle.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use support::*;

/// Send `data` in random-sized writes while reading the echo in random-sized reads.
fn echo_roundtrip(path: &std::path::Path, data: &[u8], seed: u64) -> Vec<u8> {
    let mut s = connect(path);
    let mut w = s.try_clone().unwrap();
    let payload = data.to_vec();
    let writer = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut off = 0;
        while off < payload.len() {
            let n = rng
                .random_range(1..=payload.len().min(300_000))
                .min(payload.len() - off);
            w.write_all(&payload[off..off + n]).unwrap();
            off += n;
            if rng.random_ratio(1, 8) {
                std::thread::sleep(Duration::from_micros(rng.random_range(0..500)));
            }
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xdead);
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 200_000];
    loop {
        let want = rng.random_range(1..=buf.len());
        match s.read(&mut buf[..want]).unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    writer.join().unwrap();
    got
}

#[test]
fn bytes_are_exact_both_ways_under_random_chunking() {
    let dir = TempDir::new("exact");
    echo_server(&dir.path("echo.sock"));
    let tap = Tap::start(
        &dir.0,
        &one_intercept("echo", &dir.path("tap.sock"), &dir.path("echo.sock"), "off"),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (i, size) in [0usize, 1, 17, 4096, 65_535, 65_537, 1 << 20, 9 << 20]
        .into_iter()
        .enumerate()
    {
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        let got = echo_roundtrip(&dir.path("tap.sock"), &data, i as u64);
        assert_eq!(got.len(), data.len(), "size {size}");
        assert!(got == data, "echoed bytes differ for size {size}");
    }
    // Several connections at once, each with its own data.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = dir.path("tap.sock");
            std::thread::spawn(move || {
                let mut data = vec![0u8; 300_000 + i * 1000];
                rand::rngs::StdRng::seed_from_u64(100 + i as u64).fill_bytes(&mut data);
                assert!(echo_roundtrip(&path, &data, i as u64) == data);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    drop(tap);
}

#[test]
fn half_close_reaches_upstream_and_the_response_still_flows_back() {
    let dir = TempDir::new("halfclose");
    digest_server(&dir.path("digest.sock"));
    let _tap = Tap::start(
        &dir.0,
        &one_intercept("d", &dir.path("tap.sock"), &dir.path("digest.sock"), "off"),
    );
    let mut data = vec![0u8; 3 << 20];
    rand::rng().fill_bytes(&mut data);
    let mut s = connect(&dir.path("tap.sock"));
    s.write_all(&data).unwrap();
    // The server answers only after it sees EOF: our shutdown(WR) must reach it as one.
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, sha256(&data));
}

#[test]
fn upstream_down_closes_clients_promptly_and_serves_again_once_it_is_back() {
    let dir = TempDir::new("down");
    let port = free_port();
    let tap = Tap::start(
        &dir.0,
        &one_intercept(
            "late",
            &dir.path("tap.sock"),
            &dir.path("echo.sock"),
            &format!("127.0.0.1:{port}"),
        ),
    );
    for _ in 0..3 {
        let mut s = connect(&dir.path("tap.sock"));
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 16];
        // Either EOF or a reset: the client is told promptly either way.
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "close took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(
        tap.metric("runtime_tap_upstream_connect_failures_total{intercept=\"late\"}"),
        Some(3)
    );
    assert!(tap.log_text().contains("cannot connect upstream"));
    assert!(tap.log_text().contains(&dir.path("echo.sock").display().to_string()));
    echo_server(&dir.path("echo.sock"));
    assert_eq!(echo_roundtrip(&dir.path("tap.sock"), b"back again", 1), b"back again");
}

#[test]
fn a_killed_client_leaks_no_descriptor_and_no_thread() {
    let dir = TempDir::new("leak");
    digest_server(&dir.path("digest.sock"));
    let port = free_port();
    let tap = Tap::start(
        &dir.0,
        &one_intercept(
            "leak",
            &dir.path("tap.sock"),
            &dir.path("digest.sock"),
            &format!("127.0.0.1:{port}"),
        ),
    );
    let _ = tap.metric("runtime_tap_connections_active{intercept=\"leak\"}");
    let fds_before = tap.settled_fd_count();
    let fd_list = |pid: u32| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| format!("{:?}->{:?}", e.file_name(), std::fs::read_link(e.path()).ok()))
            .collect();
        v.sort();
        v
    };
    let before_list = fd_list(tap.pid());
    let threads_before = tap.thread_count();
    // A child process streams into the proxy and is killed mid-transfer.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "head -c 1000000000 /dev/zero | socat -u - UNIX-CONNECT:{}",
                    dir.path("tap.sock").display()
                ))
                .spawn()
                .unwrap(),
        );
    }
    // And many idle connections at once: no thread per connection.
    let idle: Vec<UnixStream> = (0..200).map(|_| connect(&dir.path("tap.sock"))).collect();
    let start = Instant::now();
    while tap.metric("runtime_tap_connections_active{intercept=\"leak\"}") < Some(205)
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        tap.fd_count() >= fds_before + 400,
        "each connection holds two descriptors"
    );
    assert!(
        tap.thread_count() <= threads_before + 2,
        "threads grew from {threads_before} to {}",
        tap.thread_count()
    );
    std::thread::sleep(Duration::from_millis(200));
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::process::Command::new("pkill")
        .arg("-f")
        .arg(format!("UNIX-CONNECT:{}", dir.path("tap.sock").display()))
        .status();
    drop(idle);
    // Asking /metrics opens an admin connection of its own: let it close before counting.
    let start = Instant::now();
    loop {
        let active = tap.metric("runtime_tap_connections_active{intercept=\"leak\"}");
        std::thread::sleep(Duration::from_millis(200));
        if (active == Some(0) && tap.fd_count() == fds_before) || start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert_eq!(
        tap.fd_count(),
        fds_before,
        "descriptors leaked: before {before_list:?} after {:?}",
        fd_list(tap.pid())
    );
    assert_eq!(
        tap.metric("runtime_tap_connections_active{intercept=\"leak\"}"),
        Some(0)
    );
}

fn set_owner(path: &std::path::Path, uid: u32, gid: u32, mode: u32) {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn access(path: &std::path::Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o777)
}

#[test]
fn listening_socket_copies_upstream_owner_group_and_mode() {
    let dir = TempDir::new("own");
    echo_server(&dir.path("up.sock"));
    set_owner(&dir.path("up.sock"), 4242, 4343, 0o660);
    let _tap = Tap::start(
        &dir.0,
        &one_intercept("own", &dir.path("sub/dir/tap.sock"), &dir.path("up.sock"), "off"),
    );
    assert_eq!(access(&dir.path("sub/dir/tap.sock")), (4242, 4343, 0o660));
}

#[test]
fn listening_socket_takes_access_from_an_upstream_that_appears_later() {
    let dir = TempDir::new("later");
    let tap = Tap::start(
        &dir.0,
        &one_intercept("later", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
    );
    assert_eq!(
        access(&dir.path("tap.sock")).2,
        0o600,
        "nothing to copy from yet: root only"
    );
    echo_server(&dir.path("up.sock"));
    set_owner(&dir.path("up.sock"), 4545, 4646, 0o666);
    let start = Instant::now();
    while access(&dir.path("tap.sock")) != (4545, 4646, 0o666) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(access(&dir.path("tap.sock")), (4545, 4646, 0o666));
    assert_eq!(echo_roundtrip(&dir.path("tap.sock"), b"hello", 3), b"hello");
    drop(tap);
}

#[test]
fn explicit_socket_settings_override_the_upstream() {
    let dir = TempDir::new("explicit");
    echo_server(&dir.path("up.sock"));
    set_owner(&dir.path("up.sock"), 4242, 4343, 0o660);
    let config = one_intercept("x", &dir.path("tap.sock"), &dir.path("up.sock"), "off")
        .replace("[admin]", "socket_mode = \"0640\"\nsocket_group = \"777\"\n\n[admin]");
    let _tap = Tap::start(&dir.0, &config);
    assert_eq!(access(&dir.path("tap.sock")), (4242, 777, 0o640));
}

fn run_expect_failure(dir: &TempDir, config: &str) -> String {
    std::fs::write(dir.path("bad.toml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
        .arg("run")
        .arg("--config")
        .arg(dir.path("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn stale_sockets_are_replaced_but_files_and_live_sockets_never() {
    let dir = TempDir::new("stale");
    echo_server(&dir.path("up.sock"));
    // A stale socket: bound, then its listener dropped.
    drop(UnixListener::bind(dir.path("tap.sock")).unwrap());
    assert!(
        std::fs::symlink_metadata(dir.path("tap.sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    let tap = Tap::start(
        &dir.0,
        &one_intercept("s", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
    );
    assert_eq!(echo_roundtrip(&dir.path("tap.sock"), b"x", 1), b"x");
    // A live socket (the running proxy's) is refused by a second instance.
    let err = run_expect_failure(
        &dir,
        &one_intercept("s", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
    );
    assert!(err.contains("another process is listening"), "{err}");
    drop(tap);
    // A regular file is never removed.
    std::fs::write(dir.path("file.sock"), b"precious").unwrap();
    let err = run_expect_failure(
        &dir,
        &one_intercept("s", &dir.path("file.sock"), &dir.path("up.sock"), "off"),
    );
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(dir.path("file.sock")).unwrap(), b"precious");
}

#[test]
fn sigterm_removes_own_socket_and_exits_zero() {
    let dir = TempDir::new("term");
    echo_server(&dir.path("up.sock"));
    let mut tap = Tap::start(
        &dir.0,
        &one_intercept("t", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
    );
    // An open connection is let run through the grace period, then cut. One echo through it
    // first, so it has been accepted (one still in the listen backlog at SIGTERM is closed
    // with the listener, never served).
    let mut open = connect(&dir.path("tap.sock"));
    open.write_all(b"x").unwrap();
    let mut echoed = [0u8; 1];
    open.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"x");
    assert_eq!(tap.stop(), Some(0));
    assert!(!dir.path("tap.sock").exists());
    assert!(tap.log_text().contains("grace period over"));
}

#[test]
fn admin_endpoint_reports_health_readiness_and_metrics() {
    let dir = TempDir::new("admin");
    echo_server(&dir.path("up.sock"));
    let port = free_port();
    let tap = Tap::start(
        &dir.0,
        &one_intercept(
            "adm",
            &dir.path("tap.sock"),
            &dir.path("up.sock"),
            &format!("127.0.0.1:{port}"),
        ),
    );
    assert_eq!(tap.admin_get("/healthz").0, 200);
    assert_eq!(tap.admin_get("/readyz").0, 200);
    assert_eq!(tap.admin_get("/nope").0, 404);
    assert_eq!(
        echo_roundtrip(&dir.path("tap.sock"), b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n", 1).len(),
        32
    );
    let mut s = connect(&dir.path("tap.sock"));
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    let start = Instant::now();
    while tap.metric("runtime_tap_protocols_sniffed_total{intercept=\"adm\",protocol=\"http2\"}") != Some(1)
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        tap.metric("runtime_tap_protocols_sniffed_total{intercept=\"adm\",protocol=\"http2\"}"),
        Some(1)
    );
    assert_eq!(
        tap.metric("runtime_tap_protocols_sniffed_total{intercept=\"adm\",protocol=\"http1\"}"),
        Some(1)
    );
    assert_eq!(
        tap.metric("runtime_tap_connections_accepted_total{intercept=\"adm\"}"),
        Some(2)
    );
    assert_eq!(
        tap.metric("runtime_tap_bytes_total{intercept=\"adm\",direction=\"c2s\"}"),
        Some(32 + 24)
    );
    assert_eq!(
        tap.metric("runtime_tap_bytes_total{intercept=\"adm\",direction=\"s2c\"}"),
        Some(32 + 24)
    );
    assert_eq!(tap.metric("runtime_tap_listener_up{intercept=\"adm\"}"), Some(1));
}

#[test]
fn tcp_listener_relays_to_a_unix_upstream() {
    let dir = TempDir::new("tcp");
    echo_server(&dir.path("up.sock"));
    let port = free_port();
    let config = format!(
        "[[intercept]]\nname = \"tcp\"\nlisten = \"tcp://127.0.0.1:{port}\"\nupstream = \"unix://{}\"\n[admin]\nlisten = \"off\"\n",
        dir.path("up.sock").display()
    );
    let _tap = Tap::start(&dir.0, &config);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"over tcp").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"over tcp");
}

#[test]
fn check_config_prints_the_effective_config_and_names_errors() {
    let dir = TempDir::new("check");
    std::fs::write(
        dir.path("ok.toml"),
        "[[intercept]]\nname = \"containerd\"\nlisten = \"unix:///run/runtime-tap/containerd.sock\"\nupstream = \"unix:///run/containerd/containerd.sock\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
        .arg("check-config")
        .arg(dir.path("ok.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("grace_period_secs = 10"), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:9464\""), "{text}");
    std::fs::write(
        dir.path("bad.toml"),
        "[[intercept]]\nname = \"a\"\nlisten = \"unix:///x\"\nupstream = \"unix:///x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
        .arg("check-config")
        .arg(dir.path("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml: intercept[0].listen:"), "{err}");
}

/// Hand a listening socket to runtime-tap as systemd does, for the upstream `upstream`.
fn start_activated(dir: &TempDir, listener: &UnixListener, upstream: &std::path::Path) -> Tap {
    let config = format!(
        "[[intercept]]\nname = \"act\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n[admin]\nlisten = \"off\"\n[relay]\ngrace_period_secs = 1\n",
        dir.path("act.sock").display(),
        upstream.display()
    );
    Tap::start_activated(&dir.0, listener, "act", &config)
}

#[test]
fn handed_over_listener_survives_restarts_without_a_refused_connection() {
    let dir = TempDir::new("activation");
    echo_server(&dir.path("up.sock"));
    let listener = UnixListener::bind(dir.path("act.sock")).unwrap();
    std::fs::set_permissions(dir.path("act.sock"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut tap = start_activated(&dir, &listener, &dir.path("up.sock"));
    // A client opens a new connection per call, all through two restarts.
    let path = dir.path("act.sock");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let result = (|| -> std::io::Result<Vec<u8>> {
                let mut s = UnixStream::connect(&path)?;
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                s.write_all(b"call")?;
                s.shutdown(Shutdown::Write)?;
                let mut got = Vec::new();
                s.read_to_end(&mut got)?;
                Ok(got)
            })();
            match result {
                Ok(got) if got == b"call" => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        (ok, failed)
    });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(tap.stop(), Some(0));
        // The service manager keeps the socket: runtime-tap left it in place.
        assert!(dir.path("act.sock").exists());
        std::thread::sleep(Duration::from_millis(100));
        tap = start_activated(&dir, &listener, &dir.path("up.sock"));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert!(ok > 10, "only {ok} calls");
    assert_eq!(tap.stop(), Some(0));
    assert!(dir.path("act.sock").exists(), "a handed-over socket is never removed");
    assert_eq!(access(&dir.path("act.sock")).2, 0o640, "nor chmodded");
}

#[test]
fn metric_labels_stay_bounded_with_ten_thousand_distinct_paths() {
    let dir = TempDir::new("cardinality");
    // An HTTP server that answers 404 to every request on a keep-alive connection.
    let listener = UnixListener::bind(dir.path("http.sock")).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let mut line = String::new();
                loop {
                    line.clear();
                    match std::io::BufRead::read_line(&mut reader, &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            if w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    let port = free_port();
    let tap = Tap::start(
        &dir.0,
        &(one_intercept(
            "card",
            &dir.path("tap.sock"),
            &dir.path("http.sock"),
            &format!("127.0.0.1:{port}"),
        ) + "\n[export]\nconsole = false\nfile = \"/dev/null\"\n"),
    );
    let mut s = connect(&dir.path("tap.sock"));
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    for i in 0..10_000 {
        if i % 500 == 499 {
            // This test is about label cardinality, not about an unoptimised test build's
            // observer keeping pace with the relay: let it catch up now and then.
            let start = Instant::now();
            while tap.metric("runtime_tap_calls_total").unwrap_or(0) + 250 < i
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        write!(s, "GET /v1.41/nosuch/{i}/thing?x={i} HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
    }
    drop(s);
    let start = Instant::now();
    while tap.metric("runtime_tap_calls_total") < Some(10_000) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = tap.admin_get("/metrics");
    let series = body
        .lines()
        .filter(|l| l.starts_with("runtime_tap_call_duration_seconds_count{intercept=\"card\""))
        .count();
    assert!(series <= 2, "{series} series for 10,000 distinct paths");
    assert!(
        body.contains(
            "runtime_tap_call_duration_seconds_count{intercept=\"card\",method=\"GET\",status=\"404\"} 10000"
        ),
        "{body}"
    );
    assert!(body.len() < 64 * 1024, "metrics page stays small: {} bytes", body.len());
}

/// The log without colour escape sequences, so fields read `key=value`.
fn plain_log(tap: &Tap) -> String {
    let mut log = String::new();
    let mut in_escape = false;
    for c in tap.log_text().chars() {
        match c {
            '\x1b' => in_escape = true,
            'm' if in_escape => in_escape = false,
            _ if in_escape => {}
            _ => log.push(c),
        }
    }
    log
}

/// Wait for the child to exit; its exit code and how long that took.
fn wait_exit(tap: &mut Tap, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = tap.child.try_wait() {
            return (status.code(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (None, start.elapsed())
}

#[test]
fn a_failed_start_leaves_no_socket_file_behind() {
    let dir = TempDir::new("failstart");
    echo_server(&dir.path("up.sock"));
    // The admin port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = run_expect_failure(
        &dir,
        &one_intercept("f", &dir.path("sub/tap.sock"), &dir.path("up.sock"), &addr),
    );
    assert!(err.contains(&format!("admin endpoint {addr}")), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(!dir.path("sub/tap.sock").exists(), "socket left behind: {err}");
    // A capture directory that is a file fails the start after the socket was bound.
    std::fs::write(dir.path("not-a-dir"), b"x").unwrap();
    let config = one_intercept("f", &dir.path("tap.sock"), &dir.path("up.sock"), "off").replace(
        "[admin]",
        &format!("capture_dir = \"{}\"\n\n[admin]", dir.path("not-a-dir").display()),
    );
    let err = run_expect_failure(&dir, &config);
    assert!(err.contains("capture_dir"), "{err}");
    assert!(!dir.path("tap.sock").exists(), "socket left behind: {err}");
}

#[test]
fn an_upstream_that_drops_syns_closes_the_client_at_the_connect_timeout() {
    let dir = TempDir::new("blackhole");
    // A listener with a full accept queue: the kernel drops further SYNs, as a filtered host.
    let hole = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    hole.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    hole.listen(0).unwrap();
    let hole_addr = hole.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(hole_addr).unwrap();
    let port = free_port();
    let config = format!(
        "[[intercept]]\nname = \"bh\"\nlisten = \"unix://{}\"\nupstream = \"tcp://{hole_addr}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n[relay]\nconnect_timeout_secs = 1\n",
        dir.path("tap.sock").display()
    );
    let tap = Tap::start(&dir.0, &config);
    let mut s = connect(&dir.path("tap.sock"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let n = s.read(&mut [0u8; 16]).unwrap_or(0);
    let took = start.elapsed();
    assert_eq!(n, 0);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "client closed after {took:?}"
    );
    assert_eq!(
        tap.metric("runtime_tap_upstream_connect_failures_total{intercept=\"bh\"}"),
        Some(1)
    );
    let log = tap.log_text();
    assert!(
        log.contains("cannot connect upstream") && log.contains("timed out"),
        "{log}"
    );
    assert!(log.contains(&hole_addr.to_string()), "{log}");
}

#[test]
fn admin_endpoint_serves_through_the_grace_period_and_readyz_says_draining() {
    let dir = TempDir::new("drain");
    digest_server(&dir.path("digest.sock"));
    let port = free_port();
    let config = one_intercept(
        "dr",
        &dir.path("tap.sock"),
        &dir.path("digest.sock"),
        &format!("127.0.0.1:{port}"),
    )
    .replace("grace_period_secs = 2", "grace_period_secs = 4");
    let mut tap = Tap::start(&dir.0, &config);
    assert_eq!(tap.admin_get("/readyz").0, 200);
    // A call in flight at SIGTERM: the server answers only after the client's EOF.
    let mut s = connect(&dir.path("tap.sock"));
    s.write_all(b"in flight").unwrap();
    // Accepted before the signal (one still in the backlog at SIGTERM is never accepted).
    let start = Instant::now();
    while tap.metric("runtime_tap_connections_active{intercept=\"dr\"}") != Some(1)
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(tap.pid(), nix::sys::signal::Signal::SIGTERM);
    tap.wait_log(|l| l.contains("stopped accepting"), Duration::from_secs(5));
    let (status, body) = tap.admin_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert_eq!(
        tap.metric("runtime_tap_connections_active{intercept=\"dr\"}"),
        Some(1),
        "/metrics still served while draining"
    );
    // The call finishes within the grace period with its whole answer.
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, sha256(b"in flight"));
    let (code, took) = wait_exit(&mut tap, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(3),
        "nothing left open, yet exit took {took:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "admin endpoint stopped at exit"
    );
}

#[test]
fn grace_period_is_honoured_for_a_connection_that_never_ends() {
    let dir = TempDir::new("grace");
    echo_server(&dir.path("up.sock"));
    let config = one_intercept("g", &dir.path("tap.sock"), &dir.path("up.sock"), "off")
        .replace("grace_period_secs = 2", "grace_period_secs = 1");
    let mut tap = Tap::start(&dir.0, &config);
    // Like an HTTP/2 connection: open, idle, never closed by the client.
    let mut idle = connect(&dir.path("tap.sock"));
    assert_eq!(echo_once(&mut idle, b"ping"), b"ping");
    signal(tap.pid(), nix::sys::signal::Signal::SIGTERM);
    let (code, took) = wait_exit(&mut tap, Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "grace 1 s, exit after {took:?}"
    );
    assert!(tap.log_text().contains("grace period over"));
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        idle.read(&mut [0u8; 8]).unwrap_or(0),
        0,
        "the idle connection was closed"
    );
}

/// Write `data` on an open connection and read the same number of bytes back.
fn echo_once(s: &mut UnixStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).unwrap();
    let mut got = vec![0u8; data.len()];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn sigint_stops_like_sigterm() {
    let dir = TempDir::new("int");
    echo_server(&dir.path("up.sock"));
    let mut tap = Tap::start(
        &dir.0,
        &one_intercept("i", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
    );
    let mut open = connect(&dir.path("tap.sock"));
    assert_eq!(echo_once(&mut open, b"x"), b"x");
    signal(tap.pid(), nix::sys::signal::Signal::SIGINT);
    let (code, took) = wait_exit(&mut tap, Duration::from_secs(15));
    assert_eq!(code, Some(0), "SIGINT is a clean stop, not death by signal");
    assert!(took >= Duration::from_millis(1900), "the grace period ran: {took:?}");
    assert!(!dir.path("tap.sock").exists(), "own socket removed");
    let log = tap.log_text();
    assert!(log.contains("SIGINT") && log.contains("grace period over"), "{log}");
}

#[test]
fn a_full_tap_queue_gives_up_decoding_counted_while_bytes_flow() {
    let dir = TempDir::new("qfull");
    echo_server(&dir.path("up.sock"));
    let port = free_port();
    // A queue that holds less than any chunk: the first chunk overflows it, deterministically.
    let config = one_intercept(
        "q",
        &dir.path("tap.sock"),
        &dir.path("up.sock"),
        &format!("127.0.0.1:{port}"),
    ) + "tap_queue_bytes = 1\n";
    let tap = Tap::start(&dir.0, &config);
    let data = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(echo_roundtrip(&dir.path("tap.sock"), data, 5), data);
    assert_eq!(
        tap.metric("runtime_tap_tap_give_ups_total{intercept=\"q\",reason=\"queue_full\"}"),
        Some(1)
    );
    assert_eq!(
        tap.metric("runtime_tap_bytes_total{intercept=\"q\",direction=\"c2s\"}"),
        Some(data.len() as u64)
    );
    // The debug line of the connection names both ends, the server (this test) with its ids.
    let log = plain_log(&tap);
    let open = log
        .lines()
        .find(|l| l.contains("connection open"))
        .unwrap_or_else(|| panic!("{log}"));
    let me = std::process::id();
    assert!(
        open.contains(&format!("server.pid={me} server.uid=0 server.gid=0 ")),
        "{open}"
    );
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_and_logged() {
    let dir = TempDir::new("nofile");
    echo_server(&dir.path("up.sock"));
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard > 256, "this test needs a hard limit above 256");
    let nofile = format!("--nofile=256:{hard}");
    let tap = Tap::start_via(
        &dir.0,
        &one_intercept("n", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
        &["prlimit", &nofile],
        |_| {},
    );
    let log = plain_log(&tap);
    let line = log
        .lines()
        .find(|l| l.contains("raised open-files limit"))
        .unwrap_or_else(|| panic!("no limit line: {log}"));
    assert!(
        line.contains("from=256 ") && line.contains(&format!("to={hard} ")),
        "{line}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", tap.pid())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some(hard.to_string().as_str()),
        "{open_files}"
    );
}

#[test]
fn check_config_compares_socket_paths_as_the_kernel_resolves_them() {
    let dir = TempDir::new("canon");
    std::fs::create_dir_all(dir.path("real")).unwrap();
    std::os::unix::fs::symlink(dir.path("real"), dir.path("link")).unwrap();
    let check = |config: String| {
        std::fs::write(dir.path("c.toml"), config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
            .arg("check-config")
            .arg(dir.path("c.toml"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(format!(
        "[[intercept]]\nname = \"a\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n",
        dir.path("link/x.sock").display(),
        dir.path("real/x.sock").display()
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("c.toml: intercept[0].listen:") && err.contains("also the upstream"),
        "{err}"
    );
    let (code, err) = check(format!(
        "[[intercept]]\nname = \"a\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\nsocket_group = \"no-such-group-rtap\"\n",
        dir.path("real/t.sock").display(),
        dir.path("real/u.sock").display()
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("c.toml: intercept[0].socket_group:"), "{err}");
}

#[test]
fn unprivileged_the_group_bits_of_an_uncopied_group_are_cleared() {
    let dir = TempDir::new("narrow");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    // root:root 0660 upstream; runtime-tap as nobody cannot copy owner or group.
    echo_server(&dir.path("up.sock"));
    set_owner(&dir.path("up.sock"), 0, 0, 0o660);
    let tap = Tap::start_via(
        &dir.0,
        &one_intercept("n", &dir.path("tap.sock"), &dir.path("up.sock"), "off"),
        &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
        |_| {},
    );
    // Left with nobody's group, 0660 would let that group's members in: 0600 instead.
    assert_eq!(access(&dir.path("tap.sock")), (65534, 65534, 0o600));
    assert!(tap.log_text().contains("group permission bits cleared"));
}

/// Bulk through an opaque connection, with decoding off and with it on (the observer lets an
/// opaque connection go once sniffed): spliced (runtime_tap_spliced_bytes_total), every byte
/// exact both ways, half-close reaching the upstream, and /metrics counting exactly what went.
#[test]
fn bulk_on_connections_nothing_decodes_is_spliced_exact_and_counted() {
    for decode in [false, true] {
        let dir = TempDir::new("splice");
        echo_server(&dir.path("echo.sock"));
        digest_server(&dir.path("digest.sock"));
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let intercept = |name: &str, listen: &str, upstream: &str| {
            format!(
                "[[intercept]]\nname = \"{name}\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\ndecode = {decode}\n\n",
                dir.path(listen).display(),
                dir.path(upstream).display()
            )
        };
        let config = intercept("e", "tap.sock", "echo.sock")
            + &intercept("d", "tap2.sock", "digest.sock")
            + &format!("[admin]\nlisten = \"{admin}\"\n\n[relay]\ngrace_period_secs = 2\n");
        let tap = Tap::start(&dir.0, &config);
        let mut data = vec![0u8; 24 << 20];
        rand::rngs::StdRng::seed_from_u64(11).fill_bytes(&mut data);
        let got = echo_roundtrip(&dir.path("tap.sock"), &data, 3);
        assert!(got == data, "echoed bytes differ (decode = {decode})");
        // Half-close: the digest server answers only after our EOF reached it.
        let mut s = connect(&dir.path("tap2.sock"));
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, sha256(&data));
        drop(s);
        let n = data.len() as u64;
        for (name, c2s, s2c) in [("e", n, n), ("d", n, answer.len() as u64)] {
            let series = |m: &str, d: &str| format!("{m}{{intercept=\"{name}\",direction=\"{d}\"}}");
            // The counters are final once the connection is closed on both ends.
            let deadline = Instant::now() + Duration::from_secs(10);
            while tap.metric(&series("runtime_tap_bytes_total", "s2c")) != Some(s2c) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(
                tap.metric(&series("runtime_tap_bytes_total", "c2s")),
                Some(c2s),
                "{name} decode={decode}"
            );
            assert_eq!(
                tap.metric(&series("runtime_tap_bytes_total", "s2c")),
                Some(s2c),
                "{name} decode={decode}"
            );
            let spliced = tap.metric(&series("runtime_tap_spliced_bytes_total", "c2s")).unwrap();
            // All but the first reads (before the direction showed bulk; with decoding on,
            // also those offered until the observer let go) went through the pipe.
            assert!(
                spliced > c2s / 2 && spliced <= c2s,
                "{name} decode={decode}: spliced {spliced} of {c2s}"
            );
        }
        let spliced_back = tap
            .metric("runtime_tap_spliced_bytes_total{intercept=\"e\",direction=\"s2c\"}")
            .unwrap();
        assert!(
            spliced_back > n / 2,
            "echo back spliced {spliced_back} (decode={decode})"
        );
        assert_eq!(tap.metric("runtime_tap_splice_refused_total{intercept=\"e\"}"), Some(0));
    }
}
