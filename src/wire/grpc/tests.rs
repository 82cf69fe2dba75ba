//! gRPC decoder tests: recorded captures (call lists, split invariance) and crafted streams.

use std::collections::BTreeMap;
use std::io::Write as _;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::wire::h2::frame::{FrameType, flags, setting};
use crate::wire::h2::testutil as t;
use crate::wire::h2::testutil::{Chunk, capture_len, load, rechunk, split_at};

const C: Direction = Direction::ClientToServer;
const S: Direction = Direction::ServerToClient;

/// Run chunks through a fresh decoder; `zero_copy` feeds refcounted chunks.
fn run_with(limits: Limits, chunks: &[(Direction, Chunk)], zero_copy: bool) -> (Vec<GrpcEvent>, GrpcDecoder) {
    let mut d = GrpcDecoder::new(limits);
    let mut out = Vec::new();
    for (dir, c) in chunks {
        match c {
            Chunk::Data(b) if zero_copy => d.feed_bytes(*dir, b.clone(), &mut out),
            Chunk::Data(b) => d.feed(*dir, b, &mut out),
            Chunk::Eof => d.eof(*dir, &mut out),
        }
    }
    (out, d)
}

fn run(chunks: &[(Direction, Chunk)], zero_copy: bool) -> Vec<GrpcEvent> {
    run_with(Limits::default(), chunks, zero_copy).0
}

/// One call as the events describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Call {
    path: String,
    status: Option<String>,
    req: usize,
    resp: usize,
    end: Option<StreamEnd>,
}

/// Calls in request order, plus anomalies and give-ups. Checks event order invariants.
fn calls(events: &[GrpcEvent]) -> (Vec<Call>, Vec<Anomaly>, Vec<GiveUp>) {
    let mut order = Vec::new();
    let mut by_id: BTreeMap<StreamId, Call> = BTreeMap::new();
    let mut anomalies = Vec::new();
    let mut give_ups = Vec::new();
    let open = |by_id: &mut BTreeMap<StreamId, Call>, id: &StreamId| -> Call {
        let c = by_id
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("event on unknown stream {id}"));
        assert!(c.end.is_none(), "event on ended stream {id}");
        c
    };
    for e in events {
        match e {
            GrpcEvent::RequestHeaders { stream, headers } => {
                assert!(!by_id.contains_key(stream), "stream {stream} opened twice");
                order.push(*stream);
                by_id.insert(
                    *stream,
                    Call {
                        path: headers.get(":path").unwrap_or_default().to_string(),
                        ..Call::default()
                    },
                );
            }
            GrpcEvent::RequestMessage { stream, .. } => {
                let mut c = open(&mut by_id, stream);
                c.req += 1;
                by_id.insert(*stream, c);
            }
            GrpcEvent::ResponseMessage { stream, .. } => {
                let mut c = open(&mut by_id, stream);
                c.resp += 1;
                by_id.insert(*stream, c);
            }
            GrpcEvent::ResponseHeaders { stream, .. } => {
                open(&mut by_id, stream);
            }
            GrpcEvent::Trailers { stream, headers, .. } => {
                let mut c = open(&mut by_id, stream);
                c.status = headers.get("grpc-status").map(str::to_string);
                by_id.insert(*stream, c);
            }
            GrpcEvent::StreamEnd { stream, end } => {
                let mut c = open(&mut by_id, stream);
                c.end = Some(*end);
                by_id.insert(*stream, c);
            }
            GrpcEvent::MessageCut { stream, .. } => {
                open(&mut by_id, stream);
            }
            GrpcEvent::Anomaly(a) => anomalies.push(*a),
            GrpcEvent::GaveUp(g) => give_ups.push(*g),
        }
    }
    let list = order.into_iter().filter_map(|id| by_id.get(&id).cloned()).collect();
    (list, anomalies, give_ups)
}

/// "Service/Method status req/resp end", runs of equal lines as "Nx line".
fn summary(events: &[GrpcEvent]) -> String {
    let (list, anomalies, give_ups) = calls(events);
    assert!(anomalies.is_empty(), "anomalies: {anomalies:?}");
    assert!(give_ups.is_empty(), "gave up: {give_ups:?}");
    let lines: Vec<String> = list
        .iter()
        .map(|c| {
            let short = c.path.rsplit_once('.').map_or(c.path.as_str(), |(_, m)| m);
            let end = match c.end {
                None => "open".to_string(),
                Some(StreamEnd::Complete) => "complete".to_string(),
                Some(StreamEnd::Reset { code: 0, by: S }) => "reset0s".to_string(),
                Some(other) => format!("{other:?}"),
            };
            format!(
                "{short} {} {}/{} {end}",
                c.status.as_deref().unwrap_or("-"),
                c.req,
                c.resp
            )
        })
        .collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let mut n = 1;
        while lines.get(i + n) == lines.get(i) {
            n += 1;
        }
        if n > 1 {
            out.push_str(&format!("{n}x "));
        }
        out.push_str(&lines[i]);
        out.push('\n');
        i += n;
    }
    out
}

const GOLDEN_CTR_VERSION: &str = "\
Version/Version 0 1/1 complete
Introspection/Server 0 1/1 complete
";

const GOLDEN_CRI_POD_LIFECYCLE: &str = "\
RuntimeService/Version 0 1/1 complete
ImageService/ImageStatus 0 1/1 complete
RuntimeService/RunPodSandbox 0 1/1 complete
RuntimeService/CreateContainer 0 1/1 complete
RuntimeService/StartContainer 0 1/1 complete
RuntimeService/ContainerStatus 0 1/1 complete
RuntimeService/StopPodSandbox 0 1/1 complete
RuntimeService/RemovePodSandbox 0 1/1 complete
ImageService/PullImage 2 1/0 complete
";

const GOLDEN_CTR_CONTAINERS_CREATE_DUPLICATE: &str = "\
Images/Get 0 1/1 complete
Namespaces/Get 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Snapshots/Stat 0 1/1 complete
Leases/Create 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Namespaces/Get 0 1/1 complete
Snapshots/Prepare 6 1/0 complete
Leases/Delete 0 1/1 complete
";

const GOLDEN_CTR_CONTAINERS_CREATE: &str = "\
Images/Get 0 1/1 complete
Namespaces/Get 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Snapshots/Stat 0 1/1 complete
Leases/Create 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Namespaces/Get 0 1/1 complete
Snapshots/Prepare 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Snapshots/Mounts 0 1/1 complete
Containers/Create 0 1/1 complete
Leases/Delete 0 1/1 complete
";

const GOLDEN_CTR_CONTAINERS_DELETE: &str = "\
Containers/Get 0 1/1 complete
2x Tasks/Get 5 1/0 complete
Containers/Get 0 1/1 complete
Snapshots/Remove 0 1/1 complete
Containers/Delete 0 1/1 complete
";

