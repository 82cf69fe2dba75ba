//! gRPC framing on crafted, valid HTTP/2 conversations: the input is a script of operations
//! (open a call, send a message — plain, gzip or deflate, split over DATA frames at
//! fuzz-chosen sizes, padded or not — respond, trailers, half-close, reset, GOAWAY, PING,
//! raw bytes), encoded to frames here and fed to `GrpcDecoder` with fuzz-chosen read splits.
//! This reaches message reassembly and decompression, which raw bytes rarely do.
//! Properties: no panic; buffers within bounds; and as an oracle, when the script used no
//! raw bytes, resets or GOAWAY, the decoder reports exactly the messages sent, in order, with
//! the bytes sent (decompressed) or the documented skip reason.
#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;
use runtime_tap::wire::Direction;
use runtime_tap::wire::grpc::{GrpcDecoder, GrpcEvent, Limits, SkipReason};
use runtime_tap::wire::h2::frame::{FrameHeader, FrameType, PREFACE, flags};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

const PATHS: &[&str] = &[
    "/runtime.v1.RuntimeService/RunPodSandbox",
    "/runtime.v1.ImageService/PullImage",
    "/containerd.services.tasks.v1.Tasks/Start",
    "/containerd.services.containers.v1.Containers/Create",
    "/containerd.services.events.v1.Events/Subscribe",
    "/grpc.health.v1.Health/Check",
];
const ENCODINGS: &[Option<&str>] = &[None, Some("identity"), Some("gzip"), Some("deflate"), Some("snappy")];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

fn frame(out: &mut Vec<u8>, kind: FrameType, flag_bits: u8, stream: u32, payload: &[u8]) {
    let hdr = FrameHeader {
        len: payload.len() as u32,
        kind,
        flags: flag_bits,
        stream,
    };
    out.extend_from_slice(&hdr.encode());
    out.extend_from_slice(payload);
}

/// HPACK: literal with incremental indexing (new name) when `index`, else without indexing.
fn literal(block: &mut Vec<u8>, name: &str, value: &str, index: bool) {
    block.push(if index { 0x40 } else { 0x00 });
    for s in [name, value] {
        assert!(s.len() < 127);
        block.push(s.len() as u8);
        block.extend_from_slice(s.as_bytes());
    }
}

/// A header block sent as HEADERS (+ CONTINUATIONs when `split` > 0).
fn headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, split: usize) {
    let es = if end_stream { flags::END_STREAM } else { 0 };
    if split == 0 || split >= block.len() {
        frame(out, FrameType::Headers, es | flags::END_HEADERS, stream, block);
        return;
    }
    let mut pieces = block.chunks(split).peekable();
    let first = pieces.next().unwrap_or_default();
    frame(out, FrameType::Headers, es, stream, first);
    while let Some(p) = pieces.next() {
        let eh = if pieces.peek().is_none() { flags::END_HEADERS } else { 0 };
        frame(out, FrameType::Continuation, eh, stream, p);
    }
}

struct Call {
    id: u32,
    enc: [usize; 2],
    /// END_STREAM sent per direction.
    done: [bool; 2],
    responded: bool,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Data(Vec<u8>),
    Skip(SkipReason),
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    // (direction, bytes, split point within them)
    let mut wire: Vec<(Direction, Vec<u8>, usize)> = Vec::new();
    let mut emit = |dir: Direction, bytes: Vec<u8>, split: u8| wire.push((dir, bytes, usize::from(split)));
    let mut start = PREFACE.to_vec();
    frame(&mut start, FrameType::Settings, 0, 0, &[]);
    emit(C2S, start, 0);
    let mut s = Vec::new();
    frame(&mut s, FrameType::Settings, 0, 0, &[]);
    emit(S2C, s, 0);

