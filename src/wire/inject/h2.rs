//! HTTP/2 requests: one literal header field without indexing (`0x00`, new name, no Huffman)
//! appended to the header block of each client request that has no `traceparent`, so neither
//! side's HPACK dynamic table changes. The field goes at the end of the block's last frame
//! (before its padding, the frame length adjusted); when that frame would pass the server's
//! SETTINGS_MAX_FRAME_SIZE it goes in one added CONTINUATION frame instead (END_HEADERS moved
//! to it). Every client header block is decoded (one HPACK decoder, client direction) to see
//! whether a `traceparent` is there and to keep the table in step; the server's bytes are
//! walked only for its SETTINGS. Anything it cannot follow makes it give up.

use bytes::{Bytes, BytesMut};

use super::{Emit, GiveUpReason, Injection, MAX_HELD, Mint, TRACEPARENT};
use crate::wire::grpc::{DEFAULT_MAX_HEADER_LIST, DEFAULT_MAX_HPACK_TABLE};
use crate::wire::h2::frame::{
    self, DEFAULT_HEADER_TABLE_SIZE, DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_LEN, FrameHeader, FrameType,
    MAX_MAX_FRAME_SIZE, PREFACE, flags, setting,
};
use crate::wire::h2::hpack::{ENTRY_OVERHEAD, HpackDecoder};

/// Longest SETTINGS payload followed on the server side (64 settings); a longer one makes
/// the rewriter give up.
const MAX_SETTINGS_PAYLOAD: usize = 6 * 64;

/// The HPACK representation of `traceparent: value`: literal without indexing, new name,
/// raw strings (a W3C value is 55 bytes, one length byte; the hook's value is opaque here,
/// so a longer one gets its multi-byte length).
pub fn literal_field(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + TRACEPARENT.len() + value.len());
    out.push(0x00);
    raw_string(TRACEPARENT.as_bytes(), &mut out);
    raw_string(value.as_bytes(), &mut out);
    out
}