const GOLDEN_CTR_IMAGES_IMPORT: &str = "\
Leases/Create 0 1/1 complete
5x Content/Write 0 4/5 reset0s
Content/List 0 1/0 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Write 0 4/5 reset0s
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Write 0 4/5 reset0s
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Update 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Update 0 1/1 complete
Images/Update 5 1/0 complete
Images/Create 0 1/1 complete
Leases/Delete 0 1/1 complete
Leases/Create 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Namespaces/Get 0 1/1 complete
Snapshots/Stat 5 1/0 complete
Snapshots/Prepare 0 1/1 complete
Diff/Apply 0 1/1 complete
Snapshots/Commit 0 1/1 complete
Content/Update 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Update 0 1/1 complete
Leases/Delete 0 1/1 complete
";

const GOLDEN_CTR_RUN: &str = "\
Images/Get 0 1/1 complete
Namespaces/Get 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Snapshots/Stat 0 1/1 complete
Leases/Create 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Namespaces/Get 0 1/1 complete
Snapshots/Prepare 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Content/Info 0 1/1 complete
Content/Read 0 1/1 complete
Snapshots/Mounts 0 1/1 complete
Containers/Create 0 1/1 complete
Leases/Delete 0 1/1 complete
Containers/Get 0 1/1 complete
Snapshots/Mounts 0 1/1 complete
Containers/Get 0 1/1 complete
Tasks/Create 0 1/1 complete
Tasks/Wait 0 1/1 complete
Tasks/Start 0 1/1 complete
Tasks/Get 0 1/1 complete
Tasks/Delete 0 1/1 complete
2x Tasks/Get 5 1/0 complete
Containers/Get 0 1/1 complete
Snapshots/Remove 0 1/1 complete
Containers/Delete 0 1/1 complete
";

const GOLDEN_DOCKERD_TO_CONTAINERD_PLUGINS: &str = "\
Namespaces/Get 0 1/1 complete
Events/Subscribe - 1/0 open
";

const GOLDEN_DOCKERD_TO_CONTAINERD: &str = "\
Namespaces/Get 0 1/1 complete
Events/Subscribe - 1/15 open
3x Version/Version 0 1/1 complete
Leases/Create 0 1/1 complete
Containers/Create 0 1/1 complete
Leases/Delete 0 1/1 complete
4x Containers/Get 0 1/1 complete
Tasks/Create 0 1/1 complete
Tasks/Start 0 1/1 complete
Containers/Get 0 1/1 complete
2x Tasks/Get 0 1/1 complete
Tasks/Delete 0 1/1 complete
2x Containers/Get 0 1/1 complete
Tasks/Get 5 1/0 complete
Containers/Get 0 1/1 complete
Containers/Delete 0 1/1 complete
Leases/Create 0 1/1 complete
Containers/Create 0 1/1 complete
Leases/Delete 0 1/1 complete
4x Containers/Get 0 1/1 complete
Tasks/Create 0 1/1 complete
Tasks/Start 0 1/1 complete
3x Containers/Get 0 1/1 complete
Tasks/Get 0 1/1 complete
Containers/Get 0 1/1 complete
Tasks/Exec 0 1/1 complete
Tasks/Start 0 1/1 complete
Containers/Get 0 1/1 complete
2x Tasks/Get 0 1/1 complete
2x Containers/Get 0 1/1 complete
Tasks/Get 0 1/1 complete
Tasks/DeleteProcess 0 1/1 complete
Containers/Get 0 1/1 complete
Tasks/Get 0 1/1 complete
Tasks/Kill 0 1/1 complete
Containers/Get 0 1/1 complete
Tasks/Get 0 1/1 complete
Tasks/Kill 0 1/1 complete
Containers/Get 0 1/1 complete
2x Tasks/Get 0 1/1 complete
Tasks/Delete 0 1/1 complete
2x Containers/Get 0 1/1 complete
Tasks/Get 5 1/0 complete
Containers/Get 0 1/1 complete
Containers/Delete 0 1/1 complete
Version/Version 0 1/1 complete
Leases/Create 0 1/1 complete
Containers/Create 0 1/1 complete
Leases/Delete 0 1/1 complete
4x Containers/Get 0 1/1 complete
Tasks/Create 0 1/1 complete
Tasks/Start 0 1/1 complete
Containers/Get 0 1/1 complete
2x Tasks/Get 0 1/1 complete
Tasks/Delete 0 1/1 complete
2x Containers/Get 0 1/1 complete
Tasks/Get 5 1/0 complete
Containers/Get 0 1/1 complete
Containers/Delete 0 1/1 complete
";

const CAPTURES: &[(&str, &str)] = &[
    ("ctr-version", GOLDEN_CTR_VERSION),
    ("cri-pod-lifecycle", GOLDEN_CRI_POD_LIFECYCLE),
    (
        "ctr-containers-create-duplicate",
        GOLDEN_CTR_CONTAINERS_CREATE_DUPLICATE,
    ),
    ("ctr-containers-create", GOLDEN_CTR_CONTAINERS_CREATE),
    ("ctr-containers-delete", GOLDEN_CTR_CONTAINERS_DELETE),
    ("ctr-images-import", GOLDEN_CTR_IMAGES_IMPORT),
    ("ctr-run", GOLDEN_CTR_RUN),
    ("dockerd-to-containerd-plugins", GOLDEN_DOCKERD_TO_CONTAINERD_PLUGINS),
    ("dockerd-to-containerd", GOLDEN_DOCKERD_TO_CONTAINERD),
];

#[test]
fn captures_give_the_recorded_calls() {
    for (name, golden) in CAPTURES {
        let chunks = load(name);
        let events = run(&chunks, true);
        assert_eq!(summary(&events), *golden, "capture {name}");
        // Copying and zero-copy feeding agree.
        assert_eq!(run(&chunks, false), events, "capture {name}");
    }
}

