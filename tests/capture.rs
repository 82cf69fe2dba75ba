//! Raw capture: recorded connections written through the capture writer open in tshark
//! (Debian's package, installed when missing), which decodes the HTTP/1.1 requests and the
//! HTTP/2 gRPC paths; rotation keeps the configured number of files, each readable, all 0600;
//! and end to end, a `docker run` through runtime-tap with `capture_dir` set gives files in
//! which tshark finds the Docker API requests and the containerd gRPC calls.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use runtime_tap::capture::{self, Capture, CaptureConfig};
use runtime_tap::relay::tap::TapEvent;
use runtime_tap::trace::call::Clock;
use runtime_tap::wire::Direction;
use support::TempDir;
use support::stack::Stack;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/captures");

/// One line of a recorded connection: a chunk, or a half-close, `t` ns after it opened.
enum Rec {
    Data(Direction, u64, Bytes),
    Eof(Direction, u64),
}

fn load(path: &str) -> Vec<Rec> {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(path)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let dir = match v["dir"].as_str().unwrap() {
                "c2s" => Direction::ClientToServer,
                "s2c" => Direction::ServerToClient,
                d => panic!("direction {d}"),
            };
            let t = v["t"].as_u64().unwrap();
            if v["eof"].as_bool() == Some(true) {
                Rec::Eof(dir, t)
            } else {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v["b64"].as_str().unwrap())
                    .unwrap();
                Rec::Data(dir, t, Bytes::from(b))
            }
        })
        .collect()
}

/// Feed recorded connections (id, records) to a capture as the observer would, then flush.
fn feed(capture: &Capture, conns: &[(u64, Vec<Rec>)]) {
    let base = Instant::now();
    for (id, recs) in conns {
        let mut c = capture.connection(*id);
        let mut last = base;
        for r in recs {
            let event = match r {
                Rec::Data(dir, t, bytes) => {
                    last = base + Duration::from_nanos(*t);
                    TapEvent::Data {
                        dir: *dir,
                        at: last,
                        bytes: bytes.clone(),
                    }
                }
                Rec::Eof(dir, t) => {
                    last = base + Duration::from_nanos(*t);
                    TapEvent::Eof { dir: *dir, at: last }
                }
            };
            c.event(&event);
        }
        c.event(&TapEvent::Closed { at: last });
    }
    assert!(capture.flush(Duration::from_secs(10)), "capture writer flushed");
}

fn start(dir: &Path, name: &str, max_bytes: u64, files: usize) -> Capture {
    Capture::start(
        CaptureConfig {
            name: name.into(),
            dir: dir.to_owned(),
            max_bytes,
            files,
        },
        Clock::new(),
    )
    .unwrap()
}

/// A keep-alive HTTP/1.1 connection: a POST with a 300 KB body (several segments, each chunk
/// larger than one IPv4 packet can hold), then a GET after it.
fn big_post() -> Vec<Rec> {
    let body = vec![b'x'; 300_000];
    let mut req = format!(
        "POST /v1.41/big HTTP/1.1\r\nHost: api.moby.localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let resp = b"HTTP/1.1 204 No Content\r\nApi-Version: 1.41\r\n\r\n".to_vec();
    let get = b"GET /v1.41/after-big HTTP/1.1\r\nHost: api.moby.localhost\r\n\r\n".to_vec();
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}".to_vec();
    use Direction::*;
    vec![
        // One 200 KB chunk (split into segments by the capture) and the rest.
        Rec::Data(ClientToServer, 1_000, Bytes::from(req[..200_000].to_vec())),
        Rec::Data(ClientToServer, 2_000, Bytes::from(req[200_000..].to_vec())),
        Rec::Data(ServerToClient, 3_000, Bytes::from(resp)),
        Rec::Data(ClientToServer, 4_000, Bytes::from(get)),
        Rec::Data(ServerToClient, 5_000, Bytes::from(ok)),
    ]
}

