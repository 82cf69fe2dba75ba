//! HTTP/1 decoder tests: the recorded docker CLI connections (whole, cut at every byte,
//! byte by byte) and crafted exchanges for each framing rule and limit.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::schema::docker;
use crate::wire::testutil::{Segment, capture_files, capture_path, load_capture};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn run_segments(segments: &[(Direction, Segment)]) -> Vec<H1Event> {
    let mut d = H1Decoder::new(Limits::default());
    let mut out = Vec::new();
    for (dir, seg) in segments {
        match seg {
            Segment::Data(b) => d.feed_bytes(*dir, Bytes::copy_from_slice(b), &mut out),
            Segment::Eof => d.eof(*dir, &mut out),
        }
    }
    out
}

/// Adjacent body events of one exchange merged, so that cuts do not matter.
fn normalize(events: Vec<H1Event>) -> Vec<H1Event> {
    let mut out: Vec<H1Event> = Vec::with_capacity(events.len());
    for ev in events {
        match (out.last_mut(), &ev) {
            (Some(H1Event::RequestBody { id: a, data: acc }), H1Event::RequestBody { id: b, data })
            | (Some(H1Event::ResponseBody { id: a, data: acc }), H1Event::ResponseBody { id: b, data })
                if a == b =>
            {
                let mut v = acc.to_vec();
                v.extend_from_slice(data);
                *acc = Bytes::from(v);
            }
            _ => out.push(ev),
        }
    }
    out
}

/// What one exchange looked like, from the events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Exchange {
    method: String,
    target: String,
    version: u8,
    informational: Vec<u16>,
    status: Option<u16>,
    req_body: Vec<u8>,
    resp_body: Vec<u8>,
    req_end: Option<u64>,
    resp_end: Option<u64>,
    req_trailers: Option<Headers>,
    resp_trailers: Option<Headers>,
    upgraded: bool,
}

#[derive(Debug, Default)]
struct Summary {
    exchanges: BTreeMap<ExchangeId, Exchange>,
    closed: Option<([u64; 2], Vec<ExchangeId>)>,
    anomalies: Vec<Anomaly>,
    gave_up: Option<GiveUp>,
}

fn summarize(events: &[H1Event]) -> Summary {
    let mut s = Summary::default();
    for ev in events {
        assert!(s.gave_up.is_none(), "event after GaveUp: {ev:?}");
        assert!(s.closed.is_none(), "event after Closed: {ev:?}");
        match ev {
            H1Event::RequestHead {
                id,
                method,
                target,
                version,
                ..
            } => {
                let prev = s.exchanges.insert(
                    *id,
                    Exchange {
                        method: method.clone(),
                        target: target.clone(),
                        version: *version,
                        ..Exchange::default()
                    },
                );
                assert!(prev.is_none(), "two heads for {id}");
            }
            H1Event::RequestBody { id, data } => {
                assert!(!data.is_empty());
                let x = s.exchanges.get_mut(id).expect("body after head");
                assert!(x.req_end.is_none());
                x.req_body.extend_from_slice(data);
            }
            H1Event::RequestEnd { id, body_len, trailers } => {
                let x = s.exchanges.get_mut(id).expect("end after head");
                assert_eq!(x.req_body.len() as u64, *body_len);
                x.req_end = Some(*body_len);
                x.req_trailers = trailers.clone();
            }
            H1Event::ResponseHead {
                id,
                status,
                informational,
                ..
            } => {
                let x = s.exchanges.get_mut(id).expect("response after request");
                assert!(x.status.is_none());
                if *informational {
                    x.informational.push(*status);
                } else {
                    x.status = Some(*status);
                }
            }
            H1Event::ResponseBody { id, data } => {
                assert!(!data.is_empty());
                let x = s.exchanges.get_mut(id).expect("body after head");
                assert!(x.status.is_some() && x.resp_end.is_none() && !x.upgraded);
                x.resp_body.extend_from_slice(data);
            }
            H1Event::ResponseEnd { id, body_len, trailers } => {
                let x = s.exchanges.get_mut(id).expect("end after head");
                assert!(x.status.is_some());
                assert_eq!(x.resp_body.len() as u64, *body_len);
                x.resp_end = Some(*body_len);
                x.resp_trailers = trailers.clone();
            }
            H1Event::Upgraded { id } => {
                let x = s.exchanges.get_mut(id).expect("upgrade after head");
                assert!(x.status.is_some());
                x.upgraded = true;
            }
            H1Event::Closed { upgraded_bytes, open } => s.closed = Some((*upgraded_bytes, open.clone())),
            H1Event::Anomaly(a) => s.anomalies.push(*a),
            H1Event::GaveUp(g) => s.gave_up = Some(*g),
        }
    }
    s
}

fn feed_all(d: &mut H1Decoder, steps: &[(Direction, &[u8])]) -> Vec<H1Event> {
    let mut out = Vec::new();
    for (dir, b) in steps {
        if b.is_empty() {
            d.eof(*dir, &mut out);
        } else {
            d.feed(*dir, b, &mut out);
        }
    }
    out
}

/// Feeds crafted steps (an empty slice means that side closed).
fn run(steps: &[(Direction, &[u8])]) -> Summary {
    let mut d = H1Decoder::new(Limits::default());
    summarize(&feed_all(&mut d, steps))
}

// ---------------------------------------------------------------------------------------
// Recorded docker CLI connections

struct Expect {
    file: &'static str,
    /// (method, target, status) per exchange, in order.
    exchanges: &'static [(&'static str, &'static str, u16)],
    /// The exchange that switched, with the byte counts after the switch.
    upgraded: Option<(ExchangeId, [u64; 2])>,
    /// Both sides closed in the capture.
    closed: bool,
}