fn find_call<'a>(events: &'a [GrpcEvent], path_suffix: &str) -> Vec<(StreamId, Option<&'a str>)> {
    let mut ids = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            GrpcEvent::RequestHeaders { stream, headers }
                if headers.get(":path").is_some_and(|p| p.ends_with(path_suffix)) =>
            {
                ids.insert(*stream, ());
            }
            GrpcEvent::Trailers { stream, headers, .. } if ids.contains_key(stream) => {
                out.push((*stream, headers.get("grpc-status")));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn capture_facts_from_the_readme() {
    let ev = run(&load("ctr-containers-create-duplicate"), true);
    assert_eq!(
        find_call(&ev, "/containerd.services.snapshots.v1.Snapshots/Prepare"),
        vec![(35, Some("6"))]
    );
    let ev = run(&load("cri-pod-lifecycle"), true);
    assert_eq!(
        find_call(&ev, "/runtime.v1.ImageService/PullImage"),
        vec![(17, Some("2"))]
    );
    // PullImage failed with a Trailers-Only response.
    assert!(ev.iter().any(|e| matches!(
        e,
        GrpcEvent::Trailers {
            stream: 17,
            trailers_only: true,
            ..
        }
    )));
    // No namespace header on CRI calls; containerd calls carry theirs.
    for e in &ev {
        if let GrpcEvent::RequestHeaders { headers, .. } = e {
            assert_eq!(headers.get("containerd-namespace"), None);
        }
    }
    let ev = run(&load("dockerd-to-containerd"), true);
    let gets = find_call(&ev, "/containerd.services.tasks.v1.Tasks/Get");
    assert!(gets.iter().any(|(_, s)| *s == Some("5")), "{gets:?}");
    let mut saw_ns = false;
    for e in &ev {
        if let GrpcEvent::RequestHeaders { headers, .. } = e {
            saw_ns = true;
            assert_eq!(headers.get("containerd-namespace"), Some("moby"));
        }
    }
    assert!(saw_ns);
    let ev = run(&load("dockerd-to-containerd-plugins"), true);
    for e in &ev {
        if let GrpcEvent::RequestHeaders { headers, .. } = e {
            assert_eq!(headers.get("containerd-namespace"), Some("plugins.moby"));
        }
    }
    // CRI request payload is the protobuf the client sent (the fake secret is in it).
    let ev = run(&load("cri-pod-lifecycle"), true);
    let create = ev.iter().find_map(|e| match e {
        GrpcEvent::RequestMessage { stream: 7, message } => message.data.clone(),
        _ => None,
    });
    let create = create.expect("CreateContainer request");
    assert!(create.windows(17).any(|w| w == b"not-a-real-secret"));
}

#[test]
fn captures_split_at_every_offset_of_small_files() {
    for name in [
        "ctr-version",
        "dockerd-to-containerd-plugins",
        "cri-pod-lifecycle",
        "ctr-containers-delete",
    ] {
        let chunks = load(name);
        let want = run(&chunks, true);
        for at in 1..capture_len(&chunks) {
            assert_eq!(run(&split_at(&chunks, at), true), want, "{name} cut at {at}");
        }
    }
}

#[test]
fn containerd_2_1_captures_split_at_every_offset() {
    // containerd 2.x's Transfer + Streaming traffic (bidirectional streams of Any, streams
    // reset with code 0, trailers after the Transfer returned) and a 2.1 CRI pod.
    for name in [
        "ctr-images-import",
        "ctr-images-export",
        "ctr-images-pull",
        "cri-pod-lifecycle",
    ] {
        let chunks = load(&format!("containerd-2.1/{name}"));
        let want = run(&chunks, true);
        assert!(
            want.iter()
                .filter(|e| matches!(e, GrpcEvent::RequestMessage { .. } | GrpcEvent::ResponseMessage { .. }))
                .count()
                >= 18,
            "{name}: {} events",
            want.len()
        );
        for at in 1..capture_len(&chunks) {
            assert_eq!(run(&split_at(&chunks, at), true), want, "{name} cut at {at}");
        }
        assert_eq!(run(&rechunk(&chunks, 1), false), want, "{name} one byte at a time");
    }
}

#[test]
fn captures_split_at_many_offsets_of_big_files() {
    // Deterministic pseudo-random offsets (xorshift), plus one-byte and odd-sized re-chunking.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (name, _) in CAPTURES {
        let chunks = load(name);
        let want = run(&chunks, true);
        let total = capture_len(&chunks);
        let cuts = if total > 100_000 { 25 } else { 60 };
        for _ in 0..cuts {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % total as u64) as usize;
            assert_eq!(run(&split_at(&chunks, at), true), want, "{name} cut at {at}");
        }
        assert_eq!(run(&rechunk(&chunks, 1), false), want, "{name} one byte at a time");
        assert_eq!(run(&rechunk(&chunks, 7), true), want, "{name} 7-byte pieces");
    }
}

// ---- crafted streams ----

fn req_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut pairs = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    pairs.extend_from_slice(extra);
    t::literal_block(&pairs)
}

fn resp_block(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut pairs = vec![(":status", "200"), ("content-type", "application/grpc")];
    pairs.extend_from_slice(extra);
    t::literal_block(&pairs)
}

fn trailer_block(status: &str) -> Vec<u8> {
    t::literal_block(&[("grpc-status", status), ("grpc-message", "")])
}

/// A scripted connection: chunks in order, starting with both prefaces.
#[derive(Clone)]
struct Script(Vec<(Direction, Chunk)>);

impl Script {
    fn new() -> Script {
        Script(Vec::new())
            .c(t::client_start())
            .s(t::settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)]))
            .c(t::settings_ack())
            .s(t::settings_ack())
    }
    fn raw() -> Script {
        Script(Vec::new())
    }
    fn c(mut self, b: Vec<u8>) -> Script {
        self.0.push((C, Chunk::Data(Bytes::from(b))));
        self
    }
    fn s(mut self, b: Vec<u8>) -> Script {
        self.0.push((S, Chunk::Data(Bytes::from(b))));
        self
    }
    fn eof(mut self, dir: Direction) -> Script {
        self.0.push((dir, Chunk::Eof));
        self
    }
    /// A complete unary call.
    fn unary(self, id: u32, path: &str, req: &[u8], resp: &[u8], status: &str) -> Script {
        self.c(t::headers(id, 0, &req_block(path, &[])))
            .c(t::data(id, flags::END_STREAM, &t::grpc_msg(false, req)))
            .s(t::headers(id, 0, &resp_block(&[])))
            .s(t::data(id, 0, &t::grpc_msg(false, resp)))
            .s(t::headers(id, flags::END_STREAM, &trailer_block(status)))
    }
    /// Events, checked to be the same at every cut point and when fed one byte at a time.
    fn events_with(&self, limits: Limits) -> Vec<GrpcEvent> {
        let (want, _) = run_with(limits, &self.0, true);
        let total = capture_len(&self.0);
        if total <= 4096 {
            for at in 1..total {
                let (got, _) = run_with(limits, &split_at(&self.0, at), true);
                assert_eq!(got, want, "cut at {at}");
            }
        }
        let (got, _) = run_with(limits, &rechunk(&self.0, 1), false);
        assert_eq!(got, want, "one byte at a time");
        want
    }
    fn events(&self) -> Vec<GrpcEvent> {
        self.events_with(Limits::default())
    }
    fn decoder(&self, limits: Limits) -> GrpcDecoder {
        run_with(limits, &self.0, true).1
    }
}

fn messages(events: &[GrpcEvent]) -> Vec<(Direction, Message)> {
    events
        .iter()
        .filter_map(|e| match e {
            GrpcEvent::RequestMessage { message, .. } => Some((C, message.clone())),
            GrpcEvent::ResponseMessage { message, .. } => Some((S, message.clone())),
            _ => None,
        })
        .collect()
}

fn gave_up(events: &[GrpcEvent]) -> Vec<GiveUp> {
    events
        .iter()
        .filter_map(|e| match e {
            GrpcEvent::GaveUp(g) => Some(*g),
            _ => None,
        })
        .collect()
}

fn anomalies(events: &[GrpcEvent]) -> Vec<Anomaly> {
    events
        .iter()
        .filter_map(|e| match e {
            GrpcEvent::Anomaly(a) => Some(*a),
            _ => None,
        })
        .collect()
}