/// tshark, installed from Debian's package when missing.
fn tshark_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = runtime_tap::bed::which("tshark") {
            return p;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "tshark"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            assert!(install(), "apt-get install tshark failed");
        }
        runtime_tap::bed::which("tshark").expect("tshark installed")
    })
}

/// `tshark -r file <args>`: its stdout; fails the test if tshark does.
fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new(tshark_bin())
        .arg("-r")
        .arg(file)
        .args(["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark -r {} {args:?}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The HTTP/1 requests tshark decodes: "METHOD URI" lines.
fn http_requests(file: &Path) -> Vec<String> {
    tshark(
        file,
        &[
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
        ],
    )
    .lines()
    .map(|l| l.replace('\t', " "))
    .collect()
}

/// The `:path` of every HTTP/2 request header block tshark decodes.
fn grpc_paths(file: &Path) -> Vec<String> {
    tshark(
        file,
        &[
            "-d",
            "tcp.port==50051,http2",
            "-Y",
            "http2.headers.path",
            "-T",
            "fields",
            "-e",
            "http2.headers.path",
        ],
    )
    .lines()
    .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
    .filter(|p| !p.is_empty())
    .collect()
}

/// Packets tshark flags as malformed, with bad checksums (status 0), or with TCP analysis
/// findings (gaps, out-of-order, retransmissions, full windows).
fn problems(file: &Path) -> String {
    tshark(
        file,
        &[
            "-Y",
            "_ws.malformed || ip.checksum.status == 0 || tcp.checksum.status == 0 || tcp.analysis.flags",
        ],
    )
}

fn assert_private(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}: mode {mode:o}", path.display());
}

#[test]
fn recorded_http1_and_grpc_connections_decode_in_tshark() {
    let dir = TempDir::new("capture");
    let docker = start(&dir.0, "dockerd", capture::DEFAULT_MAX_BYTES, capture::DEFAULT_FILES);
    feed(&docker, &[(1, load("docker-cli/01-version.jsonl")), (2, big_post())]);
    let containerd = start(&dir.0, "containerd", capture::DEFAULT_MAX_BYTES, capture::DEFAULT_FILES);
    feed(&containerd, &[(3, load("ctr-version.jsonl"))]);
    assert_eq!(docker.stats().dropped_segments, 0);
    assert_eq!(containerd.stats().dropped_segments, 0);

    let dockerd_file = dir.path("dockerd-0.pcapng");
    let containerd_file = dir.path("containerd-0.pcapng");
    assert_private(&dockerd_file);
    assert_private(&containerd_file);

    let requests = http_requests(&dockerd_file);
    eprintln!("tshark http.request (dockerd):\n{}", requests.join("\n"));
    assert_eq!(
        requests,
        [
            "HEAD /_ping",
            "GET /v1.41/version",
            "POST /v1.41/big",
            "GET /v1.41/after-big"
        ],
        "every request, in order, the one after the 300 KB body too"
    );
    // The body was reassembled whole from its segments.
    let lengths = tshark(
        &dockerd_file,
        &[
            "-Y",
            "http.request.method == \"POST\"",
            "-T",
            "fields",
            "-e",
            "http.content_length",
        ],
    );
    assert_eq!(lengths.trim(), "300000");

    let paths = grpc_paths(&containerd_file);
    eprintln!("tshark http2.headers.path (containerd):\n{}", paths.join("\n"));
    assert_eq!(
        paths,
        [
            "/containerd.services.version.v1.Version/Version",
            "/containerd.services.introspection.v1.Introspection/Server"
        ]
    );
    let grpc = tshark(&containerd_file, &["-d", "tcp.port==50051,http2", "-Y", "grpc"]);
    eprintln!("tshark -Y grpc (containerd):\n{grpc}");
    assert!(grpc.lines().count() >= 2, "gRPC messages decoded:\n{grpc}");

    for f in [&dockerd_file, &containerd_file] {
        let bad = problems(f);
        assert!(bad.trim().is_empty(), "{}: {bad}", f.display());
    }
}

#[test]
fn rotation_keeps_the_newest_files_each_readable() {
    let dir = TempDir::new("capture-rotate");
    // A file left by an earlier run counts towards the files kept.
    let stale = dir.path("dockerd-7.pcapng");
    std::fs::write(&stale, b"old").unwrap();
    let c = start(&dir.0, "dockerd", 64 * 1024, 3);
    let conns: Vec<(u64, Vec<Rec>)> = (10..30).map(|id| (id, big_post())).collect();
    feed(&c, &conns);
    let stats = c.stats();
    assert_eq!(stats.dropped_segments, 0);
    assert!(stats.files_opened >= 20, "{stats:?}");
    let files = capture::files(&dir.0, "dockerd");
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(!stale.exists(), "the oldest (an earlier run's) file was deleted");
    // Numbering continues after the earlier run's files.
    assert!(files[0].ends_with(format!("dockerd-{}.pcapng", 8 + stats.files_opened - 3)));
    let mut frames = 0;
    for f in &files {
        assert_private(f);
        // Each opens on its own (its own section and interface blocks).
        frames += tshark(f, &["-T", "fields", "-e", "frame.number"]).lines().count();
    }
    assert!(frames > 0);
}

#[test]
fn docker_run_capture_decodes_in_tshark() {
    let capture_dir = TempDir::new("capture-e2e");
    let mut s = Stack::start_with("capture", "", &format!("capture_dir = \"{}\"", capture_dir.0.display()));
    let out = s
        .bed
        .docker(&s.docker)
        .args(["run", "--rm", "--network", "none", "bb:latest", "echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopping runtime-tap closes the connections and writes out the capture.
    s.tap.stop();
    let log = s.tap.log_text();
    assert!(log.contains("capture written"), "{log}");

    let dockerd_files = capture::files(&capture_dir.0, "dockerd");
    let containerd_files = capture::files(&capture_dir.0, "containerd");
    assert_eq!(dockerd_files.len(), 1, "{dockerd_files:?}");
    assert_eq!(containerd_files.len(), 1, "{containerd_files:?}");
    for f in dockerd_files.iter().chain(&containerd_files) {
        assert_private(f);
        let bad = problems(f);
        assert!(bad.trim().is_empty(), "{}: {bad}", f.display());
    }

    let requests = http_requests(&dockerd_files[0]);
    eprintln!(
        "tshark http.request (dockerd), {} requests:\n{}",
        requests.len(),
        requests.join("\n")
    );
    for want in ["/containers/create", "/attach", "/wait", "/start"] {
        assert!(
            requests.iter().any(|r| r.contains(want)),
            "no request with {want} among {requests:#?}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST ") && r.contains("/containers/create"))
    );

    let paths = grpc_paths(&containerd_files[0]);
    eprintln!(
        "tshark http2.headers.path (containerd), {} calls:\n{}",
        paths.len(),
        paths.join("\n")
    );
    for want in [
        "/containerd.services.containers.v1.Containers/Create",
        "/containerd.services.tasks.v1.Tasks/Create",
        "/containerd.services.tasks.v1.Tasks/Start",
        "/containerd.services.events.v1.Events/Subscribe",
    ] {
        assert!(paths.iter().any(|p| p == want), "no {want} among {paths:#?}");
    }
    let grpc = tshark(&containerd_files[0], &["-d", "tcp.port==50051,http2", "-Y", "grpc"]);
    assert!(grpc.lines().count() > 10, "gRPC messages decoded:\n{grpc}");
}

#[test]
fn config_takes_capture_settings_with_defaults_and_limits() {
    use runtime_tap::config::Config;
    let base = "[[intercept]]\nname = \"d\"\nlisten = \"unix:///tmp/x.sock\"\nupstream = \"unix:///tmp/y.sock\"\n";
    let c = Config::parse(base, "a.toml").unwrap();
    assert_eq!(c.intercepts[0].capture_dir, None);
    assert_eq!(c.intercepts[0].capture_max_bytes, capture::DEFAULT_MAX_BYTES);
    assert_eq!(c.intercepts[0].capture_files, capture::DEFAULT_FILES);
    let c = Config::parse(
        &format!("{base}capture_dir = \"/var/tmp/cap\"\ncapture_max_bytes = 1048576\ncapture_files = 2\n"),
        "b.toml",
    )
    .unwrap();
    assert_eq!(c.intercepts[0].capture_dir.as_deref(), Some(Path::new("/var/tmp/cap")));
    assert_eq!(
        (c.intercepts[0].capture_max_bytes, c.intercepts[0].capture_files),
        (1 << 20, 2)
    );
    assert_eq!(Config::parse(&c.to_toml(), "c.toml").unwrap(), c);
    let e = Config::parse(&format!("{base}capture_files = 0\n"), "d.toml").unwrap_err();
    assert!(e.to_string().contains("intercept[0].capture_files"), "{e}");
    let e = Config::parse(&format!("{base}capture_max_bytes = 10\n"), "e.toml").unwrap_err();
    assert!(e.to_string().contains("intercept[0].capture_max_bytes"), "{e}");
}

/// A unix HTTP/1.1 server answering one request per connection, then closing.
fn tiny_http_server(path: &Path) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            });
        }
    });
}