const C_E64: &str = "e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb";

const EXPECTED: &[Expect] = &[
    Expect {
        file: "01-version.jsonl",
        exchanges: &[("HEAD", "/_ping", 200), ("GET", "/v1.41/version", 200)],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "02-run-create-wait.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            ("POST", "/v1.41/containers/create", 201),
            (
                "POST",
                "/v1.41/containers/e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb/wait?condition=removed",
                200,
            ),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "03-run-attach.jsonl",
        exchanges: &[(
            "POST",
            "/v1.41/containers/e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb/attach?stderr=1&stdout=1&stream=1",
            101,
        )],
        upgraded: Some((0, [0, 11])),
        closed: true,
    },
    Expect {
        file: "04-run-start.jsonl",
        exchanges: &[(
            "POST",
            "/v1.41/containers/e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb/start",
            204,
        )],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "05-create.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            ("POST", "/v1.41/containers/create?name=fixture-c1", 201),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "06-start.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            (
                "POST",
                "/v1.41/containers/3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259/start",
                204,
            ),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "07-exec-create.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            (
                "GET",
                "/v1.41/containers/3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259/json",
                200,
            ),
            (
                "POST",
                "/v1.41/containers/3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259/exec",
                201,
            ),
            (
                "GET",
                "/v1.41/exec/bf7cac96a972345dc1c1c6ecf21b80724df325d497df68f1cce2d302ea4f56ff/json",
                200,
            ),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "08-exec-start.jsonl",
        exchanges: &[(
            "POST",
            "/v1.41/exec/bf7cac96a972345dc1c1c6ecf21b80724df325d497df68f1cce2d302ea4f56ff/start",
            101,
        )],
        upgraded: Some((0, [0, 18])),
        closed: true,
    },
    Expect {
        file: "09-stop.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            (
                "POST",
                "/v1.41/containers/3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259/stop?t=1",
                204,
            ),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "10-rm.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            (
                "DELETE",
                "/v1.41/containers/3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259",
                204,
            ),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "11-inspect-missing.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            ("GET", "/v1.41/containers/nosuch-fixture/json", 404),
            ("GET", "/v1.41/images/nosuch-fixture/json", 404),
            ("GET", "/v1.41/networks/nosuch-fixture", 404),
            ("GET", "/v1.41/volumes/nosuch-fixture", 404),
            ("GET", "/v1.41/info", 200),
            ("GET", "/v1.41/plugins/nosuch-fixture/json", 404),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "12-logs-create-wait.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            ("POST", "/v1.41/containers/create", 201),
            (
                "POST",
                "/v1.41/containers/88b20260f5f2fdb6e3243adadae96b2aadb66a9a4c92ec4785faf6c701ad77e3/wait?condition=next-exit",
                200,
            ),
        ],
        upgraded: None,
        // The server side was still open when the recording stopped.
        closed: false,
    },
    Expect {
        file: "13-logs-start.jsonl",
        exchanges: &[(
            "POST",
            "/v1.41/containers/88b20260f5f2fdb6e3243adadae96b2aadb66a9a4c92ec4785faf6c701ad77e3/start",
            204,
        )],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "14-logs.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            (
                "GET",
                "/v1.41/containers/88b20260f5f2fdb6e3243adadae96b2aadb66a9a4c92ec4785faf6c701ad77e3/json",
                200,
            ),
            (
                "GET",
                "/v1.41/containers/88b20260f5f2fdb6e3243adadae96b2aadb66a9a4c92ec4785faf6c701ad77e3/logs?stderr=1&stdout=1&tail=all",
                200,
            ),
        ],
        upgraded: None,
        closed: true,
    },
    Expect {
        file: "15-rm-force.jsonl",
        exchanges: &[
            ("HEAD", "/_ping", 200),
            (
                "DELETE",
                "/v1.41/containers/88b20260f5f2fdb6e3243adadae96b2aadb66a9a4c92ec4785faf6c701ad77e3?force=1",
                204,
            ),
        ],
        upgraded: None,
        closed: true,
    },
];

fn docker_capture(file: &str) -> Vec<(Direction, Segment)> {
    load_capture(&capture_path(&format!("docker-cli/{file}")))
}

#[test]
fn every_docker_capture_has_an_expectation() {
    let files: Vec<String> = capture_files("docker-cli")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<&str> = EXPECTED.iter().map(|e| e.file).collect();
    assert_eq!(files, expected);
}

#[test]
fn docker_captures_decode_to_the_expected_exchanges() {
    for e in EXPECTED {
        let events = run_segments(&docker_capture(e.file));
        let s = summarize(&events);
        assert_eq!(s.gave_up, None, "{}", e.file);
        assert!(s.anomalies.is_empty(), "{}: {:?}", e.file, s.anomalies);
        let got: Vec<(&str, &str, u16)> = s
            .exchanges
            .values()
            .map(|x| (x.method.as_str(), x.target.as_str(), x.status.unwrap_or(0)))
            .collect();
        assert_eq!(got, e.exchanges, "{}", e.file);
        for (id, x) in &s.exchanges {
            assert_eq!(x.version, 1);
            assert!(x.req_end.is_some(), "{} #{id} request not ended", e.file);
            let upgraded = e.upgraded.map(|(u, _)| u) == Some(*id);
            assert_eq!(x.upgraded, upgraded, "{} #{id}", e.file);
            assert_eq!(x.resp_end.is_some(), !upgraded, "{} #{id}", e.file);
            // Each exchange has a route in the docker table.
            let path = x.target.split('?').next().unwrap();
            assert!(
                docker::match_route(&x.method, path).is_some(),
                "{} {} has no route",
                x.method,
                x.target
            );
        }
        match (&s.closed, e.closed) {
            (Some((bytes, open)), true) => {
                assert!(open.is_empty(), "{}: open {open:?}", e.file);
                assert_eq!(*bytes, e.upgraded.map_or([0, 0], |(_, b)| b), "{}", e.file);
            }
            (None, false) => {}
            (c, _) => panic!("{}: closed {c:?}", e.file),
        }
    }
}