#[test]
fn unary_call_events_in_order() {
    let ev = Script::new().unary(1, "/pkg.Svc/Do", b"ping", b"pong!", "0").events();
    assert_eq!(ev.len(), 6, "{ev:#?}");
    assert!(
        matches!(&ev[0], GrpcEvent::RequestHeaders { stream: 1, headers } if headers.get(":path") == Some("/pkg.Svc/Do"))
    );
    assert!(
        matches!(&ev[1], GrpcEvent::RequestMessage { stream: 1, message } if message.data.as_deref() == Some(&b"ping"[..]) && message.len == 4)
    );
    assert!(matches!(&ev[2], GrpcEvent::ResponseHeaders { stream: 1, .. }));
    assert!(
        matches!(&ev[3], GrpcEvent::ResponseMessage { stream: 1, message } if message.data.as_deref() == Some(&b"pong!"[..]))
    );
    assert!(
        matches!(&ev[4], GrpcEvent::Trailers { stream: 1, trailers_only: false, headers } if headers.get("grpc-status") == Some("0"))
    );
    assert_eq!(
        ev[5],
        GrpcEvent::StreamEnd {
            stream: 1,
            end: StreamEnd::Complete
        }
    );
}

#[test]
fn trailers_only_response() {
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/pkg.Svc/Missing", &[])))
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, b"")))
        .s(t::headers(
            1,
            flags::END_STREAM,
            &t::literal_block(&[(":status", "200"), ("grpc-status", "12")]),
        ))
        .events();
    assert!(ev.iter().any(|e| matches!(e, GrpcEvent::Trailers { stream: 1, trailers_only: true, headers } if headers.get("grpc-status") == Some("12"))));
    assert!(!ev.iter().any(|e| matches!(e, GrpcEvent::ResponseHeaders { .. })));
    assert_eq!(
        ev.last(),
        Some(&GrpcEvent::StreamEnd {
            stream: 1,
            end: StreamEnd::Complete
        })
    );
}

#[test]
fn message_split_across_many_data_frames() {
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let wire = t::grpc_msg(false, &payload);
    let mut s = Script::new().c(t::headers(1, 0, &req_block("/pkg.Svc/Up", &[])));
    // Uneven frames, and two frames per chunk sometimes.
    let mut at = 0;
    let mut k = 0;
    while at < wire.len() {
        let n = [1, 3, 700, 5, 16_384, 2][k % 6].min(wire.len() - at);
        s = s.c(t::data(1, 0, &wire[at..at + n]));
        at += n;
        k += 1;
    }
    let s = s
        .c(t::data(1, flags::END_STREAM, &[]))
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")));
    let ev = s.events();
    let msgs = messages(&ev);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1.data.as_deref(), Some(&payload[..]));
    assert_eq!(s.decoder(Limits::default()).buffered_bytes(), 0);
    // Several messages inside one DATA frame, and a message straddling two frames.
    let mut both = t::grpc_msg(false, b"one");
    both.extend(t::grpc_msg(false, b"two"));
    both.extend(t::grpc_msg(false, b""));
    let third = t::grpc_msg(false, b"three");
    both.extend_from_slice(&third[..4]);
    let ev = Script::new()
        .c(t::headers(3, 0, &req_block("/pkg.Svc/Stream", &[])))
        .c(t::data(3, 0, &both))
        .c(t::data(3, flags::END_STREAM, &third[4..]))
        .events();
    let got: Vec<_> = messages(&ev).into_iter().map(|(_, m)| m.data.expect("data")).collect();
    assert_eq!(
        got,
        vec![
            Bytes::from("one"),
            Bytes::from("two"),
            Bytes::new(),
            Bytes::from("three")
        ]
    );
}

#[test]
fn whole_message_in_one_chunk_is_sliced_not_copied() {
    let chunk = Bytes::from(t::data(1, flags::END_STREAM, &t::grpc_msg(false, b"zero-copy")));
    let mut d = GrpcDecoder::new(Limits::default());
    let mut out = Vec::new();
    let mut start = t::client_start();
    start.extend(t::headers(1, 0, &req_block("/x.Y/Z", &[])));
    d.feed(C, &start, &mut out);
    d.feed(S, &t::settings(&[]), &mut out);
    d.feed_bytes(C, chunk.clone(), &mut out);
    let msg = messages(&out).pop().expect("message").1.data.expect("data");
    assert_eq!(&msg[..], b"zero-copy");
    let base = chunk.as_ptr() as usize;
    let p = msg.as_ptr() as usize;
    assert!(p >= base && p < base + chunk.len(), "payload points into the fed chunk");
}

#[test]
fn padding_on_data_and_headers_and_priority_flag() {
    let mut prio = vec![0, 0, 0, 0, 200];
    prio.extend(req_block("/pkg.Svc/Padded", &[]));
    let ev = Script::new()
        .c(t::frame(
            FrameType::Headers,
            flags::END_HEADERS | flags::PADDED | flags::PRIORITY,
            1,
            &t::padded(&prio, 7),
        ))
        .c(t::frame(
            FrameType::Data,
            flags::PADDED,
            1,
            &t::padded(&t::grpc_msg(false, b"abc"), 255),
        ))
        .c(t::frame(
            FrameType::Data,
            flags::PADDED | flags::END_STREAM,
            1,
            &t::padded(&[], 0),
        ))
        .c(t::frame(FrameType::Priority, 0, 1, &[0, 0, 0, 0, 7]))
        .s(t::frame(
            FrameType::Headers,
            flags::END_HEADERS | flags::PADDED,
            1,
            &t::padded(&resp_block(&[]), 3),
        ))
        .s(t::frame(
            FrameType::Data,
            flags::PADDED,
            1,
            &t::padded(&t::grpc_msg(false, b"de"), 1),
        ))
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")))
        .events();
    let (list, an, gu) = calls(&ev);
    assert!(an.is_empty() && gu.is_empty(), "{an:?} {gu:?}");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].path, "/pkg.Svc/Padded");
    let m = messages(&ev);
    assert_eq!(m[0].1.data.as_deref(), Some(&b"abc"[..]));
    assert_eq!(m[1].1.data.as_deref(), Some(&b"de"[..]));
    assert_eq!(list[0].end, Some(StreamEnd::Complete));
}

#[test]
fn bad_padding_gives_up() {
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/M", &[])))
        .c(t::frame(FrameType::Data, flags::PADDED, 1, &[9, 1, 2]))
        .events();
    assert_eq!(gave_up(&ev), vec![GiveUp::ProtocolError]);
}

#[test]
fn continuation_sequences() {
    let block = req_block("/pkg.Svc/Continued", &[("x-long", &"y".repeat(300))]);
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(100);
    let ev = Script::new()
        .c(t::frame(FrameType::Headers, 0, 1, a))
        .c(t::frame(FrameType::Continuation, 0, 1, b))
        .c(t::frame(FrameType::Continuation, flags::END_HEADERS, 1, c))
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, b"")))
        .s(t::frame(
            FrameType::Headers,
            flags::END_STREAM,
            1,
            &trailer_block("0")[..3],
        ))
        .s(t::frame(
            FrameType::Continuation,
            flags::END_HEADERS,
            1,
            &trailer_block("0")[3..],
        ))
        .events();
    let (list, an, gu) = calls(&ev);
    assert!(an.is_empty() && gu.is_empty(), "{an:?} {gu:?}");
    assert_eq!(list[0].path, "/pkg.Svc/Continued");
    assert_eq!(list[0].status.as_deref(), Some("0"));
    assert_eq!(list[0].end, Some(StreamEnd::Complete));
    // Interleaving another frame inside a header block is a protocol error.
    let ev = Script::new()
        .c(t::frame(FrameType::Headers, 0, 1, a))
        .c(t::data(1, 0, b""))
        .events();
    assert_eq!(gave_up(&ev), vec![GiveUp::ProtocolError]);
    // CONTINUATION out of the blue too.
    let ev = Script::new()
        .c(t::frame(FrameType::Continuation, flags::END_HEADERS, 1, c))
        .events();
    assert_eq!(gave_up(&ev), vec![GiveUp::ProtocolError]);
}