/// An HPACK string literal without Huffman: H = 0, the length as a 7-bit-prefix integer
/// (RFC 7541 §5.1), the bytes.
fn raw_string(s: &[u8], out: &mut Vec<u8>) {
    let mut len = s.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

/// Where the client side stands.
enum Client {
    /// Inside the connection preface: bytes left.
    Preface(usize),
    /// Collecting a frame header (held back until complete).
    Header,
    /// Forwarding a frame payload as it comes: bytes left.
    Skip(usize),
    /// Holding a HEADERS or CONTINUATION payload: bytes left.
    Hold(usize),
}

/// A header block being held: its frames, raw.
struct Block {
    stream: u32,
    /// A new client stream (a request), not trailers.
    request: bool,
    raw: Vec<u8>,
    /// Offset in `raw` of the last frame's header.
    last: usize,
    /// The last frame carries END_HEADERS.
    complete: bool,
}

/// The server side: walking frames for SETTINGS.
#[derive(Default)]
struct Server {
    hdr: [u8; FRAME_HEADER_LEN],
    have: usize,
    left: usize,
    settings: Option<Vec<u8>>,
}

/// The HTTP/2 rewriter of one connection.
pub struct H2Rewriter {
    client: Client,
    hdr: [u8; FRAME_HEADER_LEN],
    have: usize,
    block: Option<Block>,
    hpack: HpackDecoder,
    last_stream: u32,
    server: Server,
    /// The server's SETTINGS_MAX_FRAME_SIZE (latest advertised).
    max_frame: u32,
    /// The server's SETTINGS_MAX_HEADER_LIST_SIZE, if advertised.
    max_list: Option<u32>,
    /// Largest SETTINGS_HEADER_TABLE_SIZE the server advertised (bounds the client's encoder).
    table: u32,
    gave_up: Option<GiveUpReason>,
}

impl Default for H2Rewriter {
    fn default() -> Self {
        H2Rewriter {
            client: Client::Preface(PREFACE.len()),
            hdr: [0; FRAME_HEADER_LEN],
            have: 0,
            block: None,
            hpack: HpackDecoder::new(DEFAULT_MAX_HPACK_TABLE),
            last_stream: 0,
            server: Server::default(),
            max_frame: DEFAULT_MAX_FRAME_SIZE,
            max_list: None,
            table: DEFAULT_HEADER_TABLE_SIZE,
            gave_up: None,
        }
    }
}

impl H2Rewriter {
    /// Rewrite `input[pos..]` into `emit`.
    pub(crate) fn feed(
        &mut self,
        input: &Bytes,
        mut pos: usize,
        emit: &mut Emit<'_>,
        mint: &mut Mint<'_>,
        injected: &mut Vec<Injection>,
    ) {
        // Header bytes carried over from an earlier chunk (held, not yet sent).
        let mut carried = self.have;
        while pos < input.len() {
            if self.gave_up.is_some() {
                emit.input(pos, input.len());
                return;
            }
            let avail = input.len() - pos;
            match self.client {
                Client::Preface(left) => {
                    let n = left.min(avail);
                    emit.input(pos, pos + n);
                    pos += n;
                    self.client = if n == left {
                        Client::Header
                    } else {
                        Client::Preface(left - n)
                    };
                }
                Client::Header => {
                    let n = (FRAME_HEADER_LEN - self.have).min(avail);
                    self.hdr[self.have..self.have + n].copy_from_slice(&input[pos..pos + n]);
                    self.have += n;
                    pos += n;
                    if self.have < FRAME_HEADER_LEN {
                        return;
                    }
                    self.have = 0;
                    let start = pos - (FRAME_HEADER_LEN - carried);
                    let from_input = carried == 0;
                    carried = 0;
                    self.frame_header(start, from_input, emit, mint, injected);
                }
                Client::Skip(left) => {
                    let n = left.min(avail);
                    emit.input(pos, pos + n);
                    pos += n;
                    self.client = if n == left {
                        Client::Header
                    } else {
                        Client::Skip(left - n)
                    };
                }
                Client::Hold(left) => {
                    let n = left.min(avail);
                    if let Some(b) = &mut self.block {
                        b.raw.extend_from_slice(&input[pos..pos + n]);
                    }
                    pos += n;
                    if n == left {
                        self.client = Client::Header;
                        self.frame_held(emit, mint, injected);
                    } else {
                        self.client = Client::Hold(left - n);
                    }
                }
            }
        }
    }

    /// A complete client frame header (its bytes at `start..start+9` of the input when
    /// `from_input`, else only in `self.hdr`).
    fn frame_header(
        &mut self,
        start: usize,
        from_input: bool,
        emit: &mut Emit<'_>,
        mint: &mut Mint<'_>,
        injected: &mut Vec<Injection>,
    ) {
        let hdr = FrameHeader::parse(&self.hdr);
        let len = hdr.len as usize;
        // Giving up here: what was held, then this frame's header, go out unchanged.
        let this = if from_input {
            None
        } else {
            Some(Bytes::copy_from_slice(&self.hdr))
        };
        let fail = |me: &mut Self, reason: GiveUpReason, emit: &mut Emit<'_>| {
            me.give_up(reason, emit);
            match &this {
                Some(b) => emit.owned(b.clone()),
                None => emit.input(start, start + FRAME_HEADER_LEN),
            }
        };
        if let Some(block) = &mut self.block {
            // Only CONTINUATIONs of the same stream may follow an unfinished block.
            if hdr.kind != FrameType::Continuation || hdr.stream != block.stream {
                return fail(self, "protocol_error", emit);
            }
            if block.raw.len() + FRAME_HEADER_LEN + len > MAX_HELD {
                return fail(self, "header_block_too_large", emit);
            }
            block.last = block.raw.len();
            block.complete = hdr.has(flags::END_HEADERS);
            block.raw.extend_from_slice(&self.hdr);
            return self.hold(len, emit, mint, injected);
        }
        match hdr.kind {
            FrameType::Headers => {
                if hdr.stream == 0 || hdr.stream.is_multiple_of(2) {
                    return fail(self, "protocol_error", emit);
                }
                if FRAME_HEADER_LEN + len > MAX_HELD {
                    return fail(self, "header_block_too_large", emit);
                }
                let request = hdr.stream > self.last_stream;
                if request {
                    self.last_stream = hdr.stream;
                }
                let mut raw = Vec::with_capacity(FRAME_HEADER_LEN + len);
                raw.extend_from_slice(&self.hdr);
                self.block = Some(Block {
                    stream: hdr.stream,
                    request,
                    raw,
                    last: 0,
                    complete: hdr.has(flags::END_HEADERS),
                });
                self.hold(len, emit, mint, injected);
            }
            FrameType::Continuation | FrameType::PushPromise => fail(self, "protocol_error", emit),
            _ => {
                if from_input {
                    emit.input(start, start + FRAME_HEADER_LEN);
                } else {
                    emit.owned(Bytes::copy_from_slice(&self.hdr));
                }
                self.client = if len == 0 { Client::Header } else { Client::Skip(len) };
            }
        }
    }

    fn hold(&mut self, len: usize, emit: &mut Emit<'_>, mint: &mut Mint<'_>, injected: &mut Vec<Injection>) {
        if len == 0 {
            self.client = Client::Header;
            self.frame_held(emit, mint, injected);
        } else {
            self.client = Client::Hold(len);
        }
    }

    /// A held frame is complete: when it ends the block, the block goes out.
    fn frame_held(&mut self, emit: &mut Emit<'_>, mint: &mut Mint<'_>, injected: &mut Vec<Injection>) {
        if !self.block.as_ref().is_some_and(|b| b.complete) {
            return;
        }
        let Some(block) = self.block.take() else { return };
        match self.rewrite(&block, mint) {
            Ok(Some((out, injection))) => {
                emit.owned(Bytes::from(out));
                injected.push(injection);
            }
            Ok(None) => emit.owned(Bytes::from(block.raw)),
            Err(reason) => {
                emit.owned(Bytes::from(block.raw));
                self.gave_up.get_or_insert(reason);
            }
        }
    }

    /// Decode a complete block; the rewritten frames when a `traceparent` is to be added.
    fn rewrite(&mut self, block: &Block, mint: &mut Mint<'_>) -> Result<Option<(Vec<u8>, Injection)>, GiveUpReason> {
        let mut fragment = Vec::with_capacity(block.raw.len());
        let mut at = 0;
        while at < block.raw.len() {
            let (hdr, payload) = frame_at(&block.raw, at).ok_or("protocol_error")?;
            let part = match hdr.kind {
                FrameType::Headers => frame::headers_fragment(hdr.flags, payload).map_err(|_| "protocol_error")?,
                _ => payload,
            };
            fragment.extend_from_slice(part);
            at += FRAME_HEADER_LEN + payload.len();
        }
        let decoded = self
            .hpack
            .decode(&fragment, DEFAULT_MAX_HEADER_LIST)
            .map_err(|_| "hpack_error")?;
        if !block.request || decoded.truncated || decoded.headers.get(TRACEPARENT).is_some() {
            return Ok(None);
        }
        let (injection, value) = mint();
        let field = literal_field(&value);
        if let Some(max) = self.max_list {
            let list: usize = decoded
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
                .sum();
            let ours = TRACEPARENT.len() + field.len() + ENTRY_OVERHEAD;
            if list + ours > max as usize {
                // The server would refuse the request: it goes unchanged.
                return Ok(None);
            }
        }
        let (last, payload) = frame_at(&block.raw, block.last).ok_or("protocol_error")?;
        let mut original = [0u8; FRAME_HEADER_LEN];
        original.copy_from_slice(&block.raw[block.last..block.last + FRAME_HEADER_LEN]);
        let mut out = Vec::with_capacity(block.raw.len() + field.len() + FRAME_HEADER_LEN);
        out.extend_from_slice(&block.raw[..block.last]);
        let grown = last.len as usize + field.len();
        if grown <= self.max_frame as usize {
            // Before the padding of a padded HEADERS; else at the end of the fragment.
            let pad = if last.kind == FrameType::Headers && last.has(flags::PADDED) {
                usize::from(payload.first().copied().unwrap_or(0))
            } else {
                0
            };
            let cut = payload.len() - pad;
            // The frame's own header bytes with the length changed: encoding the parsed
            // header would clear a reserved bit the client set, a change beyond the field.
            let mut hdr = original;
            hdr[..3].copy_from_slice(&(grown as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&hdr);
            out.extend_from_slice(&payload[..cut]);
            out.extend_from_slice(&field);
            out.extend_from_slice(&payload[cut..]);
        } else {
            let mut hdr = original;
            hdr[4] &= !flags::END_HEADERS;
            out.extend_from_slice(&hdr);
            out.extend_from_slice(payload);
            let cont = FrameHeader {
                len: field.len() as u32,
                kind: FrameType::Continuation,
                flags: flags::END_HEADERS,
                stream: last.stream,
            };
            out.extend_from_slice(&cont.encode());
            out.extend_from_slice(&field);
        }
        Ok(Some((out, injection)))
    }

    fn give_up(&mut self, reason: GiveUpReason, emit: &mut Emit<'_>) {
        self.gave_up.get_or_insert(reason);
        emit.owned(self.release());
    }

    /// A chunk from the server: follow its SETTINGS.
    pub fn server_bytes(&mut self, mut input: &[u8]) {
        while !input.is_empty() && self.gave_up.is_none() {
            let s = &mut self.server;
            if s.left > 0 {
                let n = s.left.min(input.len());
                if let Some(p) = &mut s.settings {
                    p.extend_from_slice(&input[..n]);
                }
                s.left -= n;
                input = &input[n..];
                if s.left == 0
                    && let Some(p) = s.settings.take()
                {
                    self.apply_settings(&p);
                }
                continue;
            }
            let n = (FRAME_HEADER_LEN - s.have).min(input.len());
            s.hdr[s.have..s.have + n].copy_from_slice(&input[..n]);
            s.have += n;
            input = &input[n..];
            if s.have < FRAME_HEADER_LEN {
                return;
            }
            s.have = 0;
            let hdr = FrameHeader::parse(&s.hdr);
            s.left = hdr.len as usize;
            if hdr.kind == FrameType::Settings && !hdr.has(flags::ACK) {
                if !s.left.is_multiple_of(6) || s.left > MAX_SETTINGS_PAYLOAD || hdr.stream != 0 {
                    self.gave_up.get_or_insert("server_settings");
                    return;
                }
                s.settings = Some(Vec::with_capacity(s.left));
            }
        }
    }

    fn apply_settings(&mut self, payload: &[u8]) {
        for (id, value) in frame::settings(payload) {
            match id {
                setting::MAX_FRAME_SIZE if (DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) => {
                    self.max_frame = value;
                }
                setting::HEADER_TABLE_SIZE => {
                    // Lenient: the client's encoder may use any size advertised so far.
                    self.table = self.table.max(value);
                    self.hpack.set_protocol_max(self.table as usize);
                }
                setting::MAX_HEADER_LIST_SIZE => self.max_list = Some(value),
                _ => {}
            }
        }
    }

    /// Bytes held back (a partial frame header, a header block).
    pub fn held(&self) -> usize {
        self.have + self.block.as_ref().map_or(0, |b| b.raw.len())
    }

    /// Held bytes, unchanged, in order; rewriting stops.
    pub fn release(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.extend_from_slice(&self.hdr[..self.have]);
        self.have = 0;
        out.freeze()
    }

    /// Why rewriting stopped, if it gave up.
    pub fn gave_up(&self) -> Option<GiveUpReason> {
        self.gave_up
    }
}

/// The frame at `at` of a held block: header and payload.
fn frame_at(raw: &[u8], at: usize) -> Option<(FrameHeader, &[u8])> {
    let hdr: &[u8; FRAME_HEADER_LEN] = raw.get(at..at + FRAME_HEADER_LEN)?.try_into().ok()?;
    let hdr = FrameHeader::parse(hdr);
    let payload = raw.get(at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + hdr.len as usize)?;
    Some((hdr, payload))
}