    let mut calls: Vec<Call> = Vec::new();
    let mut next_id = 1u32;
    let mut oracle = true;
    let mut expect: Vec<(Direction, u32, Expect)> = Vec::new();
    while let Some(op) = inp.byte() {
        let split = inp.byte().unwrap_or(0);
        let pick = |calls: &[Call], b: u8| (!calls.is_empty()).then(|| usize::from(b) % calls.len());
        let mut out = Vec::new();
        match op % 10 {
            0 => {
                // Open a call.
                if next_id > 200 {
                    continue;
                }
                let b = inp.byte().unwrap_or(0);
                let enc = usize::from(b >> 4) % ENCODINGS.len();
                let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
                literal(&mut block, ":path", PATHS[usize::from(b & 7) % PATHS.len()], b & 8 != 0);
                literal(&mut block, "content-type", "application/grpc", b & 8 != 0);
                if let Some(e) = ENCODINGS[enc] {
                    literal(&mut block, "grpc-encoding", e, false);
                }
                headers(&mut out, next_id, &block, false, usize::from(split % 16));
                calls.push(Call {
                    id: next_id,
                    enc: [enc, 0],
                    done: [false; 2],
                    responded: false,
                });
                next_id += 2;
                emit(C2S, out, split);
            }
            1 | 3 => {
                // A message on a call, either direction.
                let dir = if op % 10 == 1 { C2S } else { S2C };
                let Some(k) = pick(&calls, inp.byte().unwrap_or(0)) else {
                    continue;
                };
                let b = inp.byte().unwrap_or(0);
                let len = usize::from(inp.byte().unwrap_or(0));
                let payload = inp.bytes(len).to_vec();
                let enc = calls[k].enc[dir.index()];
                let compress = b & 1 != 0;
                let body = match (compress, ENCODINGS[enc]) {
                    (true, Some("gzip")) => {
                        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        e.write_all(&payload).unwrap();
                        e.finish().unwrap()
                    }
                    (true, Some("deflate")) => {
                        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                        e.write_all(&payload).unwrap();
                        e.finish().unwrap()
                    }
                    _ => payload.clone(),
                };
                let e = match (compress, ENCODINGS[enc]) {
                    (false, _) | (true, Some("gzip" | "deflate")) => Expect::Data(payload),
                    (true, _) => Expect::Skip(SkipReason::UnsupportedEncoding),
                };
                // The decoder ignores DATA after a direction's END_STREAM (an anomaly).
                if !calls[k].done[dir.index()] {
                    expect.push((dir, calls[k].id, e));
                }
                let mut msg = vec![u8::from(compress)];
                msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
                msg.extend_from_slice(&body);
                // DATA frames of fuzz-chosen size, padded when bit 1 says so.
                let size = usize::from(b >> 2).max(1);
                for piece in msg.chunks(size) {
                    if b & 2 != 0 {
                        let mut p = vec![3u8];
                        p.extend_from_slice(piece);
                        p.extend_from_slice(&[0; 3]);
                        frame(&mut out, FrameType::Data, flags::PADDED, calls[k].id, &p);
                    } else {
                        frame(&mut out, FrameType::Data, 0, calls[k].id, piece);
                    }
                }
                emit(dir, out, split);
            }
            2 => {
                // Response headers.
                let Some(k) = pick(&calls, inp.byte().unwrap_or(0)) else {
                    continue;
                };
                let b = inp.byte().unwrap_or(0);
                let enc = usize::from(b) % ENCODINGS.len();
                let mut block = vec![0x88]; // :status 200
                literal(&mut block, "content-type", "application/grpc", false);
                if let Some(e) = ENCODINGS[enc] {
                    literal(&mut block, "grpc-encoding", e, b & 8 != 0);
                }
                if calls[k].responded || calls[k].done[1] {
                    // Later server headers are trailers to the decoder.
                    continue;
                }
                calls[k].responded = true;
                calls[k].enc[1] = enc;
                headers(&mut out, calls[k].id, &block, false, usize::from(split % 8));
                emit(S2C, out, split);
            }
            4 => {
                // Trailers: the call's server side ends.
                let Some(k) = pick(&calls, inp.byte().unwrap_or(0)) else {
                    continue;
                };
                let mut block = Vec::new();
                literal(&mut block, "grpc-status", "0", false);
                headers(&mut out, calls[k].id, &block, true, 0);
                calls[k].done[1] = true;
                emit(S2C, out, split);
            }
            5 => {
                // Client half-close.
                let Some(k) = pick(&calls, inp.byte().unwrap_or(0)) else {
                    continue;
                };
                frame(&mut out, FrameType::Data, flags::END_STREAM, calls[k].id, &[]);
                calls[k].done[0] = true;
                emit(C2S, out, split);
            }
            6 => {
                let Some(k) = pick(&calls, inp.byte().unwrap_or(0)) else {
                    continue;
                };
                frame(&mut out, FrameType::RstStream, 0, calls[k].id, &8u32.to_be_bytes());
                oracle = false;
                emit(if split & 1 == 0 { C2S } else { S2C }, out, split);
            }
            7 => {
                let mut p = Vec::new();
                p.extend_from_slice(&(next_id / 2).to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                frame(&mut out, FrameType::GoAway, 0, 0, &p);
                oracle = false;
                emit(S2C, out, split);
            }
            8 => {
                frame(&mut out, FrameType::Ping, 0, 0, &[split; 8]);
                frame(&mut out, FrameType::WindowUpdate, 0, 0, &1000u32.to_be_bytes());
                frame(&mut out, FrameType::Settings, flags::ACK, 0, &[]);
                emit(if split & 1 == 0 { C2S } else { S2C }, out, split);
            }
            _ => {
                // Raw bytes: anything goes, the oracle is off.
                let len = usize::from(inp.byte().unwrap_or(0) % 32);
                oracle = false;
                emit(if split & 1 == 0 { C2S } else { S2C }, inp.bytes(len).to_vec(), split);
            }
        }
    }

    let limits = Limits::default();
    let mut dec = GrpcDecoder::new(limits);
    let mut events = Vec::new();
    for (dir, bytes, split) in &wire {
        let (a, b) = bytes.split_at((*split).min(bytes.len()));
        for piece in [a, b] {
            if !piece.is_empty() {
                dec.feed(*dir, piece, &mut events);
            }
        }
        assert!(dec.buffered_bytes() <= runtime_tap_fuzz::grpc_buffer_bound(&limits));
    }
    dec.eof(C2S, &mut events);
    dec.eof(S2C, &mut events);
    assert!(
        dec.buffered_bytes() == 0,
        "{} bytes held after both EOFs: {events:?}\nwire: {wire:?}",
        dec.buffered_bytes()
    );
    if !oracle {
        return;
    }
    assert!(
        !events.iter().any(|e| matches!(e, GrpcEvent::GaveUp(_))),
        "gave up on a valid conversation: {events:?}"
    );
    let got: Vec<(Direction, u32, Expect)> = events
        .into_iter()
        .filter_map(|e| {
            let (dir, stream, m) = match e {
                GrpcEvent::RequestMessage { stream, message } => (C2S, stream, message),
                GrpcEvent::ResponseMessage { stream, message } => (S2C, stream, message),
                _ => return None,
            };
            let e = match (m.data, m.skipped) {
                (Some(d), None) => Expect::Data(d.to_vec()),
                (None, Some(r)) => Expect::Skip(r),
                other => panic!("message with {other:?}"),
            };
            Some((dir, stream, e))
        })
        .collect();
    assert!(
        got == expect,
        "messages differ from those sent:\n{got:?}\nvs\n{expect:?}"
    );
});