#[test]
fn header_block_too_large_gives_up() {
    let limits = Limits {
        max_header_block: 1024,
        ..Limits::default()
    };
    let block = req_block("/p.S/M", &[("x-big", &"z".repeat(2000))]);
    let (a, b) = block.split_at(600);
    let s = Script::new().c(t::frame(FrameType::Headers, 0, 1, a)).c(t::frame(
        FrameType::Continuation,
        flags::END_HEADERS,
        1,
        b,
    ));
    let ev = s.events_with(limits);
    assert_eq!(gave_up(&ev), vec![GiveUp::HeaderBlockTooLarge]);
    assert!(s.decoder(limits).buffered_bytes() < 1024);
}

#[test]
fn hpack_dynamic_table_across_blocks_and_eviction() {
    // The client indexes its headers, then refers to them by index in later requests.
    let mut enc = loona_hpack::Encoder::new();
    let mut s = Script::new();
    for (i, id) in [1u32, 3, 5, 7].iter().enumerate() {
        let path = format!("/pkg.Svc/Call{i}");
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", path.as_bytes()),
            (b"containerd-namespace", b"moby"),
            (b"x-filler", &[b'f'; 1500]),
        ];
        let block = enc.encode(fields);
        s = s
            .c(t::headers(*id, 0, &block))
            .c(t::data(*id, flags::END_STREAM, &t::grpc_msg(false, b"")))
            .s(t::headers(*id, flags::END_STREAM, &trailer_block("0")));
    }
    let ev = s.events();
    let (list, an, gu) = calls(&ev);
    assert!(an.is_empty() && gu.is_empty(), "{an:?} {gu:?}");
    let paths: Vec<_> = list.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["/pkg.Svc/Call0", "/pkg.Svc/Call1", "/pkg.Svc/Call2", "/pkg.Svc/Call3"]
    );

    // Hand-made: table of 200 bytes holds two 95-byte entries; the third evicts the first,
    // and a later reference to the evicted entry loses sync.
    let v = "v".repeat(60);
    let mut b1 = Vec::new();
    t::size_update(200, &mut b1);
    t::indexed_literal("x-a", &v, &mut b1);
    t::indexed_literal("x-b", &v, &mut b1);
    t::indexed_literal("x-c", &v, &mut b1);
    b1.extend(req_block("/p.S/A", &[]));
    let mut b2 = Vec::new();
    t::indexed(62, &mut b2);
    t::indexed(63, &mut b2);
    b2.extend(req_block("/p.S/B", &[]));
    let mut b3 = Vec::new();
    t::indexed(64, &mut b3);
    let base = Script::new()
        .s(t::settings(&[(setting::HEADER_TABLE_SIZE, 200)]))
        .c(t::settings_ack())
        .c(t::headers(1, flags::END_STREAM, &b1))
        .c(t::headers(3, flags::END_STREAM, &b2));
    let ev = base.clone().events();
    let heads: Vec<&Headers> = ev
        .iter()
        .filter_map(|e| match e {
            GrpcEvent::RequestHeaders { headers, .. } => Some(headers),
            _ => None,
        })
        .collect();
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[1].get("x-c"), Some(v.as_str()));
    assert_eq!(heads[1].get("x-b"), Some(v.as_str()));
    assert_eq!(heads[1].get("x-a"), None);
    let ev = base.c(t::headers(5, flags::END_STREAM, &b3)).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::HpackError]);
}

#[test]
fn settings_header_table_size_bounds_the_other_direction() {
    // The client shrinks the server's table to 0 then allows 100: the server's encoder sends
    // size updates within what was advertised.
    let mut r1 = Vec::new();
    t::size_update(0, &mut r1);
    t::size_update(100, &mut r1);
    t::indexed_literal("x-r", "1", &mut r1);
    r1.extend(resp_block(&[]));
    let s = Script::new()
        .c(t::settings(&[(setting::HEADER_TABLE_SIZE, 100)]))
        .s(t::settings_ack())
        .c(t::headers(1, 0, &req_block("/p.S/M", &[])))
        .s(t::headers(1, 0, &r1));
    let ev = s
        .clone()
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")))
        .events();
    assert!(gave_up(&ev).is_empty(), "{ev:#?}");
    assert!(
        ev.iter()
            .any(|e| matches!(e, GrpcEvent::ResponseHeaders { headers, .. } if headers.get("x-r") == Some("1")))
    );

    // A size update above the acknowledged setting loses sync.
    let mut r2 = Vec::new();
    t::size_update(4096, &mut r2);
    r2.extend(trailer_block("0"));
    let ev = s.clone().s(t::headers(1, flags::END_STREAM, &r2)).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::HpackError]);

    // The client's own SETTINGS do not bound the client's encoder (the server's do).
    let mut q = Vec::new();
    t::size_update(4096, &mut q);
    q.extend(req_block("/p.S/Q", &[]));
    let ev = s.clone().c(t::headers(3, flags::END_STREAM, &q)).events();
    assert!(gave_up(&ev).is_empty());

    // A larger setting not yet acknowledged may already be used.
    let mut big = Vec::new();
    t::size_update(8192, &mut big);
    big.extend(req_block("/p.S/Big", &[]));
    let ev = Script::new()
        .s(t::settings(&[(setting::HEADER_TABLE_SIZE, 8192)]))
        .c(t::headers(1, flags::END_STREAM, &big))
        .events();
    assert!(gave_up(&ev).is_empty(), "{ev:#?}");

    // Past our own cap: a named give-up.
    let mut huge = Vec::new();
    t::size_update(1 << 20, &mut huge);
    huge.extend(req_block("/p.S/Huge", &[]));
    let ev = Script::new()
        .s(t::settings(&[(setting::HEADER_TABLE_SIZE, 1 << 20)]))
        .c(t::settings_ack())
        .c(t::headers(1, flags::END_STREAM, &huge))
        .events();
    assert_eq!(gave_up(&ev), vec![GiveUp::HpackTableTooLarge]);
}

#[test]
fn max_frame_size_comes_from_the_peer() {
    let payload = vec![7u8; 20_000];
    let msg = t::grpc_msg(false, &payload);
    let call = |s: Script| {
        s.c(t::headers(1, 0, &req_block("/p.S/Big", &[])))
            .c(t::data(1, flags::END_STREAM, &msg))
    };
    // Default 16 KiB: too large.
    let ev = call(Script::new()).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::FrameTooLarge]);
    // The server allows 32 KiB.
    let ev = call(
        Script::new()
            .s(t::settings(&[(setting::MAX_FRAME_SIZE, 32_768)]))
            .c(t::settings_ack()),
    )
    .events();
    assert!(gave_up(&ev).is_empty());
    assert_eq!(messages(&ev)[0].1.data.as_deref(), Some(&payload[..]));
    // Its own setting does not let the client send bigger frames.
    let ev = call(Script::new().c(t::settings(&[(setting::MAX_FRAME_SIZE, 32_768)]))).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::FrameTooLarge]);
    // An illegal value.
    let ev = Script::new().s(t::settings(&[(setting::MAX_FRAME_SIZE, 100)])).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::ProtocolError]);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