#[test]
fn docker_capture_details() {
    // 01: version body.
    let s = summarize(&run_segments(&docker_capture("01-version.jsonl")));
    assert_eq!(s.exchanges[&1].resp_body.len(), 792);
    assert!(s.exchanges[&1].resp_body.starts_with(b"{\"Platform\""));
    assert_eq!(docker::span_name("HEAD", &s.exchanges[&0].target), "HEAD /_ping");
    assert_eq!(docker::span_name("GET", &s.exchanges[&1].target), "GET /version");

    // 02: create body, then the chunked wait answer on the same keep-alive connection.
    let s = summarize(&run_segments(&docker_capture("02-run-create-wait.jsonl")));
    let create = &s.exchanges[&1];
    assert_eq!(create.req_body.len(), 1474);
    assert!(create.resp_body.starts_with(b"{\"Id\":\"e64c5f72"));
    let wait = &s.exchanges[&2];
    assert!(wait.target.contains(C_E64));
    assert_eq!(wait.resp_body, b"{\"Error\":null,\"StatusCode\":0}\n");
    assert_eq!(wait.resp_trailers, None);

    // 08: exec start carries a body before the switch.
    let s = summarize(&run_segments(&docker_capture("08-exec-start.jsonl")));
    assert_eq!(s.exchanges[&0].req_body, b"{\"Detach\":false,\"Tty\":false}\n");

    // 11: 404 bodies carry the daemon's message.
    let s = summarize(&run_segments(&docker_capture("11-inspect-missing.jsonl")));
    for (id, x) in &s.exchanges {
        if x.status == Some(404) {
            assert!(x.resp_body.starts_with(b"{\"message\":"), "#{id}");
        }
    }
    assert_eq!(
        s.exchanges[&1].resp_body,
        b"{\"message\":\"No such container: nosuch-fixture\"}\n"
    );

    // 12: the wait answer completes though the client closed first.
    let s = summarize(&run_segments(&docker_capture("12-logs-create-wait.jsonl")));
    assert_eq!(
        s.exchanges[&2].resp_body,
        b"{\"Error\":{\"Message\":\"context canceled\"},\"StatusCode\":-1}\n"
    );

    // 14: logs is a chunked 200 with frame headers, not a hijack.
    let s = summarize(&run_segments(&docker_capture("14-logs.jsonl")));
    let logs = &s.exchanges[&2];
    assert!(!logs.upgraded);
    assert_eq!(logs.resp_body, b"\x01\0\0\0\0\0\0\x04one\n\x01\0\0\0\0\0\0\x04two\n");
    assert_eq!(logs.resp_end, Some(24));
}

/// The capture cut into pieces at the given global byte offsets.
fn cut(segments: &[(Direction, Segment)], cuts: &[usize]) -> Vec<(Direction, Segment)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (dir, seg) in segments {
        match seg {
            Segment::Eof => out.push((*dir, Segment::Eof)),
            Segment::Data(b) => {
                let mut start = 0;
                for &c in cuts {
                    if c > offset + start && c < offset + b.len() {
                        out.push((*dir, Segment::Data(b[start..c - offset].to_vec())));
                        start = c - offset;
                    }
                }
                out.push((*dir, Segment::Data(b[start..].to_vec())));
                offset += b.len();
            }
        }
    }
    out
}

fn total_len(segments: &[(Direction, Segment)]) -> usize {
    segments
        .iter()
        .map(|(_, s)| match s {
            Segment::Data(b) => b.len(),
            Segment::Eof => 0,
        })
        .sum()
}

#[test]
fn docker_captures_cut_at_every_offset_decode_the_same() {
    for e in EXPECTED {
        let segments = docker_capture(e.file);
        let want = normalize(run_segments(&segments));
        for at in 0..=total_len(&segments) {
            let got = normalize(run_segments(&cut(&segments, &[at])));
            assert_eq!(got, want, "{} cut at {at}", e.file);
        }
    }
}

#[test]
fn docker_captures_byte_by_byte_decode_the_same() {
    for e in EXPECTED {
        let segments = docker_capture(e.file);
        let want = normalize(run_segments(&segments));
        let every: Vec<usize> = (0..total_len(&segments)).collect();
        let got = normalize(run_segments(&cut(&segments, &every)));
        assert_eq!(got, want, "{} byte by byte", e.file);
    }
}