#[test]
fn run_capture_flag_writes_a_private_file_tshark_reads() {
    use std::io::{Read, Write};
    let dir = TempDir::new("capture-cli");
    let upstream = dir.path("up.sock");
    let listen = dir.path("tap.sock");
    let cap = dir.path("cap");
    tiny_http_server(&upstream);
    let log = dir.path("tap.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
        .args(["run", "--name", "web", "--admin", "off"])
        .arg("--listen")
        .arg(format!("unix://{}", listen.display()))
        .arg("--upstream")
        .arg(format!("unix://{}", upstream.display()))
        .arg("--capture")
        .arg(&cap)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut conn = support::connect(&listen);
    conn.write_all(b"GET /cli HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("ok"), "{answer}");
    drop(conn);
    std::thread::sleep(Duration::from_millis(200));
    support::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("capture written"), "{log}");
    assert_eq!(std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777, 0o700);
    let files = capture::files(&cap, "web");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_private(&files[0]);
    assert_eq!(http_requests(&files[0]), ["GET /cli"]);
    let responses = tshark(
        &files[0],
        &["-Y", "http.response", "-T", "fields", "-e", "http.response.code"],
    );
    assert_eq!(responses.trim(), "200");
    let bad = problems(&files[0]);
    assert!(bad.trim().is_empty(), "{bad}");
}

/// The flight recorder's file a span names (`runtime_tap.recording`), once written: the
/// writer waits for the span's trace id, so the file follows the span by a moment.
fn recording(dir: &Path, span: &support::otlp::ReceivedSpan) -> PathBuf {
    let name = match span.attributes.get("runtime_tap.recording") {
        Some(support::otlp::Val::Str(s)) => s.clone(),
        other => panic!("{} has no runtime_tap.recording: {other:?}\n{span:#?}", span.name),
    };
    assert!(name.ends_with(".pcapng") && !name.contains('/'), "{name}");
    let file = dir.join(&name);
    let until = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(Instant::now() < until, "{} was never written", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Written whole before the next look: the writer creates, writes and closes it at once.
    std::thread::sleep(Duration::from_millis(200));
    file
}

/// The packet comments tshark reads from a file.
fn comments(file: &Path) -> Vec<String> {
    tshark(file, &["-Y", "frame.comment", "-T", "fields", "-e", "frame.comment"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Flight recorder, end to end: a CRI PullImage that fails (an image on a loopback port
/// where no registry listens) and a docker call the daemon answers with a 500 each leave a
/// pcapng named on their span, whose packet comments name that span's trace and span ids,
/// and which tshark decodes as gRPC over HTTP/2 or as HTTP with the failing status.
#[test]
fn flight_recorder_dumps_failed_calls_named_on_their_spans() {
    use serde_json::json;
    use support::otlp::{OtlpReceiver, Val};
    let rt = support::runtime();
    let receiver = rt.block_on(OtlpReceiver::start());
    let dir = TempDir::new("flight");
    let flight = dir.path("flight");
    let mut s = Stack::start_custom(
        "flight",
        &format!(
            "flight_recorder = \"4MiB\"\nflight_recorder_dir = \"{}\"",
            flight.display()
        ),
        |_| format!("[export]\nendpoint = \"{}\"\n", receiver.endpoint()),
    );

    // CRI: PullImage of an image nobody serves.
    let pull = rt.block_on(async {
        let mut c = support::cri::GrpcClient::connect(&s.containerd).await;
        c.unary(
            "runtime.v1.ImageService/PullImage",
            json!({"image": {"image": "127.0.0.1:1/flight/missing:1"}}),
            &[],
        )
        .await
    });
    let pull_err = pull.expect_err("PullImage of a missing image fails");
    eprintln!("PullImage: code {} {}", pull_err.code, pull_err.message);
    let spans = receiver.wait_spans("CRI PullImage", |sp| {
        sp.iter().any(|x| x.name == "runtime.v1.ImageService/PullImage")
    });
    let span = spans
        .iter()
        .find(|x| x.name == "runtime.v1.ImageService/PullImage")
        .unwrap();
    assert_ne!(
        span.attributes.get("rpc.response.status_code"),
        Some(&Val::Str("OK".into()))
    );
    let file = recording(&flight, span);
    assert_private(&file);
    assert_eq!(std::fs::metadata(&flight).unwrap().permissions().mode() & 0o777, 0o700);
    let ids = format!("trace_id={} span_id={}", span.trace_id, span.span_id);
    let notes = comments(&file);
    eprintln!("{} comments:\n{}", file.display(), notes.join("\n"));
    assert!(
        notes.iter().any(|c| c.contains("call end") && c.contains(&ids)),
        "{ids} not in {notes:#?}"
    );
    assert!(
        notes.iter().any(|c| c.contains("call start") && c.contains(&ids)),
        "{ids} not in {notes:#?}"
    );
    assert_eq!(grpc_paths(&file), ["/runtime.v1.ImageService/PullImage"]);
    let status = tshark(
        &file,
        &[
            "-d",
            "tcp.port==50051,http2",
            "-Y",
            "http2.header.name == \"grpc-status\"",
            "-T",
            "fields",
            "-e",
            "http2.header.value",
        ],
    );
    assert!(!status.trim().is_empty(), "the trailers with grpc-status decode");
    let grpc = tshark(&file, &["-d", "tcp.port==50051,http2", "-Y", "grpc"]);
    assert!(!grpc.trim().is_empty(), "the gRPC request message decodes");
    let bad = problems(&file);
    assert!(bad.trim().is_empty(), "{}: {bad}", file.display());

    // Docker: starting a container as a user its image does not have. dockerd fails making
    // the runtime spec and answers 500 (a command that does not exist is a 400 since 20.10).
    let out = s
        .bed
        .docker(&s.docker)
        .args([
            "create",
            "--network",
            "none",
            "--user",
            "no-such-user",
            "bb:latest",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = s.bed.docker(&s.docker).args(["start", &id]).output().unwrap();
    assert!(!out.status.success(), "starting as a missing user fails");
    eprintln!("docker start: {}", String::from_utf8_lossy(&out.stderr));
    let spans = receiver.wait_spans("docker start", |sp| {
        sp.iter().any(|x| x.name == "POST /containers/{id}/start")
    });
    let span = spans.iter().find(|x| x.name == "POST /containers/{id}/start").unwrap();
    eprintln!("docker start: {:?}", span.attributes.get("http.response.status_code"));
    assert_eq!(span.attributes.get("http.response.status_code"), Some(&Val::Int(500)));
    let file = recording(&flight, span);
    assert_private(&file);
    let ids = format!("trace_id={} span_id={}", span.trace_id, span.span_id);
    let notes = comments(&file);
    eprintln!("{} comments:\n{}", file.display(), notes.join("\n"));
    assert!(
        notes.iter().any(|c| c.contains("call end") && c.contains(&ids)),
        "{ids} not in {notes:#?}"
    );
    let requests = http_requests(&file);
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST ") && r.ends_with(&format!("/containers/{id}/start"))),
        "{requests:#?}"
    );
    let codes = tshark(
        &file,
        &["-Y", "http.response", "-T", "fields", "-e", "http.response.code"],
    );
    assert!(codes.lines().any(|c| c == "500"), "{codes}");
    let bad = problems(&file);
    assert!(bad.trim().is_empty(), "{}: {bad}", file.display());

    // Counted on /metrics.
    let dumps = |ic: &str| {
        s.tap.metric(&format!(
            "runtime_tap_flight_recorder_dumps_total{{intercept=\"{ic}\"}}"
        ))
    };
    assert!(dumps("containerd") >= Some(1), "{:?}", dumps("containerd"));
    assert!(dumps("dockerd") >= Some(1), "{:?}", dumps("dockerd"));
    s.tap.stop();
}

#[test]
fn config_takes_flight_recorder_settings_with_defaults_and_limits() {
    use runtime_tap::capture::flight;
    use runtime_tap::config::Config;
    let base = "[[intercept]]\nname = \"d\"\nlisten = \"unix:///tmp/x.sock\"\nupstream = \"unix:///tmp/y.sock\"\n";
    let c = Config::parse(base, "a.toml").unwrap();
    let ic = &c.intercepts[0];
    assert_eq!(ic.flight_recorder_bytes(), None);
    assert_eq!(ic.flight_recorder_files, flight::DEFAULT_FILES);
    assert_eq!(ic.flight_recorder_per_minute, flight::DEFAULT_PER_MINUTE);
    assert_eq!(ic.flight_recorder_dir(), Path::new(flight::DEFAULT_DIR));
    let c = Config::parse(
        &format!(
            "{base}flight_recorder = \"16MiB\"\nflight_recorder_dir = \"/var/tmp/fr\"\nflight_recorder_per_minute = 2\n"
        ),
        "b.toml",
    )
    .unwrap();
    assert_eq!(c.intercepts[0].flight_recorder_bytes(), Some(16 << 20));
    assert_eq!(c.intercepts[0].flight_recorder_dir(), Path::new("/var/tmp/fr"));
    assert_eq!(Config::parse(&c.to_toml(), "c.toml").unwrap(), c);
    // The capture directory wins: one directory under one set of rules.
    let c = Config::parse(
        &format!(
            "{base}flight_recorder = \"1MiB\"\nflight_recorder_dir = \"/var/tmp/fr\"\ncapture_dir = \"/var/tmp/cap\"\n"
        ),
        "d.toml",
    )
    .unwrap();
    assert_eq!(c.intercepts[0].flight_recorder_dir(), Path::new("/var/tmp/cap"));
    for (extra, key, says) in [
        ("flight_recorder = \"16MB\"", "flight_recorder", "unknown unit"),
        ("flight_recorder = \"1KiB\"", "flight_recorder", "from 64KiB to 1GiB"),
        ("flight_recorder = \"2GiB\"", "flight_recorder", "from 64KiB to 1GiB"),
        (
            "flight_recorder = \"1MiB\"\ndecode = false",
            "flight_recorder",
            "needs decode",
        ),
        (
            "flight_recorder = \"1MiB\"\nflight_recorder_per_minute = 0",
            "flight_recorder_per_minute",
            "at least 1",
        ),
        (
            "flight_recorder = \"1MiB\"\nflight_recorder_files = 0",
            "flight_recorder_files",
            "at least 1",
        ),
    ] {
        let e = Config::parse(&format!("{base}{extra}\n"), "e.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("intercept[0].{key}")) && e.contains(says),
            "{extra}: {e}"
        );
    }
    // The flag is checked as the file is, and names itself.
    let out = Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
        .args([
            "run",
            "--name",
            "web",
            "--admin",
            "off",
            "--listen",
            "unix:///tmp/rtap-fr-l.sock",
        ])
        .args(["--upstream", "unix:///tmp/rtap-fr-u.sock", "--flight-recorder", "lots"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--flight-recorder") && err.contains("flight_recorder"),
        "{err}"
    );
}

/// Feed recorded connections (id, records) to a flight recorder as the observer would; the
/// connections stay open (their followers are returned) so that they can be dumped.
fn feed_flight(
    recorder: &runtime_tap::capture::flight::FlightRecorder,
    conns: &[(u64, Vec<Rec>)],
) -> (Vec<runtime_tap::capture::flight::FlightConn>, Instant) {
    use runtime_tap::observe::TapFollower;
    let base = Instant::now();
    let mut open = Vec::new();
    for (id, recs) in conns {
        let mut c = recorder.connection(*id);
        for r in recs {
            if let Rec::Data(dir, t, bytes) = r {
                c.event(&TapEvent::Data {
                    dir: *dir,
                    at: base + Duration::from_nanos(*t),
                    bytes: bytes.clone(),
                });
            }
        }
        open.push(c);
    }
    (open, base)
}

/// A dump of a connection whose middle the ring evicted: its pinned start and its newest
/// bytes, the gap said in comments and seen by tshark as a lost segment, the requests on both
/// sides of it still decoded; on a second connection of the same intercept with nothing
/// evicted, HTTP/2 decodes whole.
#[test]
fn flight_recorder_dump_after_eviction_keeps_the_start_and_says_what_is_lost() {
    use runtime_tap::capture::flight::{DumpCall, FlightConfig, FlightRecorder, MIN_BYTES};
    let dir = TempDir::new("flight-gap");
    let recorder = FlightRecorder::start(
        FlightConfig {
            name: "dockerd".into(),
            dir: dir.0.clone(),
            bytes: MIN_BYTES,
            files: 4,
            per_minute: 10,
        },
        Clock::new(),
    )
    .unwrap();
    // 300 KB through a 64 KiB ring: most of the POST body goes.
    let (_open, _) = feed_flight(&recorder, &[(1, load("ctr-version.jsonl")), (2, big_post())]);
    let now = std::time::SystemTime::now();
    let dump = |conn, span: u8, name: &str| {
        recorder
            .dump(DumpCall {
                conn,
                span_id: [span; 8],
                name: name.into(),
                reason: "error: test".into(),
                start: now - Duration::from_secs(60),
                end: now,
            })
            .unwrap()
    };
    let http1 = dir.path(&dump(2, 0x22, "GET /after-big"));
    let grpc = dir.path(&dump(1, 0x11, "containerd.services.version.v1.Version/Version"));
    assert!(recorder.flush(Duration::from_secs(10)));

    let notes = comments(&http1);
    eprintln!("{} comments:\n{}", http1.display(), notes.join("\n"));
    // The pinned starts of both connections share a quarter of the ring (16 KiB).
    assert!(notes[0].contains("were evicted from the ring"), "{notes:#?}");
    assert!(
        notes.iter().any(|c| c.contains("were evicted before this packet")),
        "{notes:#?}"
    );
    assert!(notes.last().unwrap().contains("span_id=2222222222222222"), "{notes:#?}");
    // The request after the gap decodes; the POST's head is there, pinned, but its body never
    // completes, so tshark's HTTP reassembly does not report it as a request.
    assert_eq!(http_requests(&http1), ["GET /v1.41/after-big"]);
    let head = tshark(&http1, &["-Y", "frame contains \"POST /v1.41/big HTTP/1.1\""]);
    assert_eq!(head.lines().count(), 1, "{head}");
    let lost = tshark(&http1, &["-Y", "tcp.analysis.lost_segment"]);
    assert_eq!(lost.lines().count(), 1, "one gap:\n{lost}");

    assert!(comments(&grpc)[0].contains("span_id=1111111111111111"));
    assert_eq!(
        grpc_paths(&grpc),
        [
            "/containerd.services.version.v1.Version/Version",
            "/containerd.services.introspection.v1.Introspection/Server"
        ]
    );
    let bad = problems(&grpc);
    assert!(bad.trim().is_empty(), "{bad}");
}