#[test]
fn gzip_messages_both_ways() {
    let req = b"hello hello hello hello compressed request".repeat(10);
    let resp = b"a compressed response".repeat(20);
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/Gz", &[("grpc-encoding", "gzip")])))
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(true, &gzip(&req))))
        .s(t::headers(1, 0, &resp_block(&[("grpc-encoding", "gzip")])))
        .s(t::data(1, 0, &t::grpc_msg(true, &gzip(&resp))))
        .s(t::data(1, 0, &t::grpc_msg(false, b"plain")))
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")))
        .events();
    let m = messages(&ev);
    assert_eq!(m.len(), 3);
    assert!(m[0].1.compressed);
    assert_eq!(m[0].1.data.as_deref(), Some(&req[..]));
    assert_eq!(m[1].1.data.as_deref(), Some(&resp[..]));
    assert_eq!(m[2].1.data.as_deref(), Some(&b"plain"[..]));
}

#[test]
fn compressed_message_failures_are_skips() {
    let bomb = gzip(&vec![0u8; 100_000]);
    let limits = Limits {
        max_decompressed: 1000,
        ..Limits::default()
    };
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/Gz", &[("grpc-encoding", "gzip")])))
        .c(t::data(1, 0, &t::grpc_msg(true, &bomb)))
        .c(t::data(1, 0, &t::grpc_msg(true, b"not gzip at all")))
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, b"ok")))
        // Compressed flag with no declared encoding.
        .c(t::headers(3, 0, &req_block("/p.S/NoEnc", &[])))
        .c(t::data(3, 0, &t::grpc_msg(true, b"xx")))
        .c(t::headers(
            5,
            0,
            &req_block("/p.S/Snappy", &[("grpc-encoding", "snappy")]),
        ))
        .c(t::data(5, flags::END_STREAM, &t::grpc_msg(true, b"yy")))
        .events_with(limits);
    let skipped: Vec<_> = messages(&ev).into_iter().map(|(_, m)| m.skipped).collect();
    assert_eq!(
        skipped,
        vec![
            Some(SkipReason::DecompressTooLarge),
            Some(SkipReason::DecompressFailed),
            None,
            Some(SkipReason::UnsupportedEncoding),
            Some(SkipReason::UnsupportedEncoding),
        ]
    );
}

#[test]
fn four_gib_length_prefix_costs_nothing() {
    let mut body = vec![0u8, 0xff, 0xff, 0xff, 0xff];
    body.extend(vec![0xab; 16_000]);
    let mut s = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/Huge", &[])))
        .c(t::data(1, 0, &body));
    for _ in 0..16 {
        s = s.c(t::data(1, 0, &vec![0xcd; 16_384]));
    }
    let d = s.decoder(Limits::default());
    assert!(d.buffered_bytes() < 1024, "buffered {}", d.buffered_bytes());
    let ev = run_with(Limits::default(), &s.0, true).0;
    assert!(messages(&ev).is_empty(), "no message completes");
    let cut = GrpcEvent::MessageCut {
        stream: 1,
        direction: C,
        len: u64::from(u32::MAX),
        reason: SkipReason::TooLarge,
    };
    // Ended by a reset: the skipped message is reported once, as too large, then the end.
    let ev = s.clone().c(t::rst(1, 8)).events();
    assert_eq!(
        ev[ev.len() - 2..],
        [
            cut.clone(),
            GrpcEvent::StreamEnd {
                stream: 1,
                end: StreamEnd::Reset { code: 8, by: C }
            }
        ]
    );
    assert_eq!(
        ev.iter().filter(|e| matches!(e, GrpcEvent::MessageCut { .. })).count(),
        1
    );
    // Ended by the connection's end: the same.
    let mut d = s.decoder(Limits::default());
    let mut out = Vec::new();
    d.eof(C, &mut out);
    d.eof(S, &mut out);
    assert_eq!(out.iter().filter(|e| **e == cut).count(), 1, "{out:?}");
    assert!(out.contains(&GrpcEvent::StreamEnd {
        stream: 1,
        end: StreamEnd::ConnectionClosed
    }));
}

/// A message being buffered when its stream is reset is lost: reported as `Truncated`.
#[test]
fn a_buffered_message_cut_by_a_reset_is_reported_truncated() {
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/M", &[])))
        .c(t::data(1, 0, &t::grpc_msg(false, &[7u8; 100])[..50]))
        .c(t::rst(1, 8))
        .events();
    assert!(ev.contains(&GrpcEvent::MessageCut {
        stream: 1,
        direction: C,
        len: 100,
        reason: SkipReason::Truncated
    }));
}

#[test]
fn too_large_message_is_counted_through_and_skipped() {
    let limits = Limits {
        max_message: 100,
        ..Limits::default()
    };
    let s = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/M", &[])))
        .c(t::data(1, 0, &t::grpc_msg(false, &[1u8; 5000])))
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, b"small")));
    let ev = s.events_with(limits);
    let m = messages(&ev);
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].1,
        Message {
            compressed: false,
            len: 5000,
            data: None,
            skipped: Some(SkipReason::TooLarge)
        }
    );
    assert_eq!(m[1].1.data.as_deref(), Some(&b"small"[..]));
    // Debug never prints payload bytes.
    let dbg = format!("{:?}", m[1].1);
    assert!(!dbg.contains("small") && dbg.contains("data_len"), "{dbg}");
}

#[test]
fn connection_buffer_cap_skips_messages() {
    let limits = Limits {
        max_buffered_per_conn: 1000,
        ..Limits::default()
    };
    let half = t::grpc_msg(false, &[3u8; 800]);
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/A", &[])))
        .c(t::data(1, 0, &half[..100]))
        .c(t::headers(3, 0, &req_block("/p.S/B", &[])))
        .c(t::data(3, 0, &half[..100]))
        .c(t::data(1, flags::END_STREAM, &half[100..]))
        .c(t::data(3, flags::END_STREAM, &half[100..]))
        .events_with(limits);
    let skipped: Vec<_> = messages(&ev).into_iter().map(|(_, m)| m.skipped).collect();
    assert_eq!(skipped, vec![None, Some(SkipReason::BufferFull)]);
}

