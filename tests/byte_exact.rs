//! Byte-exactness through the real binary with the decoders attached (the relay test's
//! random bytes sniff as opaque at once, so they never reach a decoder or the rewriter): real
//! HTTP/2 (gRPC-shaped, several streams at once, bodies across many frames and flow-control
//! windows) and real HTTP/1 (keep-alive, Content-Length and chunked bodies) between library
//! clients and servers in this process, every byte recorded at both ends until EOF.
//! - Decoding on: each end receives exactly what the other sent, both ways.
//! - Propagation on: the server's bytes reach the client unchanged; the client's reach the
//!   server with exactly one `traceparent` field added per request (HTTP/2: an independent
//!   HPACK decoder sees the same lists plus it; taking the fields out gives back the client's
//!   bytes, so every body byte is the same) and nothing else.

mod support;

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::{RngCore, SeedableRng};
use support::recorded::{Recorded, connect, header_lists, literal_field, pump, undo_h1, undo_h2};
use support::*;
use tokio::net::UnixListener;

const REQUESTS: usize = 6;
/// Request body sizes, by request: empty, small, one frame, many frames and windows.
const SIZES: [usize; REQUESTS] = [0, 5, 1000, 16_385, 70_000, 400_000];

fn config(listen: &Path, upstream: &Path, propagate: bool, admin: u16) -> String {
    format!(
        "[[intercept]]\nname = \"exact\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\npropagate_context = {propagate}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[relay]\ngrace_period_secs = 2\n",
        listen.display(),
        upstream.display()
    )
}

fn random(seed: u64, len: usize) -> Bytes {
    let mut b = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut b);
    Bytes::from(b)
}

/// A gRPC-framed message (uncompressed) around `len` random bytes.
fn grpc_message(seed: u64, len: usize) -> Bytes {
    let mut m = vec![0u8];
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.extend_from_slice(&random(seed, len));
    Bytes::from(m)
}

/// What each end of one connection sent and received.
struct Ends {
    client: Recorded,
    server: Recorded,
}

/// Start the tap in front of an upstream served by `serve`, run `drive` as the client, and
/// wait until both ends have seen the other's EOF.
fn through<S, SF, D, DF>(propagate: bool, label: &str, serve: S, drive: D) -> (Ends, Tap, TempDir)
where
    S: FnOnce(tokio::io::DuplexStream) -> SF + Send + 'static,
    SF: Future<Output = ()> + Send + 'static,
    D: FnOnce(tokio::io::DuplexStream) -> DF,
    DF: Future<Output = ()>,
{
    let dir = TempDir::new(label);
    let rt = runtime();
    let upstream = rt.block_on(async { UnixListener::bind(dir.path("srv.sock")).unwrap() });
    let tap = Tap::start(
        &dir.0,
        &config(&dir.path("tap.sock"), &dir.path("srv.sock"), propagate, free_port()),
    );
    let ends = rt.block_on(async {
        let server = tokio::spawn(async move {
            let (sock, _) = upstream.accept().await.unwrap();
            let (io, recorded) = pump(sock);
            serve(io).await;
            recorded.await.unwrap()
        });
        let (io, recorded) = pump(connect(&dir.path("tap.sock")).await);
        drive(io).await;
        let client = tokio::time::timeout(Duration::from_secs(30), recorded)
            .await
            .expect("client end sees EOF")
            .unwrap();
        let server = tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("server end sees EOF")
            .unwrap();
        Ends { client, server }
    });
    (ends, tap, dir)
}

