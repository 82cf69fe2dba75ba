//! Test support for the HTTP/2 and gRPC decoders: captures as refcounted chunks (on top of
//! the shared loader in `wire::testutil`) cut at chosen offsets, and a tiny HTTP/2 frame, HPACK
//! literal and gRPC message encoder for crafted streams.

use bytes::Bytes;

use crate::wire::Direction;
use crate::wire::h2::frame::{FrameHeader, FrameType, PREFACE, flags};
use crate::wire::testutil::{Segment, capture_path, load_capture};

/// One recorded read as a refcounted chunk (so `feed_bytes` can slice it), or that
/// direction's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes as one read returned them.
    Data(Bytes),
    /// That direction half-closed.
    Eof,
}

/// Load `tests/fixtures/captures/<name>.jsonl` as chunks.
pub fn load(name: &str) -> Vec<(Direction, Chunk)> {
    load_capture(&capture_path(&format!("{name}.jsonl")))
        .into_iter()
        .map(|(dir, seg)| match seg {
            Segment::Data(v) => (dir, Chunk::Data(Bytes::from(v))),
            Segment::Eof => (dir, Chunk::Eof),
        })
        .collect()
}

/// Total data bytes in a capture.
pub fn capture_len(chunks: &[(Direction, Chunk)]) -> usize {
    chunks
        .iter()
        .map(|(_, c)| match c {
            Chunk::Data(b) => b.len(),
            Chunk::Eof => 0,
        })
        .sum()
}

/// The same chunks with the data chunk holding global byte offset `at` cut in two there
/// (offsets count data bytes of both directions in order).
pub fn split_at(chunks: &[(Direction, Chunk)], at: usize) -> Vec<(Direction, Chunk)> {
    let mut out = Vec::with_capacity(chunks.len() + 1);
    let mut offset = 0usize;
    for (dir, chunk) in chunks {
        match chunk {
            Chunk::Data(b) if at > offset && at < offset + b.len() => {
                let cut = at - offset;
                out.push((*dir, Chunk::Data(b.slice(..cut))));
                out.push((*dir, Chunk::Data(b.slice(cut..))));
                offset += b.len();
            }
            Chunk::Data(b) => {
                offset += b.len();
                out.push((*dir, chunk.clone()));
            }
            Chunk::Eof => out.push((*dir, Chunk::Eof)),
        }
    }
    out
}

/// The same chunks with every data chunk cut into pieces of at most `size` bytes.
pub fn rechunk(chunks: &[(Direction, Chunk)], size: usize) -> Vec<(Direction, Chunk)> {
    let size = size.max(1);
    let mut out = Vec::new();
    for (dir, chunk) in chunks {
        match chunk {
            Chunk::Data(b) => {
                let mut start = 0;
                while start < b.len() {
                    let end = (start + size).min(b.len());
                    out.push((*dir, Chunk::Data(b.slice(start..end))));
                    start = end;
                }
            }
            Chunk::Eof => out.push((*dir, Chunk::Eof)),
        }
    }
    out
}

/// One frame: header + payload.
pub fn frame(kind: FrameType, flag_bits: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let hdr = FrameHeader {
        len: u32::try_from(payload.len()).expect("payload fits"),
        kind,
        flags: flag_bits,
        stream,
    };
    let mut out = hdr.encode().to_vec();
    out.extend_from_slice(payload);
    out
}

/// SETTINGS with these (id, value) pairs.
pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in pairs {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(FrameType::Settings, 0, 0, &p)
}

/// SETTINGS ACK.
pub fn settings_ack() -> Vec<u8> {
    frame(FrameType::Settings, flags::ACK, 0, &[])
}

/// The client preface followed by an empty SETTINGS.
pub fn client_start() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(settings(&[]));
    v
}

/// HEADERS with END_HEADERS (plus `extra` flags).
pub fn headers(stream: u32, extra: u8, block: &[u8]) -> Vec<u8> {
    frame(FrameType::Headers, flags::END_HEADERS | extra, stream, block)
}

/// DATA.
pub fn data(stream: u32, extra: u8, payload: &[u8]) -> Vec<u8> {
    frame(FrameType::Data, extra, stream, payload)
}

/// Padded payload: pad length byte, `body`, `pad` zero bytes.
pub fn padded(body: &[u8], pad: u8) -> Vec<u8> {
    let mut v = vec![pad];
    v.extend_from_slice(body);
    v.extend(std::iter::repeat_n(0u8, usize::from(pad)));
    v
}

/// RST_STREAM.
pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(FrameType::RstStream, 0, stream, &code.to_be_bytes())
}

/// GOAWAY with a little debug data.
pub fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut p = last.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(b"bye");
    frame(FrameType::GoAway, 0, 0, &p)
}

/// A gRPC length-prefixed message.
pub fn grpc_msg(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(compressed)];
    v.extend_from_slice(&u32::try_from(payload.len()).expect("fits").to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// HPACK integer with an `n`-bit prefix, first byte or-ed with `first`.
pub fn hpack_int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literals without indexing, new names, no Huffman: leaves the dynamic
/// table untouched.
pub fn literal_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in pairs {
        out.push(0x00);
        hpack_int(0, 7, n.len(), &mut out);
        out.extend_from_slice(n.as_bytes());
        hpack_int(0, 7, v.len(), &mut out);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// A literal with incremental indexing (new name): adds the field to the dynamic table.
pub fn indexed_literal(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(0x40);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// A dynamic table size update.
pub fn size_update(size: usize, out: &mut Vec<u8>) {
    hpack_int(0x20, 5, size, out);
}

/// An indexed field (1-based, static then dynamic).
pub fn indexed(index: usize, out: &mut Vec<u8>) {
    hpack_int(0x80, 7, index, out);
}