#[test]
fn payloads_off_still_walks_headers_and_boundaries() {
    let s = Script::new().c(t::headers(1, 0, &req_block("/p.S/M", &[])));
    let mut d = GrpcDecoder::new(Limits::default());
    let mut out = Vec::new();
    for (dir, c) in &s.0 {
        if let Chunk::Data(b) = c {
            d.feed(*dir, b, &mut out);
        }
    }
    let msg = t::grpc_msg(false, &[9u8; 300]);
    d.feed(C, &t::data(1, 0, &msg[..100]), &mut out);
    assert!(d.buffered_bytes() >= 300);
    d.set_payloads(false);
    d.feed(C, &t::data(1, 0, &msg[100..]), &mut out);
    d.feed(
        C,
        &t::data(1, flags::END_STREAM, &t::grpc_msg(false, b"next")),
        &mut out,
    );
    d.feed(S, &t::headers(1, 0, &resp_block(&[])), &mut out);
    d.feed(S, &t::headers(1, flags::END_STREAM, &trailer_block("7")), &mut out);
    assert_eq!(d.buffered_bytes(), 0);
    let m = messages(&out);
    assert_eq!(m.len(), 2);
    assert!(
        m.iter()
            .all(|(_, m)| m.data.is_none() && m.skipped == Some(SkipReason::PayloadsOff))
    );
    assert_eq!(m[0].1.len, 300);
    let (list, _, _) = calls(&out);
    assert_eq!(list[0].status.as_deref(), Some("7"));
    assert_eq!(list[0].end, Some(StreamEnd::Complete));
}

#[test]
fn streaming_calls_interleave() {
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/Bidi", &[])))
        .c(t::headers(3, 0, &req_block("/p.S/ServerStream", &[])))
        .c(t::data(3, flags::END_STREAM, &t::grpc_msg(false, b"q")))
        .c(t::data(1, 0, &t::grpc_msg(false, b"a1")))
        .s(t::headers(1, 0, &resp_block(&[])))
        .s(t::headers(3, 0, &resp_block(&[])))
        .s(t::data(3, 0, &t::grpc_msg(false, b"r1")))
        .s(t::data(1, 0, &t::grpc_msg(false, b"b1")))
        .s(t::data(3, 0, &t::grpc_msg(false, b"r2")))
        .c(t::data(1, 0, &t::grpc_msg(false, b"a2")))
        .s(t::headers(3, flags::END_STREAM, &trailer_block("0")))
        .c(t::data(1, flags::END_STREAM, &[]))
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")))
        .events();
    let (list, an, gu) = calls(&ev);
    assert!(an.is_empty() && gu.is_empty());
    assert_eq!(
        (list[0].req, list[0].resp, list[0].end),
        (2, 1, Some(StreamEnd::Complete))
    );
    assert_eq!(
        (list[1].req, list[1].resp, list[1].end),
        (1, 2, Some(StreamEnd::Complete))
    );
}

#[test]
fn rst_stream_mid_call_and_late_frames() {
    let half = t::grpc_msg(false, &[1u8; 1000]);
    let s = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/M", &[])))
        .c(t::data(1, 0, &half[..500]))
        .c(t::rst(1, 8))
        // A frame racing the reset: silently dropped.
        .s(t::headers(1, 0, &resp_block(&[])))
        .c(t::headers(3, flags::END_STREAM, &req_block("/p.S/N", &[])))
        .s(t::rst(3, 2));
    let ev = s.events();
    let (list, an, gu) = calls(&ev);
    assert!(an.is_empty() && gu.is_empty(), "{an:?}");
    assert_eq!(list[0].end, Some(StreamEnd::Reset { code: 8, by: C }));
    assert_eq!(list[1].end, Some(StreamEnd::Reset { code: 2, by: S }));
    assert_eq!(s.decoder(Limits::default()).buffered_bytes(), 0);
}

#[test]
fn goaway_ends_unprocessed_streams() {
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/A", &[])))
        .c(t::headers(3, 0, &req_block("/p.S/B", &[])))
        .c(t::headers(5, 0, &req_block("/p.S/C", &[])))
        .s(t::goaway(1, 0))
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")))
        .c(t::data(1, flags::END_STREAM, &[]))
        .events();
    let (list, _, gu) = calls(&ev);
    assert!(gu.is_empty());
    let ends: Vec<_> = list.iter().map(|c| c.end).collect();
    assert_eq!(
        ends,
        vec![
            Some(StreamEnd::Complete),
            Some(StreamEnd::GoAway),
            Some(StreamEnd::GoAway)
        ]
    );
}

#[test]
fn eof_ends_open_streams() {
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/Watch", &[])))
        .c(t::data(1, 0, &t::grpc_msg(false, &[1, 2, 3])[..4]))
        .c(t::headers(3, flags::END_STREAM, &req_block("/p.S/Quick", &[])))
        .s(t::headers(3, flags::END_STREAM, &trailer_block("0")))
        .c(t::headers(5, flags::END_STREAM, &req_block("/p.S/Slow", &[])))
        .eof(C)
        .s(t::headers(5, flags::END_STREAM, &trailer_block("4")))
        .eof(S)
        .events();
    let (list, _, _) = calls(&ev);
    let ends: Vec<_> = list
        .iter()
        .map(|c| (c.path.as_str(), c.status.as_deref(), c.end))
        .collect();
    assert_eq!(
        ends,
        vec![
            ("/p.S/Watch", None, Some(StreamEnd::ConnectionClosed)),
            ("/p.S/Quick", Some("0"), Some(StreamEnd::Complete)),
            ("/p.S/Slow", Some("4"), Some(StreamEnd::Complete)),
        ]
    );
    // A half-sent frame at EOF is noted.
    let ev = Script::new()
        .c(t::headers(1, 0, &req_block("/p.S/M", &[]))[..5].to_vec())
        .eof(C)
        .events();
    assert_eq!(anomalies(&ev), vec![Anomaly::TruncatedFrame]);
}

#[test]
fn too_many_streams_gives_up() {
    let limits = Limits {
        max_streams: 3,
        ..Limits::default()
    };
    let mut s = Script::new();
    for id in [1u32, 3, 5, 7] {
        s = s.c(t::headers(id, 0, &req_block("/p.S/M", &[])));
    }
    let ev = s.clone().events_with(limits);
    assert_eq!(gave_up(&ev), vec![GiveUp::TooManyStreams]);
    let mut d = s.decoder(limits);
    assert_eq!(d.gave_up(), Some(GiveUp::TooManyStreams));
    assert_eq!(d.open_streams(), 0);
    // Once given up, everything else is ignored.
    let mut out = Vec::new();
    d.feed(C, b"anything at all", &mut out);
    d.eof(C, &mut out);
    assert!(out.is_empty());
}

#[test]
fn garbage_preface_or_after_preface_gives_up() {
    let ev = Script::raw().c(b"GET / HTTP/1.1\r\n\r\n".to_vec()).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::BadPreface]);
    let mut v = crate::wire::h2::frame::PREFACE.to_vec();
    v.extend_from_slice(b"\x00\x00\x00\x01garbage garbage garbage");
    let ev = Script::raw().c(v).events();
    assert_eq!(gave_up(&ev).len(), 1);
    // The server's first frame must be SETTINGS.
    let ev = Script::raw().c(t::client_start()).s(t::rst(1, 0)).events();
    assert_eq!(gave_up(&ev), vec![GiveUp::BadPreface]);
}