/// A metric once it reaches `want` (the observer runs beside the relay and may lag).
fn wait_metric(tap: &Tap, series: &str, want: u64) -> u64 {
    let start = std::time::Instant::now();
    loop {
        let v = tap.metric(series).unwrap_or(0);
        if v >= want || start.elapsed() > Duration::from_secs(10) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_same(what: &str, sent: &[u8], received: &[u8]) {
    assert!(!sent.is_empty(), "{what}: nothing sent");
    assert_eq!(
        (received.len(), sha256(received)),
        (sent.len(), sha256(sent)),
        "{what}: bytes received differ from bytes sent"
    );
}

// ---- HTTP/2 (gRPC-shaped) ----

/// Answers every request like a gRPC server: headers, a message derived from the request's
/// size, `grpc-status: 0` trailers; until the client goes away.
async fn grpc_server(io: tokio::io::DuplexStream) {
    let mut conn = h2::server::handshake(io).await.unwrap();
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        tokio::spawn(async move {
            let mut body = req.into_body();
            let mut len = 0;
            while let Some(Ok(d)) = body.data().await {
                len += d.len();
                let _ = body.flow_control().release_capacity(d.len());
            }
            let resp = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let mut send = respond.send_response(resp, false).unwrap();
            send.send_data(grpc_message(len as u64, len / 2 + 3), false).unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            send.send_trailers(trailers).unwrap();
        });
    }
}

/// Sends the requests of [`SIZES`] at once, reads every response to its trailers, then
/// closes the connection.
async fn grpc_client(io: tokio::io::DuplexStream) {
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let calls: Vec<_> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut client = client.ready().await.unwrap();
                let req = http::Request::builder()
                    .method("POST")
                    .uri("http://exact/runtime.v1.RuntimeService/Version")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .header("x-seq", i.to_string())
                    .body(())
                    .unwrap();
                let (resp, mut send) = client.send_request(req, false).unwrap();
                send.send_data(grpc_message(i as u64, size), true).unwrap();
                let mut body = resp.await.unwrap().into_body();
                while let Some(d) = body.data().await {
                    let d = d.unwrap();
                    let _ = body.flow_control().release_capacity(d.len());
                }
                let trailers = body.trailers().await.unwrap().expect("trailers");
                assert_eq!(trailers["grpc-status"], "0");
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
}

#[test]
fn http2_bytes_are_exact_with_decoding_on() {
    let (ends, tap, _dir) = through(false, "exact-h2", grpc_server, grpc_client);
    assert_same("client to server", &ends.client.sent, &ends.server.received);
    assert_same("server to client", &ends.server.sent, &ends.client.received);
    // The bytes went through the HTTP/2 decoder, not around it.
    let series = "runtime_tap_protocols_sniffed_total{intercept=\"exact\",protocol=\"http2\"}";
    assert_eq!(wait_metric(&tap, series, 1), 1);
    assert_eq!(
        wait_metric(&tap, "runtime_tap_calls_total", REQUESTS as u64),
        REQUESTS as u64
    );
}

#[test]
fn http2_propagation_adds_exactly_one_traceparent_per_request() {
    let (ends, tap, _dir) = through(true, "exact-h2-prop", grpc_server, grpc_client);
    assert_same("server to client", &ends.server.sent, &ends.client.received);
    let sent = header_lists(&ends.client.sent);
    let received = header_lists(&ends.server.received);
    assert_eq!(sent.len(), REQUESTS, "one header block per request");
    assert_eq!(received.len(), sent.len());
    let mut fields = Vec::new();
    for (s, r) in sent.iter().zip(&received) {
        let (last, rest) = r.split_last().expect("a header list");
        assert_eq!(rest, &s[..], "the list the client sent, then one field");
        assert_eq!(last.0, "traceparent");
        assert_eq!(last.1.len(), 55, "{}", last.1);
        fields.push(literal_field("traceparent", &last.1));
    }
    assert_same(
        "client to server, traceparent fields taken out",
        &ends.client.sent,
        &undo_h2(&ends.server.received, &fields),
    );
    assert_eq!(
        tap.metric("runtime_tap_propagation_injected_total{intercept=\"exact\"}"),
        Some(REQUESTS as u64)
    );
}

// ---- HTTP/1 ----

/// A body sent as chunks of unknown total length: hyper frames it chunked.
struct Chunked(VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

type Body = http_body_util::Either<Full<Bytes>, Chunked>;

/// Answers each request with a body derived from the request's size.
async fn http1_server(io: tokio::io::DuplexStream) {
    let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        let body = random(len as u64, len / 2 + 7);
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// One keep-alive connection: a GET, then POSTs of [`SIZES`], alternately with
/// Content-Length and chunked; then closes.
async fn http1_client(io: tokio::io::DuplexStream) {
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let get = http::Request::get("/v1.41/containers/json")
        .header("host", "docker")
        .body(Body::Left(Full::new(Bytes::new())))
        .unwrap();
    let resp = send.send_request(get).await.unwrap();
    resp.into_body().collect().await.unwrap();
    for (i, &size) in SIZES.iter().enumerate() {
        let data = random(i as u64, size);
        let body = if i % 2 == 0 {
            Body::Left(Full::new(data))
        } else {
            let pieces = data.chunks(7_000).map(Bytes::copy_from_slice).collect();
            Body::Right(Chunked(pieces))
        };
        let req = http::Request::post(format!("/v1.41/containers/c{i}/start"))
            .header("host", "docker")
            .header("x-seq", i.to_string())
            .body(body)
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    drop(send);
    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
}

#[test]
fn http1_bytes_are_exact_with_decoding_on() {
    let (ends, tap, _dir) = through(false, "exact-h1", http1_server, http1_client);
    assert_same("client to server", &ends.client.sent, &ends.server.received);
    assert_same("server to client", &ends.server.sent, &ends.client.received);
    let series = "runtime_tap_protocols_sniffed_total{intercept=\"exact\",protocol=\"http1\"}";
    assert_eq!(wait_metric(&tap, series, 1), 1);
    let calls = REQUESTS as u64 + 1;
    assert_eq!(wait_metric(&tap, "runtime_tap_calls_total", calls), calls);
}

#[test]
fn http1_propagation_adds_exactly_one_traceparent_per_request() {
    let (ends, tap, _dir) = through(true, "exact-h1-prop", http1_server, http1_client);
    assert_same("server to client", &ends.server.sent, &ends.client.received);
    let text = String::from_utf8_lossy(&ends.server.received);
    let lines: Vec<String> = text
        .split_inclusive("\r\n")
        .filter(|l| l.starts_with("traceparent: "))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), REQUESTS + 1, "one traceparent per request");
    for l in &lines {
        assert_eq!(l.len(), "traceparent: ".len() + 55 + 2, "{l:?}");
    }
    assert_same(
        "client to server, traceparent lines taken out",
        &ends.client.sent,
        &undo_h1(&ends.server.received, &lines),
    );
    assert_eq!(
        tap.metric("runtime_tap_propagation_injected_total{intercept=\"exact\"}"),
        Some(REQUESTS as u64 + 1)
    );
}