#[test]
fn feed_and_feed_bytes_agree() {
    for e in EXPECTED {
        let segments = docker_capture(e.file);
        let mut d = H1Decoder::new(Limits::default());
        let mut out = Vec::new();
        for (dir, seg) in &segments {
            match seg {
                Segment::Data(b) => d.feed(*dir, b, &mut out),
                Segment::Eof => d.eof(*dir, &mut out),
            }
        }
        assert_eq!(out, run_segments(&segments), "{}", e.file);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn docker_captures_cut_anywhere(file in 0..EXPECTED.len(), cuts in prop::collection::vec(0usize..20_000, 0..12)) {
        let segments = docker_capture(EXPECTED[file].file);
        let mut cuts = cuts;
        cuts.sort_unstable();
        cuts.dedup();
        let want = normalize(run_segments(&segments));
        let got = normalize(run_segments(&cut(&segments, &cuts)));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn random_bytes_never_panic(
        steps in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)), 0..32),
        small in any::<bool>(),
    ) {
        let limits = if small {
            Limits { max_head: 32, max_pipelined: 2, max_headers: 4, max_chunk_line: 8 }
        } else {
            Limits::default()
        };
        let mut d = H1Decoder::new(limits);
        let mut out = Vec::new();
        for (c2s, bytes) in &steps {
            let dir = if *c2s { C2S } else { S2C };
            if bytes.is_empty() { d.eof(dir, &mut out) } else { d.feed(dir, bytes, &mut out) }
            prop_assert!(d.buffered_bytes() <= 2 * limits.max_head);
        }
        d.eof(C2S, &mut out);
        d.eof(S2C, &mut out);
    }

    #[test]
    fn http_looking_noise_never_panics(
        parts in prop::collection::vec((any::<bool>(), prop::sample::select(vec![
            "GET / HTTP/1.1\r\n", "POST /containers/x/attach HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\n",
            "HTTP/1.1 101 UPGRADED\r\n", "HTTP/1.1 100 Continue\r\n", "HTTP/1.0 204 No Content\r\n",
            "Content-Length: 3\r\n", "Transfer-Encoding: chunked\r\n", "Content-Length: 99999999999999999999\r\n",
            "Content-Type: application/vnd.docker.raw-stream\r\n", "Upgrade: tcp\r\nConnection: Upgrade\r\n",
            "\r\n", "3\r\nabc\r\n", "0\r\n\r\n", "0\r\nX: y\r\n\r\n", "ffffffffffffffffff\r\n", "abc", "\n", ";x\r\n",
        ])), 0..40),
    ) {
        let mut d = H1Decoder::new(Limits::default());
        let mut out = Vec::new();
        for (c2s, s) in &parts {
            d.feed(if *c2s { C2S } else { S2C }, s.as_bytes(), &mut out);
        }
        d.eof(C2S, &mut out);
        d.eof(S2C, &mut out);
        summarize(&out);
    }
}

// ---------------------------------------------------------------------------------------
// Crafted exchanges

#[test]
fn pipelined_requests_match_responses_in_order() {
    let reqs = b"GET /v1.41/a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /v1.41/b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
GET /v1.41/c HTTP/1.1\r\n\r\n";
    let resps = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA\
HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nBB\r\n0\r\n\r\n\
HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nCCC";
    let s = run(&[(C2S, reqs), (S2C, resps), (C2S, b""), (S2C, b"")]);
    assert_eq!(s.gave_up, None);
    let got: Vec<_> = s
        .exchanges
        .values()
        .map(|x| {
            (
                x.target.as_str(),
                x.req_body.as_slice(),
                x.status,
                x.resp_body.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/v1.41/a", &b""[..], Some(200), &b"A"[..]),
            ("/v1.41/b", &b"hello"[..], Some(201), &b"BB"[..]),
            ("/v1.41/c", &b""[..], Some(404), &b"CCC"[..]),
        ]
    );
    assert_eq!(s.closed, Some(([0, 0], vec![])));
}

#[test]
fn pipelined_cut_everywhere_is_stable() {
    let reqs: &[u8] = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
    let resps: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nB\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\nclose-delimited";
    let segments = vec![
        (C2S, Segment::Data(reqs.to_vec())),
        (S2C, Segment::Data(resps.to_vec())),
        (C2S, Segment::Eof),
        (S2C, Segment::Eof),
    ];
    let want = normalize(run_segments(&segments));
    let s = summarize(&want);
    assert_eq!(s.exchanges.len(), 3);
    assert_eq!(s.exchanges[&2].resp_body, b"close-delimited");
    assert_eq!(s.exchanges[&1].req_body, b"abc");
    assert_eq!(
        s.exchanges[&1].req_trailers.as_ref().and_then(|t| t.get("t")),
        Some("1")
    );
    for at in 0..=total_len(&segments) {
        assert_eq!(normalize(run_segments(&cut(&segments, &[at]))), want, "cut {at}");
    }
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let s = run(&[
        (C2S, b"GET /x HTTP/1.1\r\nTE: trailers\r\n\r\n"),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nTrailer: X-Sum\r\n\r\n\
5;ext=1\r\nhello\r\n6 ; a=\"b\"\r\n world\r\nA\r\n0123456789\r\n000\r\nX-Sum: 42\r\nX-Other: y\r\n\r\n",
        ),
    ]);
    let x = &s.exchanges[&0];
    assert_eq!(x.resp_body, b"hello world0123456789");
    assert_eq!(x.resp_end, Some(21));
    let t = x.resp_trailers.as_ref().expect("trailers");
    assert_eq!(t.get("x-sum"), Some("42"));
    assert_eq!(t.get("X-OTHER"), Some("y"));
    assert_eq!(t.len(), 2);
}

#[test]
fn chunked_request_body() {
    let s = run(&[(
        C2S,
        b"POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nGET /_ping HTTP/1.1\r\n\r\n",
    )]);
    assert_eq!(s.exchanges[&0].req_body, b"abcd");
    assert_eq!(s.exchanges[&0].req_end, Some(4));
    assert_eq!(s.exchanges[&1].target, "/_ping");
}

