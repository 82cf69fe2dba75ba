//! Opt-in trace context propagation end to end, with the real binary: test servers (an h2
//! gRPC-style server and a plain HTTP/1 server) receive a `traceparent` naming the span
//! runtime-tap exported for the call; a request that carries one is forwarded unchanged;
//! with propagation off the bytes are identical; dockerd and containerd still work with it on.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::otlp::{OtlpReceiver, ReceivedSpan};
use support::stack::Stack;
use support::*;

/// A config with one intercept, propagation as given, exporting to `endpoint`.
fn config(name: &str, listen: &Path, upstream: &Path, propagate: bool, endpoint: &str) -> String {
    format!(
        "[[intercept]]\nname = \"{name}\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\npropagate_context = {propagate}\n\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n\n[relay]\ngrace_period_secs = 2\n\n[export]\nendpoint = \"{endpoint}\"\n",
        listen.display(),
        upstream.display(),
        free_port()
    )
}

/// (trace id, span id) of a version-00 traceparent.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[3], "01");
    (parts[1].to_string(), parts[2].to_string())
}

fn span_named_by<'a>(spans: &'a [ReceivedSpan], traceparent: &str) -> Option<&'a ReceivedSpan> {
    let (trace, span) = ids(traceparent);
    spans.iter().find(|s| s.span_id == span && s.trace_id == trace)
}

const GIVEN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// An h2 server answering every request like a gRPC server (200, then grpc-status 0),
/// recording each request's `traceparent` and `x-seq` headers.
/// (`x-seq`, `traceparent`) of each request a test server received.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn h2_server(path: &Path, seen: Seen) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let header = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string());
                    seen.lock()
                        .unwrap()
                        .push((header("x-seq").unwrap_or_default(), header("traceparent")));
                    let resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut send = respond.send_response(resp, false).unwrap();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let _ = send.send_trailers(trailers);
                }
            });
        }
    });
}

#[test]
fn h2_requests_carry_the_span_runtime_tap_exported() {
    let dir = TempDir::new("prop-h2");
    let rt = runtime();
    let receiver = rt.block_on(OtlpReceiver::start());
    let seen = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(h2_server(&dir.path("srv.sock"), Arc::clone(&seen)));
    let tap = Tap::start(
        &dir.0,
        &config(
            "grpcsrv",
            &dir.path("tap.sock"),
            &dir.path("srv.sock"),
            true,
            receiver.endpoint(),
        ),
    );
    rt.block_on(async {
        let sock = tokio::net::UnixStream::connect(dir.path("tap.sock")).await.unwrap();
        let (client, conn) = h2::client::handshake(sock).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        // Same headers each time: the client's encoder refers to its dynamic table, so the
        // later requests only decode right if neither table moved.
        for seq in 0..5 {
            let mut client = client.clone().ready().await.unwrap();
            let mut req = http::Request::builder()
                .method("POST")
                .uri("http://tap/test.Echo/Call")
                .header("content-type", "application/grpc")
                .header("x-seq", seq.to_string())
                .header("x-common", "the same value each time");
            if seq == 3 {
                req = req.header("traceparent", GIVEN);
            }
            let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            while let Some(d) = body.data().await {
                d.unwrap();
            }
            let trailers = body.trailers().await.unwrap().expect("trailers");
            assert_eq!(trailers["grpc-status"], "0");
        }
    });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    let by_seq: HashMap<String, Option<String>> = seen.into_iter().collect();
    assert_eq!(
        by_seq["3"].as_deref(),
        Some(GIVEN),
        "a given traceparent passes unchanged"
    );
    let injected: Vec<String> = ["0", "1", "2", "4"]
        .iter()
        .map(|s| by_seq[*s].clone().expect("traceparent added"))
        .collect();
    let spans = rt.block_on(receiver.wait_for(
        |spans| injected.iter().all(|tp| span_named_by(spans, tp).is_some()) && spans.len() >= 5,
        support::otlp::SPAN_WAIT,
    ));
    for tp in &injected {
        let span = span_named_by(&spans, tp).unwrap();
        assert_eq!(span.service, "grpcsrv");
        assert_eq!(span.name, "test.Echo/Call");
        assert!(span.parent_span_id.is_empty(), "a root: nothing else was open");
    }
    let (given_trace, given_span) = ids(GIVEN);
    let child = spans
        .iter()
        .find(|s| s.trace_id == given_trace)
        .expect("the call with a given traceparent");
    assert_eq!(
        child.parent_span_id, given_span,
        "a child of the remote span, as without propagation"
    );
    assert_eq!(
        tap.metric("runtime_tap_propagation_injected_total{intercept=\"grpcsrv\"}"),
        Some(4)
    );
    assert_eq!(
        tap.metric("runtime_tap_propagation_give_ups_total{intercept=\"grpcsrv\"}"),
        Some(0)
    );
}