#[test]
fn unknown_frames_and_oddities_are_anomalies() {
    let ev = Script::new()
        .c(t::frame(FrameType::Unknown(0xfa), 0, 0, b"extension payload"))
        .c(t::frame(FrameType::Ping, 0, 0, &[0; 8]))
        .s(t::frame(FrameType::Ping, flags::ACK, 0, &[0; 8]))
        .c(t::frame(FrameType::WindowUpdate, 0, 0, &[0, 1, 0, 0]))
        .c(t::headers(2, 0, &req_block("/p.S/Even", &[])))
        .c(t::headers(1, 0, &req_block("/p.S/M", &[])))
        .c(t::data(1, flags::END_STREAM, &t::grpc_msg(false, &[1, 2, 3])[..6]))
        .s(t::data(9, 0, b"nope"))
        .s(t::frame(FrameType::PushPromise, flags::END_HEADERS, 1, &{
            let mut p = vec![0, 0, 0, 2];
            p.extend(req_block("/pushed", &[]));
            p
        }))
        .s(t::headers(1, flags::END_STREAM, &trailer_block("0")))
        .events();
    assert_eq!(
        anomalies(&ev),
        vec![
            Anomaly::UnknownFrameType,
            Anomaly::BadStreamId,
            Anomaly::TruncatedMessage,
            Anomaly::UnknownStream,
            Anomaly::PushPromise,
        ]
    );
    assert!(gave_up(&ev).is_empty());
    for a in anomalies(&ev) {
        assert!(!a.as_str().is_empty());
    }
}

/// Throughput on the largest capture (run with `--release --ignored --nocapture`).
#[test]
#[ignore]
fn throughput_dockerd_capture() {
    let chunks = load("dockerd-to-containerd");
    let bytes = capture_len(&chunks);
    let rounds = 200;
    let start = std::time::Instant::now();
    let mut events = 0;
    for _ in 0..rounds {
        events += run(&chunks, true).len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.0} MiB/s, {:.0} events/s",
        (bytes * rounds) as f64 / secs / (1 << 20) as f64,
        events as f64 / secs
    );
}

#[test]
fn labels_are_snake_case() {
    let all = [
        GiveUp::BadPreface,
        GiveUp::FrameTooLarge,
        GiveUp::HpackError,
        GiveUp::HpackTableTooLarge,
        GiveUp::HeaderBlockTooLarge,
        GiveUp::TooManyStreams,
        GiveUp::ProtocolError,
    ];
    for g in all {
        assert!(g.as_str().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        assert_eq!(g.to_string(), g.to_string().to_lowercase());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        c2s in proptest::collection::vec(any::<u8>(), 0..2000),
        s2c in proptest::collection::vec(any::<u8>(), 0..2000),
        with_preface in any::<bool>(),
        cut in 1usize..64,
    ) {
        let mut first = if with_preface { t::client_start() } else { Vec::new() };
        first.extend(&c2s);
        let mut server = t::settings(&[]);
        server.extend(&s2c);
        let chunks = rechunk(&[(C, Chunk::Data(first.into())), (S, Chunk::Data(server.into())), (C, Chunk::Eof), (S, Chunk::Eof)], cut);
        let (_, d) = run_with(Limits::default(), &chunks, true);
        prop_assert!(d.buffered_bytes() <= 2 * (DEFAULT_MAX_HEADER_BLOCK + 300));
    }

    #[test]
    fn random_frames_never_panic(
        frames in proptest::collection::vec(
            (0u8..12, any::<u8>(), 0u32..8, proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()),
            0..40,
        ),
    ) {
        // Structurally valid frame headers with random types, flags, ids and payloads.
        let mut s = Script::new();
        for (kind, fl, id, payload, to_server) in frames {
            let f = t::frame(FrameType::from_u8(kind), fl, id, &payload);
            s = if to_server { s.c(f) } else { s.s(f) };
        }
        let events = run(&s.0, true);
        let gave: Vec<_> = gave_up(&events);
        prop_assert!(gave.len() <= 1);
        // Same events one byte at a time.
        prop_assert_eq!(run(&rechunk(&s.0, 1), false), events);
    }
}

#[test]
fn debug_output_never_shows_bytes() {
    let secret = b"SECRET-PAYLOAD-SECRET";
    let msg = t::grpc_msg(false, secret);
    let s = Script::new()
        .c(t::headers(
            1,
            0,
            &req_block("/p.S/M", &[("authorization", "Bearer SECRET-TOKEN")]),
        ))
        .c(t::data(1, 0, &msg[..12]))
        .c(t::frame(
            FrameType::Headers,
            0,
            3,
            &req_block("/p.S/N", &[("x-k", "SECRET-HDR")]),
        ));
    let d = s.decoder(Limits::default());
    let dbg = format!("{d:?}");
    assert!(!dbg.contains("SECRET"), "{dbg}");
    let ev = run(&s.0, true);
    let dbg = format!("{ev:?}");
    assert!(!dbg.contains("SECRET"), "{dbg}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Real traffic with a few bytes corrupted: never a panic, memory stays bounded, at most
    /// one give-up, and events after a give-up never come.
    #[test]
    fn corrupted_captures_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in 1usize..200,
    ) {
        let name = ["ctr-version", "cri-pod-lifecycle", "ctr-containers-delete"][which];
        let mut chunks = load(name);
        let total = capture_len(&chunks);
        for (at, x) in flips {
            let at = at % total;
            let mut offset = 0;
            for (_, c) in chunks.iter_mut() {
                if let Chunk::Data(b) = c {
                    if at >= offset && at < offset + b.len() {
                        let mut v = b.to_vec();
                        v[at - offset] ^= x | 1;
                        *b = Bytes::from(v);
                    }
                    offset += b.len();
                }
            }
        }
        let chunks = rechunk(&chunks, cut);
        let (events, d) = run_with(Limits::default(), &chunks, true);
        // Message reservations (a corrupted length prefix may reserve up to max_message) plus
        // the HTTP/2 buffers.
        prop_assert!(
            d.buffered_bytes()
                <= DEFAULT_MAX_BUFFERED_PER_CONN + 2 * (DEFAULT_MAX_HEADER_BLOCK + 300)
        );
        let gave = events.iter().position(|e| matches!(e, GrpcEvent::GaveUp(_)));
        if let Some(i) = gave {
            prop_assert_eq!(i, events.len() - 1, "nothing after a give-up");
        }
        prop_assert_eq!(run(&rechunk(&chunks, 1), false), events);
    }
}

/// Regression (fuzz target `grpc_frames`): a direction that ended inside a frame while a
/// header block waited for its CONTINUATION kept that block buffered after its EOF.
#[test]
fn eof_mid_frame_releases_a_pending_header_block() {
    let mut d = GrpcDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(C, &t::client_start(), &mut out);
    d.feed(S, &t::settings(&[]), &mut out);
    // HEADERS without END_HEADERS: its block waits for a CONTINUATION...
    d.feed(C, &t::frame(FrameType::Headers, 0, 1, &[0x83, 0x86]), &mut out);
    // ...and the client ends inside the next frame header.
    d.feed(C, &[0, 0, 4], &mut out);
    assert!(d.buffered_bytes() > 0);
    d.eof(C, &mut out);
    assert_eq!(d.buffered_bytes(), 0, "pending header block kept after EOF");
    assert_eq!(
        out.iter()
            .filter(|e| matches!(e, GrpcEvent::Anomaly(Anomaly::TruncatedFrame)))
            .count(),
        1
    );
}