#[test]
fn expect_100_continue() {
    let s = run(&[
        (
            C2S,
            b"POST /images/load HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        ),
        (S2C, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (C2S, b"hello"),
        (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ]);
    let x = &s.exchanges[&0];
    assert_eq!(x.informational, vec![100]);
    assert_eq!(x.status, Some(200));
    assert_eq!(x.req_body, b"hello");
    assert_eq!(x.resp_body, b"ok");
}

#[test]
fn upgrade_101_counts_bytes_after_the_switch() {
    let mut d = H1Decoder::default();
    let out = feed_all(
        &mut d,
        &[
            // The client sends stdin right behind the request, in the same chunk.
            (
                C2S,
                b"POST /v1.41/containers/c1/attach?stdin=1 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nstdin-bytes",
            ),
            (
                S2C,
                b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\0\0\0\0\0\0\x02hi",
            ),
            (C2S, b"more"),
            (S2C, b"GET / HTTP/1.1\r\n\r\n"),
            (C2S, b""),
            (S2C, b""),
        ],
    );
    let s = summarize(&out);
    assert!(s.exchanges[&0].upgraded);
    assert_eq!(s.exchanges[&0].status, Some(101));
    assert_eq!(s.exchanges.len(), 1);
    assert_eq!(s.closed, Some(([11 + 4, 10 + 18], vec![])));
    assert_eq!(d.upgraded(), Some(0));
    assert!(d.is_closed());
    let upgraded_at = out
        .iter()
        .position(|e| matches!(e, H1Event::Upgraded { id: 0 }))
        .unwrap();
    assert!(matches!(
        out[upgraded_at - 1],
        H1Event::ResponseHead { status: 101, .. }
    ));
}

#[test]
fn docker_raw_stream_hijack_without_upgrade_header() {
    // Old clients: no Upgrade header; the daemon answers a framing-less 200 stream.
    let s = run(&[
        (
            C2S,
            b"POST /v1.24/containers/c1/attach?stream=1&stdin=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nout",
        ),
        (C2S, b"in"),
        (C2S, b""),
        (S2C, b""),
    ]);
    assert!(s.exchanges[&0].upgraded);
    assert_eq!(s.exchanges[&0].resp_end, None);
    assert_eq!(s.closed, Some(([2, 3], vec![])));

    let s = run(&[
        (
            C2S,
            b"POST /v1.24/exec/e1/start HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        ),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\r\n\x01\0\0\0\0\0\0\x01x",
        ),
        (S2C, b""),
        (C2S, b""),
    ]);
    assert!(s.exchanges[&0].upgraded);
    assert_eq!(s.closed, Some(([0, 9], vec![])));
}

#[test]
fn framed_stream_responses_are_not_hijacks() {
    // Newer daemons label logs multiplexed-stream, chunked: plain HTTP.
    let s = run(&[
        (C2S, b"GET /v1.45/containers/c1/logs?stdout=1 HTTP/1.1\r\n\r\n"),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n\x01\0\0\0\0\0\0\x01a\r\n0\r\n\r\n",
        ),
        (C2S, b"GET /_ping HTTP/1.1\r\n\r\n"),
        (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"),
    ]);
    assert!(!s.exchanges[&0].upgraded);
    assert_eq!(s.exchanges[&0].resp_body, b"\x01\0\0\0\0\0\0\x01a");
    assert_eq!(s.exchanges[&1].resp_body, b"OK");

    // An attach answered with a framed body stays HTTP: the framing is authoritative.
    let s = run(&[
        (C2S, b"POST /containers/c1/attach?logs=1 HTTP/1.1\r\n\r\n"),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (C2S, b"GET /_ping HTTP/1.1\r\n\r\n"),
        (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert!(!s.exchanges[&0].upgraded);
    assert_eq!(s.exchanges[&1].status, Some(200));

    // A stream content type on another path, close-delimited: read until close.
    let s = run(&[
        (C2S, b"GET /containers/c1/logs HTTP/1.1\r\n\r\n"),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nxyz",
        ),
        (S2C, b""),
    ]);
    assert!(!s.exchanges[&0].upgraded);
    assert_eq!(s.exchanges[&0].resp_end, Some(3));
}

#[test]
fn attach_that_fails_stays_http() {
    // The request may switch, so what follows it waits for the answer; a 404 says no.
    let s = run(&[
        (
            C2S,
            b"POST /v1.41/containers/nope/attach?stream=1 HTTP/1.1\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\nGET /v1.41/version HTTP/1.1\r\n\r\n",
        ),
        (
            S2C,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{\"message\":1}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        ),
        (C2S, b""),
        (S2C, b""),
    ]);
    assert_eq!(s.gave_up, None);
    assert!(!s.exchanges[&0].upgraded);
    assert_eq!(s.exchanges[&0].status, Some(404));
    assert_eq!(s.exchanges[&1].target, "/v1.41/version");
    assert_eq!(s.exchanges[&1].resp_body, b"{}");
    assert_eq!(s.closed, Some(([0, 0], vec![])));
}

#[test]
fn bodiless_responses() {
    let s = run(&[
        (
            C2S,
            b"HEAD /_ping HTTP/1.1\r\n\r\nPOST /containers/c/start HTTP/1.1\r\n\r\nGET /images/x/json HTTP/1.1\r\nIf-None-Match: a\r\n\r\nGET /version HTTP/1.1\r\n\r\n",
        ),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\
HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nV",
        ),
    ]);
    let got: Vec<_> = s.exchanges.values().map(|x| (x.status, x.resp_end)).collect();
    assert_eq!(
        got,
        vec![
            (Some(200), Some(0)),
            (Some(204), Some(0)),
            (Some(304), Some(0)),
            (Some(200), Some(1))
        ]
    );
}

#[test]
fn http10_reads_until_close() {
    let s = run(&[
        (C2S, b"GET /version HTTP/1.0\r\n\r\n"),
        (S2C, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc"),
        (S2C, b"def"),
        (C2S, b""),
    ]);
    assert_eq!(s.exchanges[&0].version, 0);
    assert_eq!(s.exchanges[&0].resp_end, None, "not before the close");
    let s = run(&[
        (C2S, b"GET /version HTTP/1.0\r\n\r\n"),
        (S2C, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc"),
        (S2C, b"def"),
        (C2S, b""),
        (S2C, b""),
    ]);
    assert_eq!(s.exchanges[&0].resp_body, b"abcdef");
    assert_eq!(s.exchanges[&0].resp_end, Some(6));
    assert_eq!(s.closed, Some(([0, 0], vec![])));
    assert!(s.anomalies.is_empty());
}

#[test]
fn two_gib_content_length_buffers_nothing() {
    const TWO_GIB: u64 = 2 * 1024 * 1024 * 1024;
    let mut d = H1Decoder::default();
    let mut out = Vec::new();
    d.feed(
        C2S,
        format!("PUT /containers/c/archive?path=/ HTTP/1.1\r\nContent-Length: {TWO_GIB}\r\n\r\n").as_bytes(),
        &mut out,
    );
    assert_eq!(d.buffered_bytes(), 0);
    out.clear();
    let chunk = Bytes::from(vec![0x5au8; 64 * 1024]);
    let mut seen = 0u64;
    for _ in 0..64 {
        d.feed_bytes(C2S, chunk.clone(), &mut out);
        assert_eq!(d.buffered_bytes(), 0);
        for ev in out.drain(..) {
            match ev {
                H1Event::RequestBody { id: 0, data } => {
                    // Zero-copy: the body event is a view of the chunk fed.
                    assert_eq!(data.as_ptr(), chunk.as_ptr());
                    seen += data.len() as u64;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(seen, 4 * 1024 * 1024);
    assert_eq!(d.open_exchanges(), vec![0]);

    // Same on the response side.
    let mut d = H1Decoder::default();
    d.feed(C2S, b"GET /containers/c/export HTTP/1.1\r\n\r\n", &mut out);
    d.feed(
        S2C,
        format!("HTTP/1.1 200 OK\r\nContent-Length: {TWO_GIB}\r\n\r\n").as_bytes(),
        &mut out,
    );
    for _ in 0..64 {
        d.feed_bytes(S2C, chunk.clone(), &mut out);
        assert_eq!(d.buffered_bytes(), 0);
    }
    out.clear();
    d.eof(S2C, &mut out);
    assert_eq!(
        out,
        vec![H1Event::Anomaly(Anomaly::Truncated { dir: S2C, id: Some(0) })]
    );
}

#[test]
fn garbage_gives_up() {
    let mut d = H1Decoder::default();
    let mut out = Vec::new();
    d.feed(C2S, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", &mut out);
    assert_eq!(out, vec![H1Event::GaveUp(GiveUp::MalformedHead { dir: C2S })]);
    assert_eq!(d.gave_up(), Some(GiveUp::MalformedHead { dir: C2S }));
    assert_eq!(d.gave_up().unwrap().reason(), "malformed_head");
    assert_eq!(d.gave_up().unwrap().to_string(), "c2s head is not http/1.x");
    out.clear();
    d.feed(C2S, b"GET / HTTP/1.1\r\n\r\n", &mut out);
    d.eof(C2S, &mut out);
    d.eof(S2C, &mut out);
    assert!(out.is_empty());
    assert_eq!(d.buffered_bytes(), 0);
}

#[test]
fn head_limit_is_exact_whatever_the_cuts() {
    let limits = Limits {
        max_head: 64,
        ..Limits::default()
    };
    let fits = b"GET /version HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    assert_eq!(fits.len(), 64);
    let too_big = b"GET /version HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for (input, ok) in [(&fits[..], true), (&too_big[..], false)] {
        for at in 0..=input.len() {
            let mut d = H1Decoder::new(limits);
            let mut out = Vec::new();
            d.feed(C2S, &input[..at], &mut out);
            d.feed(C2S, &input[at..], &mut out);
            assert!(d.buffered_bytes() <= 64);
            let s = summarize(&out);
            if ok {
                assert_eq!(s.gave_up, None, "cut {at}");
                assert_eq!(s.exchanges.len(), 1);
            } else {
                assert_eq!(s.gave_up, Some(GiveUp::HeadTooLarge { dir: C2S }), "cut {at}");
                assert!(s.exchanges.is_empty());
            }
        }
    }
    // An endless head is cut off at the limit.
    let mut d = H1Decoder::default();
    let mut out = Vec::new();
    let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    d.feed(C2S, b"GET / HTTP/1.1\r\n", &mut out);
    for _ in 0..2000 {
        d.feed(C2S, line, &mut out);
        assert!(d.buffered_bytes() <= DEFAULT_MAX_HEAD);
    }
    assert_eq!(d.gave_up(), Some(GiveUp::HeadTooLarge { dir: C2S }));
    assert!(d.open_exchanges().is_empty());
}

#[test]
fn many_fields_parse_past_the_stack_array() {
    let mut head = String::from("GET /info HTTP/1.1\r\n");
    for i in 0..100 {
        head.push_str(&format!("X-F{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    let s = run(&[(C2S, head.as_bytes())]);
    assert_eq!(s.gave_up, None);
    let mut d = H1Decoder::new(Limits {
        max_headers: 50,
        ..Limits::default()
    });
    let out = feed_all(&mut d, &[(C2S, head.as_bytes())]);
    assert_eq!(summarize(&out).gave_up, Some(GiveUp::TooManyHeaders { dir: C2S }));
}

#[test]
fn too_many_outstanding_requests_gives_up() {
    let limits = Limits {
        max_pipelined: 3,
        ..Limits::default()
    };
    let mut d = H1Decoder::new(limits);
    let out = feed_all(&mut d, &[(C2S, b"GET /a HTTP/1.1\r\n\r\n".repeat(4).as_slice())]);
    let s = summarize(&out);
    assert_eq!(s.exchanges.len(), 3);
    assert_eq!(s.gave_up, Some(GiveUp::TooManyPipelined));
    assert_eq!(d.open_exchanges(), vec![0, 1, 2]);
}

#[test]
fn bad_framing_gives_up() {
    for (steps, want) in [
        (
            vec![(C2S, &b"POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n"[..])],
            GiveUp::BadContentLength { dir: C2S },
        ),
        (
            vec![(
                C2S,
                &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            )],
            GiveUp::BadContentLength { dir: C2S },
        ),
        (
            vec![(C2S, &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..])],
            GiveUp::BadTransferEncoding,
        ),
        (
            vec![(C2S, &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..])],
            GiveUp::BadChunk { dir: C2S },
        ),
        (
            vec![
                (C2S, &b"GET / HTTP/1.1\r\n\r\n"[..]),
                (
                    S2C,
                    &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX"[..],
                ),
            ],
            GiveUp::BadChunk { dir: S2C },
        ),
        (
            vec![
                (C2S, &b"GET / HTTP/1.1\r\n\r\n"[..]),
                (
                    S2C,
                    &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n"[..],
                ),
            ],
            GiveUp::BadChunk { dir: S2C },
        ),
        (
            vec![
                (C2S, &b"GET / HTTP/1.1\r\n\r\n"[..]),
                (S2C, &b"HTTP/9 200 OK\r\n\r\n"[..]),
            ],
            GiveUp::MalformedHead { dir: S2C },
        ),
    ] {
        let s = run(&steps);
        assert_eq!(s.gave_up, Some(want), "{steps:?}");
    }
}

#[test]
fn chunked_with_content_length_is_an_anomaly() {
    let s = run(&[(
        C2S,
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    )]);
    assert_eq!(s.exchanges[&0].req_body, b"x");
    assert_eq!(s.anomalies, vec![Anomaly::ChunkedWithLength { dir: C2S, id: 0 }]);
}

#[test]
fn response_seen_before_its_request_head_completes_waits() {
    let s = run(&[
        (C2S, b"GET /version HTTP/1.1\r\n"),
        (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        (C2S, b"\r\n"),
        (C2S, b""),
        (S2C, b""),
    ]);
    assert_eq!(s.exchanges[&0].resp_body, b"ok");
    assert_eq!(s.closed, Some(([0, 0], vec![])));

    let s = run(&[(S2C, b"HTTP/1.1 200 OK\r\n\r\n"), (S2C, b""), (C2S, b"")]);
    assert_eq!(s.anomalies, vec![Anomaly::UnsolicitedResponse { bytes: 19 }]);
}

#[test]
fn close_inside_messages_reports_open_exchanges() {
    let s = run(&[
        (C2S, b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        (C2S, b""),
        (S2C, b""),
    ]);
    assert_eq!(s.anomalies, vec![Anomaly::Truncated { dir: C2S, id: Some(0) }]);
    assert_eq!(s.closed, Some(([0, 0], vec![0])));

    let s = run(&[
        (C2S, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HT"),
        (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 2"),
        (S2C, b""),
        (C2S, b""),
        (C2S, b"late"),
    ]);
    assert_eq!(s.closed, Some(([0, 0], vec![1])));
    assert_eq!(
        s.anomalies,
        vec![
            Anomaly::Truncated { dir: S2C, id: None },
            Anomaly::Truncated { dir: C2S, id: None },
        ]
    );
}

#[test]
fn leading_empty_lines_are_skipped() {
    let s = run(&[
        (
            C2S,
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET /b HTTP/1.1\r\n\r\n",
        ),
        (S2C, b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(s.gave_up, None);
    assert_eq!(s.exchanges[&1].target, "/b");
    assert_eq!(s.exchanges[&0].status, Some(200));
}

#[test]
fn headers_debug_hides_values() {
    let h = Headers::new(vec![
        ("Authorization".into(), "Bearer secret-token".into()),
        ("X-Registry-Auth".into(), "eyJzZWNyZXQiOjF9".into()),
    ]);
    let dbg = format!("{h:?}");
    assert!(dbg.contains("Authorization") && dbg.contains("19 bytes"), "{dbg}");
    assert!(!dbg.contains("secret"), "{dbg}");
    assert!(!dbg.contains("eyJ"), "{dbg}");
    assert_eq!(h.get("authorization"), Some("Bearer secret-token"));
    assert_eq!(h.iter().count(), 2);
    let ev = H1Event::RequestHead {
        id: 0,
        method: "POST".into(),
        target: "/auth".into(),
        version: 1,
        headers: h,
    };
    assert!(!format!("{ev:?}").contains("secret"));
}

#[test]
fn connect_tunnel_is_upgraded() {
    let s = run(&[
        (C2S, b"CONNECT example:443 HTTP/1.1\r\n\r\n\x16\x03"),
        (S2C, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03"),
        (C2S, b""),
        (S2C, b""),
    ]);
    assert!(s.exchanges[&0].upgraded);
    assert_eq!(s.closed, Some(([2, 3], vec![])));
}

#[test]
fn switch_answered_before_the_request_body_ends() {
    // The server may answer 101 early; the request body still ends as HTTP, then raw.
    let s = run(&[
        (
            C2S,
            b"POST /exec/e1/start HTTP/1.1\r\nUpgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 4\r\n\r\nab",
        ),
        (S2C, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 UPGRADED\r\n\r\nout"),
        (C2S, b"cdstdin"),
        (C2S, b""),
        (S2C, b""),
    ]);
    let x = &s.exchanges[&0];
    assert_eq!(x.informational, vec![100]);
    assert_eq!(x.status, Some(101));
    assert_eq!(x.req_body, b"abcd");
    assert!(x.upgraded);
    assert_eq!(s.closed, Some(([5, 3], vec![])));
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let s = run(&[
        (C2S, b"GET /a HTTP/1.1\nHost: x\n\n"),
        (S2C, b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n"),
    ]);
    assert_eq!(s.gave_up, None);
    assert_eq!(s.exchanges[&0].resp_body, b"hi");
    assert_eq!(s.exchanges[&0].resp_end, Some(2));
}

#[test]
fn chunk_line_limit() {
    let limits = Limits {
        max_chunk_line: 16,
        ..Limits::default()
    };
    let mut d = H1Decoder::new(limits);
    let out = feed_all(
        &mut d,
        &[
            (C2S, b"GET / HTTP/1.1\r\n\r\n"),
            (
                S2C,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            ),
        ],
    );
    assert_eq!(summarize(&out).gave_up, Some(GiveUp::BadChunk { dir: S2C }));
}

#[test]
fn trailer_section_is_bounded() {
    let limits = Limits {
        max_head: 128,
        ..Limits::default()
    };
    let mut d = H1Decoder::new(limits);
    let mut steps: Vec<(Direction, Vec<u8>)> = vec![
        (C2S, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            S2C,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec(),
        ),
    ];
    for _ in 0..20 {
        steps.push((S2C, b"X-T: 0123456789\r\n".to_vec()));
    }
    let mut out = Vec::new();
    for (dir, b) in &steps {
        d.feed(*dir, b, &mut out);
        assert!(d.buffered_bytes() <= 128);
    }
    assert_eq!(d.gave_up(), Some(GiveUp::HeadTooLarge { dir: S2C }));
}

#[test]
fn event_debug_prints_lengths_not_bytes() {
    let ev = H1Event::RequestBody {
        id: 3,
        data: Bytes::from_static(b"{\"password\":\"hunter2\"}"),
    };
    let dbg = format!("{ev:?}");
    assert_eq!(dbg, "RequestBody { id: 3, len: 22 }");
    let mut d = H1Decoder::default();
    let mut out = Vec::new();
    d.feed(C2S, b"POST /auth HTTP/1.1\r\nAuthorization: Basic c2VjcmV0", &mut out);
    assert!(!format!("{d:?}").contains("c2VjcmV0"));
}

/// Server bytes that arrived before the request they answer run as soon as that request is
/// open: the events come in the same order whether the client's bytes come in one read or
/// are cut after the head (found by the `h1` fuzz target).
#[test]
fn early_response_events_do_not_depend_on_client_read_splits() {
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let head: &[u8] = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
    let whole = [head, b"ab"].concat();
    let one = run_segments(&[(S2C, Segment::Data(resp.to_vec())), (C2S, Segment::Data(whole))]);
    let cut = run_segments(&[
        (S2C, Segment::Data(resp.to_vec())),
        (C2S, Segment::Data(head.to_vec())),
        (C2S, Segment::Data(b"ab".to_vec())),
    ]);
    assert_eq!(normalize(one.clone()), normalize(cut));
    let kinds: Vec<&str> = one
        .iter()
        .map(|e| match e {
            H1Event::RequestHead { .. } => "req-head",
            H1Event::ResponseHead { .. } => "resp-head",
            H1Event::ResponseEnd { .. } => "resp-end",
            H1Event::RequestBody { .. } => "req-body",
            H1Event::RequestEnd { .. } => "req-end",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["req-head", "resp-head", "resp-end", "req-body", "req-end"]);
}

/// Client bytes held behind a possible hijack (attach) run as soon as the response says
/// there was none, whether the response body came in the same read as its head or not.
#[test]
fn held_pipelined_request_events_do_not_depend_on_server_read_splits() {
    let attach: &[u8] = b"POST /v1.41/containers/c1/attach?stream=1 HTTP/1.1\r\nHost: d\r\n\r\n";
    let next: &[u8] = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n";
    let head: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n";
    let client = [attach, next].concat();
    let whole = [head, b"{}"].concat();
    let one = run_segments(&[(C2S, Segment::Data(client.clone())), (S2C, Segment::Data(whole))]);
    let cut = run_segments(&[
        (C2S, Segment::Data(client)),
        (S2C, Segment::Data(head.to_vec())),
        (S2C, Segment::Data(b"{}".to_vec())),
    ]);
    assert_eq!(normalize(one.clone()), normalize(cut));
    let second = one.iter().position(|e| matches!(e, H1Event::RequestHead { id: 1, .. }));
    let first_end = one.iter().position(|e| matches!(e, H1Event::ResponseEnd { id: 0, .. }));
    assert!(second.is_some() && first_end.is_some(), "{one:?}");
    assert!(
        second < first_end,
        "the held request runs right after the response head: {one:?}"
    );
}
