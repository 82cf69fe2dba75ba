//! Test-only: gRPC messages out of the recorded captures, by a deliberately naive HTTP/2 reader
//! (whole byte stream per direction, frames in order, HPACK via loona-hpack for `:path`).
//! Not the wire decoder: just enough to feed the schema tests with real payloads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::Side;

/// One gRPC message of a capture.
#[derive(Clone, Debug)]
pub struct GrpcMessage {
    pub file: String,
    pub stream: u32,
    /// `:path` of the stream's request headers.
    pub path: String,
    pub side: Side,
    pub payload: Vec<u8>,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const CONTINUATION: u8 = 9;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;

pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures")
}

/// The gRPC captures of containerd 1.6, dockerd 20.10, ctr 1.6 and a CRI client (every
/// `*.jsonl` at the top of the captures folder).
pub fn grpc_capture_files() -> Vec<String> {
    grpc_capture_files_in("")
}

/// The `*.jsonl` captures in `folder` below the captures folder (`containerd-2.1`), as
/// paths relative to it (`containerd-2.1/ctr-images-pull.jsonl`) that [`capture_messages`]
/// takes, sorted.
pub fn grpc_capture_files_in(folder: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(captures_dir().join(folder))
        .expect("captures folder")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let rel = if folder.is_empty() {
                name.clone()
            } else {
                format!("{folder}/{name}")
            };
            name.ends_with(".jsonl").then_some(rel)
        })
        .collect();
    files.sort();
    files
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Both directions' bytes of a capture file: (client to server, server to client).
fn read_capture(file: &str) -> (Vec<u8>, Vec<u8>) {
    let text = std::fs::read_to_string(captures_dir().join(file)).expect("capture file");
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let Some(b64) = v["b64"].as_str() else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
        match v["dir"].as_str() {
            Some("c2s") => c2s.extend(bytes),
            Some("s2c") => s2c.extend(bytes),
            other => panic!("unknown dir {other:?}"),
        }
    }
    (c2s, s2c)
}

fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        if bytes.len() < 9 + len {
            break; // a cut at the end of the capture
        }
        out.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream,
            payload: bytes[9..9 + len].to_vec(),
        });
        bytes = &bytes[9 + len..];
    }
    out
}

/// The frame payload without padding (and priority fields for HEADERS).
fn unpadded(frame: &Frame) -> &[u8] {
    let mut p = frame.payload.as_slice();
    let mut pad = 0;
    if frame.flags & FLAG_PADDED != 0 {
        pad = usize::from(p[0]);
        p = &p[1..];
    }
    if frame.kind == HEADERS && frame.flags & FLAG_PRIORITY != 0 {
        p = &p[5..];
    }
    &p[..p.len() - pad]
}

fn header_table_sizes(frames: &[Frame]) -> Option<usize> {
    frames
        .iter()
        .filter(|f| f.kind == SETTINGS && f.flags & FLAG_ACK == 0)
        .flat_map(|f| f.payload.chunks_exact(6).map(|s| (u16::from_be_bytes([s[0], s[1]]), s)))
        .filter(|(id, _)| *id == SETTINGS_HEADER_TABLE_SIZE)
        .map(|(_, s)| u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize)
        .max()
}

/// Per stream: decoded header blocks and concatenated DATA.
#[derive(Default)]
struct StreamBytes {
    headers: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    data: Vec<u8>,
}

fn walk(frames: &[Frame], decoder: &mut loona_hpack::Decoder<'_>) -> BTreeMap<u32, StreamBytes> {
    let mut streams: BTreeMap<u32, StreamBytes> = BTreeMap::new();
    let mut block: Option<(u32, Vec<u8>)> = None;
    for f in frames {
        match f.kind {
            HEADERS | CONTINUATION => {
                let fragment = if f.kind == HEADERS {
                    unpadded(f)
                } else {
                    f.payload.as_slice()
                };
                let (_, buf) = block.get_or_insert_with(|| (f.stream, Vec::new()));
                buf.extend_from_slice(fragment);
                if f.flags & FLAG_END_HEADERS != 0 {
                    let (stream, buf) = block.take().expect("open block");
                    let headers = decoder.decode(&buf).expect("hpack block decodes");
                    streams.entry(stream).or_default().headers.push(headers);
                }
            }
            DATA => streams.entry(f.stream).or_default().data.extend_from_slice(unpadded(f)),
            _ => {}
        }
    }
    streams
}

/// Splits gRPC length-prefixed messages (uncompressed only, as in the captures).
fn grpc_messages(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 5 {
        assert_eq!(data[0], 0, "compressed gRPC message in a capture");
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() < 5 + len {
            break;
        }
        out.push(data[5..5 + len].to_vec());
        data = &data[5 + len..];
    }
    out
}

/// Every gRPC message of one capture file (a path relative to the captures folder), request
/// and response sides, by stream.
pub fn capture_messages(file: &str) -> Vec<GrpcMessage> {
    let (c2s, s2c) = read_capture(file);
    let c2s = c2s.strip_prefix(PREFACE).expect("HTTP/2 preface");
    let (cf, sf) = (frames(c2s), frames(&s2c));
    let mut cdec = loona_hpack::Decoder::new();
    let mut sdec = loona_hpack::Decoder::new();
    // A side's SETTINGS_HEADER_TABLE_SIZE bounds the encoder of the other side.
    if let Some(n) = header_table_sizes(&sf) {
        cdec.set_max_allowed_table_size(n);
    }
    if let Some(n) = header_table_sizes(&cf) {
        sdec.set_max_allowed_table_size(n);
    }
    let requests = walk(&cf, &mut cdec);
    let mut responses = walk(&sf, &mut sdec);
    let mut paths = HashMap::new();
    let mut out = Vec::new();
    for (stream, req) in &requests {
        let path = req
            .headers
            .first()
            .and_then(|h| h.iter().find(|(k, _)| k == b":path"))
            .map(|(_, v)| String::from_utf8(v.clone()).expect("utf-8 path"))
            .expect(":path");
        paths.insert(*stream, path.clone());
        for payload in grpc_messages(&req.data) {
            out.push(GrpcMessage {
                file: file.to_owned(),
                stream: *stream,
                path: path.clone(),
                side: Side::Request,
                payload,
            });
        }
        if let Some(resp) = responses.remove(stream) {
            for payload in grpc_messages(&resp.data) {
                out.push(GrpcMessage {
                    file: file.to_owned(),
                    stream: *stream,
                    path: path.clone(),
                    side: Side::Response,
                    payload,
                });
            }
        }
    }
    out
}