/// A plain HTTP/1.1 server: reads request heads (and Content-Length bodies), records each
/// head, answers `200 ok`.
fn h1_server(path: &Path, heads: Arc<Mutex<Vec<String>>>) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let heads = Arc::clone(&heads);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        buf.drain(..end + 4 + len);
                        heads.lock().unwrap().push(head);
                        if conn
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
}

#[test]
fn h1_requests_carry_the_span_runtime_tap_exported() {
    let dir = TempDir::new("prop-h1");
    let rt = runtime();
    let receiver = rt.block_on(OtlpReceiver::start());
    let heads = Arc::new(Mutex::new(Vec::new()));
    h1_server(&dir.path("srv.sock"), Arc::clone(&heads));
    let tap = Tap::start(
        &dir.0,
        &config(
            "h1srv",
            &dir.path("tap.sock"),
            &dir.path("srv.sock"),
            true,
            receiver.endpoint(),
        ),
    );
    let mut s = connect(&dir.path("tap.sock"));
    // Pipelined, with a body that looks like a request, and one with its own traceparent.
    let body = "GET /inside-a-body HTTP/1.1\r\n\r\n";
    let requests = format!(
        "POST /v1.41/build HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}\
         GET /_ping HTTP/1.1\r\nHost: x\r\ntraceparent: {GIVEN}\r\n\r\n\
         GET /v1.41/info HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    s.write_all(requests.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while got.windows(2).filter(|w| w == b"ok").count() < 3 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    drop(s);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3);
    let traceparent = |head: &str| {
        head.lines()
            .filter_map(|l| l.strip_prefix("traceparent: "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Exactly one line added, right after the request line; the rest as sent.
    let first = traceparent(&heads[0]);
    assert_eq!(first.len(), 1);
    assert_eq!(
        heads[0],
        format!(
            "POST /v1.41/build HTTP/1.1\r\ntraceparent: {}\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            first[0],
            body.len()
        )
    );
    assert_eq!(traceparent(&heads[1]), vec![GIVEN.to_string()], "left as it was");
    assert_eq!(
        heads[1],
        format!("GET /_ping HTTP/1.1\r\nHost: x\r\ntraceparent: {GIVEN}\r\n\r\n")
    );
    let third = traceparent(&heads[2]);
    assert_eq!(third.len(), 1);
    let spans = rt.block_on(receiver.wait_for(
        |spans| span_named_by(spans, &first[0]).is_some() && span_named_by(spans, &third[0]).is_some(),
        support::otlp::SPAN_WAIT,
    ));
    assert_eq!(span_named_by(&spans, &first[0]).unwrap().name, "POST /build");
    assert_eq!(span_named_by(&spans, &third[0]).unwrap().name, "GET /info");
    assert_eq!(
        tap.metric("runtime_tap_propagation_injected_total{intercept=\"h1srv\"}"),
        Some(2)
    );
}

/// What the echo server sends back for `data` written through an intercept.
fn echoed(tap_sock: &Path, data: &[u8]) -> Vec<u8> {
    let mut s = connect(tap_sock);
    let mut w = s.try_clone().unwrap();
    let data = data.to_vec();
    // Written beside the reads: the echo comes back while we write.
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

#[test]
fn bytes_are_identical_with_propagation_off_and_only_the_header_differs_with_it_on() {
    let dir = TempDir::new("prop-echo");
    echo_server(&dir.path("echo.sock"));
    let off = TempDir::new("prop-echo-off");
    let on = TempDir::new("prop-echo-on");
    let conf = |d: &TempDir, propagate: bool| {
        format!(
            "[[intercept]]\nname = \"echo\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\npropagate_context = {propagate}\n\n[admin]\nlisten = \"off\"\n",
            d.path("tap.sock").display(),
            dir.path("echo.sock").display()
        )
    };
    let _off = Tap::start(&off.0, &conf(&off, false));
    let _on = Tap::start(&on.0, &conf(&on, true));
    let http = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let mut random = vec![0u8; 1 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
    random[0] = 0; // not a method, not a preface
    for data in [&http, &h2, &random] {
        assert!(
            echoed(&off.path("tap.sock"), data) == *data,
            "propagation off: identical"
        );
    }
    // On: opaque and the bare HTTP/2 connection start pass unchanged...
    assert!(echoed(&on.path("tap.sock"), &random) == random);
    assert_eq!(echoed(&on.path("tap.sock"), &h2), h2);
    // ... and an HTTP/1 stream differs by one header line per request head.
    let got = String::from_utf8(echoed(&on.path("tap.sock"), &http)).unwrap();
    let lines: Vec<&str> = got.lines().filter(|l| l.starts_with("traceparent: 00-")).collect();
    assert_eq!(lines.len(), 2);
    let mut back = got.clone();
    for l in lines {
        back = back.replacen(&format!("{l}\r\n"), "", 1);
    }
    assert_eq!(back.as_bytes(), &http[..]);
}

#[test]
fn docker_and_containerd_work_with_propagation_on() {
    let rt = runtime();
    let receiver = rt.block_on(OtlpReceiver::start());
    let stack = Stack::start_with(
        "prop",
        &format!("[export]\nendpoint = \"{}\"\n", receiver.endpoint()),
        "propagate_context = true",
    );
    let out = stack
        .bed
        .docker(&stack.docker)
        .args(["run", "--rm", "bb:latest", "echo", "hi"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi\n", "output unchanged");
    let out = stack
        .bed
        .ctr(&stack.containerd)
        .args(["--namespace", "moby", "containers", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ctr: {}", String::from_utf8_lossy(&out.stderr));
    let out = stack.bed.ctr(&stack.containerd).args(["version"]).output().unwrap();
    assert!(
        out.status.success(),
        "ctr version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for intercept in ["dockerd", "containerd"] {
        let injected = stack
            .tap
            .metric(&format!(
                "runtime_tap_propagation_injected_total{{intercept=\"{intercept}\"}}"
            ))
            .unwrap_or(0);
        assert!(injected > 0, "{intercept}: requests carried a traceparent");
        assert_eq!(
            stack.tap.metric(&format!(
                "runtime_tap_propagation_give_ups_total{{intercept=\"{intercept}\"}}"
            )),
            Some(0),
            "{intercept}"
        );
    }
    // The start's spans: dockerd's start is a root of its own trace; containerd's
    // Tasks/Start (its trace fixed when its request passed) links to it as the entity parent.
    let spans = rt.block_on(receiver.wait_for(
        |spans| {
            spans.iter().any(|s| s.name == "POST /containers/{id}/start")
                && spans
                    .iter()
                    .any(|s| s.name == "containerd.services.tasks.v1.Tasks/Start")
        },
        support::otlp::SPAN_WAIT,
    ));
    let start = spans.iter().find(|s| s.name == "POST /containers/{id}/start").unwrap();
    let task = spans
        .iter()
        .find(|s| s.name == "containerd.services.tasks.v1.Tasks/Start")
        .unwrap();
    assert!(start.parent_span_id.is_empty());
    let remote = match task.attributes.get("runtime_tap.remote_parent") {
        Some(support::otlp::Val::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    match stack.bed.generation() {
        // dockerd 20.10 sends no context: runtime-tap adds one naming its Tasks/Start span,
        // whose trace is then its own, linked to the start.
        runtime_tap::bed::Generation::Bookworm => {
            assert_eq!(remote, None);
            assert!(task.parent_span_id.is_empty(), "a propagated call's trace is its own");
            assert!(
                task.links
                    .iter()
                    .any(|l| l.span_id == start.span_id && l.trace_id == start.trace_id),
                "Tasks/Start links to the docker start: {:?}",
                task.links
            );
        }
        // dockerd 26 sends a context on every containerd call, dockerd 28 passes on the one
        // runtime-tap gave its start: the request is forwarded as it came, and the start
        // runtime-tap observed is its parent (README "Remote trace context").
        runtime_tap::bed::Generation::Trixie | runtime_tap::bed::Generation::Sid => {
            assert!(
                matches!(remote, Some("confirmed" | "replaced")),
                "{remote:?} ({})",
                stack.bed.versions()
            );
            assert_eq!(task.parent_span_id, start.span_id);
            assert_eq!(task.trace_id, start.trace_id);
        }
    }
}

#[test]
fn a_head_that_never_completes_is_sent_as_it_came_after_the_hold_time() {
    let dir = TempDir::new("prop-hold");
    echo_server(&dir.path("echo.sock"));
    let conf = format!(
        "[[intercept]]\nname = \"echo\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\npropagate_context = true\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
        dir.path("tap.sock").display(),
        dir.path("echo.sock").display(),
        free_port()
    );
    let tap = Tap::start(&dir.0, &conf);
    let mut s = connect(&dir.path("tap.sock"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A client that waits for an answer in the middle of a head (not HTTP we can follow).
    let partial = b"GET / HTTP/1.1\r\nHost: x\r\n";
    s.write_all(partial).unwrap();
    let started = std::time::Instant::now();
    let mut got = vec![0u8; partial.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[..], partial, "released unchanged");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "held about a second first"
    );
    // From then on the connection passes unchanged.
    s.write_all(b"\r\nGET /b HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = vec![0u8; 21];
    s.read_exact(&mut rest).unwrap();
    assert_eq!(&rest[..], b"\r\nGET /b HTTP/1.1\r\n\r\n");
    assert_eq!(
        tap.metric("runtime_tap_propagation_give_ups_total{intercept=\"echo\"}"),
        Some(1)
    );
}
