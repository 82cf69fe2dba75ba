//! The per-connection HTTP/1.1 machine: requests on one side, responses on the other,
//! matched in order (response i answers request i), until the connection ends, switches
//! protocols, or cannot be followed. It keeps at most one head (or trailer section) per
//! direction; body bytes pass through as slices of the input.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::body::{BodyDecoder, BodyError, BodyLimits, Step};
use super::head::{self, EndScan, Framing, FramingFields, HeadError, Headers, RequestHead, ResponseHead};
use super::{Anomaly, Direction, ExchangeId, GiveUp, H1Event, Limits};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

/// A buffer that got this large is dropped rather than kept for the next head.
const KEEP_BUF_CAPACITY: usize = 8 * 1024;

/// The input of one feed: borrowed bytes (body slices are copied out) or shared bytes
/// (body slices are refcounted views of it).
enum Src<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
}

impl Src<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Src::Slice(s) => s,
            Src::Shared(b) => b,
        }
    }

    fn bytes(&self, r: Range<usize>) -> Bytes {
        match self {
            Src::Slice(s) => Bytes::copy_from_slice(&s[r]),
            Src::Shared(b) => b.slice(r),
        }
    }
}

/// A request whose final response head has not ended yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: ExchangeId,
    /// `HEAD`: the response has no body whatever its fields say.
    head_method: bool,
    /// `CONNECT`: a 2xx response makes a tunnel.
    connect: bool,
    /// docker attach / exec start: a framing-less 200 stream response is a hijack.
    hijack_path: bool,
}

#[derive(Debug)]
enum ReqPhase {
    /// Before (or inside) a request head.
    Head,
    Body {
        id: ExchangeId,
        body: BodyDecoder,
        may_switch: bool,
    },
    /// The request `id` may switch protocols; what follows it waits (in the buffer,
    /// bounded) for its response head to say whether it is still HTTP.
    Parked { id: ExchangeId },
    /// Not HTTP any more: bytes are counted.
    Raw,
}

#[derive(Debug)]
enum RespPhase {
    Head,
    Body { id: ExchangeId, body: BodyDecoder },
    Raw,
}

/// One direction's parse state.
struct Side<P> {
    phase: P,
    /// A partial head or trailer section, or (when `stashed`) bytes not yet looked at.
    buf: BytesMut,
    /// `buf` holds bytes that arrived while this side could not go on; they are parsed
    /// from the start once it can.
    stashed: bool,
    scan: EndScan,
}

impl<P: fmt::Debug> fmt::Debug for Side<P> {
    // Lengths only: the buffer can hold credentials from a partial head.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Side")
            .field("phase", &self.phase)
            .field("buffered", &self.buf.len())
            .field("stashed", &self.stashed)
            .finish()
    }
}

impl<P> Side<P> {
    fn new(phase: P) -> Self {
        Side {
            phase,
            buf: BytesMut::new(),
            stashed: false,
            scan: EndScan::default(),
        }
    }

    fn clear_buf(&mut self) {
        if self.buf.capacity() > KEEP_BUF_CAPACITY {
            self.buf = BytesMut::new();
        } else {
            self.buf.clear();
        }
        self.scan = EndScan::default();
    }
}

/// Where a head ends, if it does in what was seen so far.
enum Block {
    /// All input went into the buffer.
    Partial,
    /// The head ends after `consumed` bytes of input; it is in the buffer (`in_buf`) or
    /// wholly in the input.
    Complete { consumed: usize, in_buf: bool },
    /// Longer than the limit.
    TooLarge,
}

fn read_block(buf: &mut BytesMut, scan: &mut EndScan, data: &[u8], max: usize) -> Block {
    let room = max.saturating_sub(buf.len());
    let window = &data[..data.len().min(room)];
    match scan.scan(window) {
        Some(n) if buf.is_empty() => Block::Complete {
            consumed: n,
            in_buf: false,
        },
        Some(n) => {
            buf.extend_from_slice(&data[..n]);
            Block::Complete {
                consumed: n,
                in_buf: true,
            }
        }
        None if window.len() < data.len() => Block::TooLarge,
        None => {
            buf.extend_from_slice(data);
            Block::Partial
        }
    }
}

/// What reading a head from one side's input came to.
enum HeadRead<H> {
    /// Empty lines or part of a head: all the input was taken (the part is in the buffer).
    NeedMore,
    /// A whole head, parsed or not; the input goes on at `next`.
    Head { next: usize, parsed: Result<H, HeadError> },
    /// Longer than the head limit.
    TooLarge,
}

/// Reads the head (request or response: `parse`) that starts at `data[pos..]`, or goes on
/// with the part of it `side` buffered; empty lines before a head are skipped.
fn read_head<P, H>(
    side: &mut Side<P>,
    data: &[u8],
    mut pos: usize,
    limits: &Limits,
    parse: fn(&[u8], usize) -> Result<H, HeadError>,
) -> HeadRead<H> {
    if side.buf.is_empty() {
        pos = skip_empty_lines(data, pos);
        if pos == data.len() {
            return HeadRead::NeedMore;
        }
    }
    let rest = &data[pos..];
    match read_block(&mut side.buf, &mut side.scan, rest, limits.max_head) {
        Block::Partial => HeadRead::NeedMore,
        Block::TooLarge => HeadRead::TooLarge,
        Block::Complete { consumed, in_buf } => {
            let parsed = if in_buf {
                parse(&side.buf, limits.max_headers)
            } else {
                parse(&rest[..consumed], limits.max_headers)
            };
            side.clear_buf();
            HeadRead::Head {
                next: pos + consumed,
                parsed,
            }
        }
    }
}

/// Skips the empty lines a peer may send before a head (RFC 9112 section 2.2).
fn skip_empty_lines(data: &[u8], mut pos: usize) -> usize {
    while pos < data.len() && matches!(data[pos], b'\r' | b'\n') {
        pos += 1;
    }
    pos
}

fn head_give_up(e: HeadError, dir: Direction) -> GiveUp {
    match e {
        HeadError::TooManyHeaders => GiveUp::TooManyHeaders { dir },
        HeadError::Malformed => GiveUp::MalformedHead { dir },
    }
}

fn body_give_up(e: BodyError, dir: Direction) -> GiveUp {
    match e {
        BodyError::BadChunk | BodyError::ChunkLineTooLong => GiveUp::BadChunk { dir },
        BodyError::TrailersTooLarge => GiveUp::HeadTooLarge { dir },
    }
}

/// Passive HTTP/1.1 decoder for one connection, fed both directions in the order the
/// relay saw them.
///
/// Never panics and never fails the connection: what it cannot follow ends in one
/// [`H1Event::GaveUp`], after which it ignores its input.
#[derive(Debug)]
pub struct H1Decoder {
    limits: Limits,
    next_id: ExchangeId,
    /// Final response heads seen: the exchanges `0..final_heads` have one.
    final_heads: u64,
    req: Side<ReqPhase>,
    resp: Side<RespPhase>,
    pending: VecDeque<Pending>,
    upgraded: Option<ExchangeId>,
    upgraded_bytes: [u64; 2],
    eof_seen: [bool; 2],
    eof_done: [bool; 2],
    closed: bool,
    gave_up: Option<GiveUp>,
    /// What was open when the decoder gave up.
    open_at_give_up: Vec<ExchangeId>,
}

impl Default for H1Decoder {
    fn default() -> Self {
        H1Decoder::new(Limits::default())
    }
}

impl H1Decoder {
    /// A decoder for a new connection.
    pub fn new(limits: Limits) -> Self {
        H1Decoder {
            limits,
            next_id: 0,
            final_heads: 0,
            req: Side::new(ReqPhase::Head),
            resp: Side::new(RespPhase::Head),
            pending: VecDeque::new(),
            upgraded: None,
            upgraded_bytes: [0; 2],
            eof_seen: [false; 2],
            eof_done: [false; 2],
            closed: false,
            gave_up: None,
            open_at_give_up: Vec::new(),
        }
    }

    /// Feeds a chunk that travelled in `dir`. Body events copy their bytes out of `chunk`;
    /// prefer [`H1Decoder::feed_bytes`] when the chunk is already a `Bytes`.
    pub fn feed(&mut self, dir: Direction, chunk: &[u8], out: &mut Vec<H1Event>) {
        self.feed_src(dir, &Src::Slice(chunk), out);
    }

    /// Feeds a chunk that travelled in `dir`. Body events are slices of `chunk` (no copy).
    pub fn feed_bytes(&mut self, dir: Direction, chunk: Bytes, out: &mut Vec<H1Event>) {
        self.feed_src(dir, &Src::Shared(&chunk), out);
    }

    /// The side sending in `dir` closed (half-close). Once both sides have, the decoder
    /// emits [`H1Event::Closed`].
    pub fn eof(&mut self, dir: Direction, out: &mut Vec<H1Event>) {
        if self.gave_up.is_some() || self.closed || self.eof_seen[dir.index()] {
            return;
        }
        self.eof_seen[dir.index()] = true;
        self.settle(out);
    }

    /// Why the decoder stopped following the connection, if it did.
    pub fn gave_up(&self) -> Option<GiveUp> {
        self.gave_up
    }

    /// True once [`H1Event::Closed`] was emitted.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The exchange that switched protocols, if one did.
    pub fn upgraded(&self) -> Option<ExchangeId> {
        self.upgraded
    }

    /// Requests whose head was seen so far on this connection.
    pub fn requests_seen(&self) -> u64 {
        self.next_id
    }

    /// Between two exchanges: no request or response under way or partly seen, no protocol
    /// switch, nothing buffered. A connection here can be closed without cutting a call.
    pub fn between_exchanges(&self) -> bool {
        self.gave_up.is_none()
            && self.upgraded.is_none()
            && self.pending.is_empty()
            && matches!(self.req.phase, ReqPhase::Head)
            && matches!(self.resp.phase, RespPhase::Head)
            && self.req.buf.is_empty()
            && self.resp.buf.is_empty()
    }

    /// The next daemon byte starts a response head (nothing of it seen yet).
    pub fn at_response_head_start(&self) -> bool {
        self.gave_up.is_none()
            && self.upgraded.is_none()
            && matches!(self.resp.phase, RespPhase::Head)
            && self.resp.buf.is_empty()
    }

    /// Bytes held by the decoder right now (partial heads, trailer sections, bytes waiting
    /// for a protocol switch decision). Never more than about twice `max_head`.
    pub fn buffered_bytes(&self) -> usize {
        self.req.buf.len() + self.resp.buf.len()
    }

    /// Exchanges started and not ended (the upgraded one excluded), in order. After the
    /// decoder gave up: those open at that moment (the caller drops them).
    pub fn open_exchanges(&self) -> Vec<ExchangeId> {
        if self.gave_up.is_some() {
            return self.open_at_give_up.clone();
        }
        let mut open: Vec<ExchangeId> = self.pending.iter().map(|p| p.id).collect();
        if let ReqPhase::Body { id, .. } = self.req.phase {
            open.push(id);
        }
        open.sort_unstable();
        open.dedup();
        open.retain(|id| Some(*id) != self.upgraded);
        open
    }

    fn feed_src(&mut self, dir: Direction, src: &Src<'_>, out: &mut Vec<H1Event>) {
        if self.gave_up.is_some() || self.closed || src.as_slice().is_empty() {
            return;
        }
        if self.eof_seen[dir.index()] {
            out.push(H1Event::Anomaly(Anomaly::DataAfterEof { dir }));
            return;
        }
        match dir {
            Direction::ClientToServer => self.run_c2s(src, out),
            Direction::ServerToClient => self.run_s2c(src, out),
        }
        self.settle(out);
    }

    fn give_up(&mut self, reason: GiveUp, out: &mut Vec<H1Event>) {
        if self.gave_up.is_none() {
            self.open_at_give_up = self.open_exchanges();
            self.gave_up = Some(reason);
            out.push(H1Event::GaveUp(reason));
        }
        self.req = Side::new(ReqPhase::Raw);
        self.resp = Side::new(RespPhase::Raw);
        self.pending.clear();
    }

    fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_trailers: self.limits.max_head,
            max_headers: self.limits.max_headers,
            max_chunk_line: self.limits.max_chunk_line,
        }
    }

    /// Runs what became possible after a feed or an end of stream: stashed bytes whose
    /// wait is over, deferred ends of stream, and finally the close.
    fn settle(&mut self, out: &mut Vec<H1Event>) {
        loop {
            if self.gave_up.is_some() {
                return;
            }
            if self.run_req_stash(out) {
                continue;
            }
            if self.run_resp_stash(out) {
                continue;
            }
            if self.eof_seen[S2C.index()] && !self.eof_done[S2C.index()] {
                self.apply_eof_s2c(out);
                continue;
            }
            if self.eof_done[S2C.index()] && matches!(self.req.phase, ReqPhase::Parked { .. }) {
                // The server is gone: no head will say the connection switched.
                self.req.phase = ReqPhase::Head;
                continue;
            }
            if self.c2s_eof_waiting() {
                self.apply_eof_c2s(out);
                continue;
            }
            break;
        }
        if self.eof_done == [true, true] && !self.closed {
            self.closed = true;
            let open = self.open_exchanges();
            out.push(H1Event::Closed {
                upgraded_bytes: self.upgraded_bytes,
                open,
            });
        }
    }

    /// Runs client bytes that waited behind a request that might have switched protocols,
    /// once its response said it did not; false when there are none or it is not known yet.
    fn run_req_stash(&mut self, out: &mut Vec<H1Event>) -> bool {
        if !(self.req.stashed && matches!(self.req.phase, ReqPhase::Head)) {
            return false;
        }
        let stash = self.req.buf.split().freeze();
        self.req.clear_buf();
        self.req.stashed = false;
        self.run_c2s(&Src::Shared(&stash), out);
        true
    }

    /// Runs server bytes that arrived before the request they answer, once that request is
    /// open; false when there are none or it is not open yet.
    fn run_resp_stash(&mut self, out: &mut Vec<H1Event>) -> bool {
        if !(self.resp.stashed && matches!(self.resp.phase, RespPhase::Head) && !self.pending.is_empty()) {
            return false;
        }
        let stash = self.resp.buf.split().freeze();
        self.resp.clear_buf();
        self.resp.stashed = false;
        self.run_s2c(&Src::Shared(&stash), out);
        true
    }

    /// The client's EOF is seen and no longer held back by a parked request.
    fn c2s_eof_waiting(&self) -> bool {
        self.eof_seen[C2S.index()] && !self.eof_done[C2S.index()] && !matches!(self.req.phase, ReqPhase::Parked { .. })
    }

    fn apply_eof_c2s(&mut self, out: &mut Vec<H1Event>) {
        self.eof_done[C2S.index()] = true;
        match &self.req.phase {
            ReqPhase::Head if !self.req.buf.is_empty() => {
                out.push(H1Event::Anomaly(Anomaly::Truncated { dir: C2S, id: None }));
                self.req.clear_buf();
            }
            ReqPhase::Body { id, .. } => {
                out.push(H1Event::Anomaly(Anomaly::Truncated {
                    dir: C2S,
                    id: Some(*id),
                }));
            }
            _ => {}
        }
    }

    fn apply_eof_s2c(&mut self, out: &mut Vec<H1Event>) {
        self.eof_done[S2C.index()] = true;
        match mem::replace(&mut self.resp.phase, RespPhase::Head) {
            RespPhase::Head => {
                if self.resp.stashed {
                    out.push(H1Event::Anomaly(Anomaly::UnsolicitedResponse {
                        bytes: self.resp.buf.len() as u64,
                    }));
                } else if !self.resp.buf.is_empty() {
                    out.push(H1Event::Anomaly(Anomaly::Truncated { dir: S2C, id: None }));
                }
                self.resp.stashed = false;
                self.resp.clear_buf();
            }
            RespPhase::Body { id, body } if body.is_close_delimited() => {
                self.end_response(id, body.len(), None, out);
            }
            RespPhase::Body { id, body } => {
                out.push(H1Event::Anomaly(Anomaly::Truncated { dir: S2C, id: Some(id) }));
                self.resp.phase = RespPhase::Body { id, body };
            }
            RespPhase::Raw => self.resp.phase = RespPhase::Raw,
        }
    }

    /// Parks `data` in `side`'s buffer until the side can go on; false when that would
    /// exceed the head limit.
    fn stash<P>(side: &mut Side<P>, data: &[u8], max: usize) -> bool {
        if side.buf.len().saturating_add(data.len()) > max {
            return false;
        }
        side.buf.extend_from_slice(data);
        side.stashed = true;
        true
    }

    fn run_c2s(&mut self, src: &Src<'_>, out: &mut Vec<H1Event>) {
        let data = src.as_slice();
        let mut pos = 0;
        while pos < data.len() && self.gave_up.is_none() {
            // Held server bytes go first, as soon as the request they answer is open, so
            // the order of events does not depend on where the client's reads split.
            if self.run_resp_stash(out) {
                continue;
            }
            match mem::replace(&mut self.req.phase, ReqPhase::Head) {
                ReqPhase::Raw => {
                    self.req.phase = ReqPhase::Raw;
                    self.count_raw(C2S, data.len() - pos);
                    pos = data.len();
                }
                ReqPhase::Parked { id } => {
                    self.req.phase = ReqPhase::Parked { id };
                    if !Self::stash(&mut self.req, &data[pos..], self.limits.max_head) {
                        self.give_up(GiveUp::ParkedOverflow, out);
                    }
                    pos = data.len();
                }
                ReqPhase::Head => match read_head(&mut self.req, data, pos, &self.limits, head::parse_request) {
                    HeadRead::NeedMore => pos = data.len(),
                    HeadRead::TooLarge => self.give_up(GiveUp::HeadTooLarge { dir: C2S }, out),
                    HeadRead::Head { next, parsed } => {
                        pos = next;
                        match parsed {
                            Ok(h) => self.on_request_head(h, out),
                            Err(e) => self.give_up(head_give_up(e, C2S), out),
                        }
                    }
                },
                ReqPhase::Body {
                    id,
                    mut body,
                    may_switch,
                } => {
                    let limits = self.body_limits();
                    match body.step(&data[pos..], &mut self.req.buf, &limits) {
                        Ok(Step::NeedMore) => {
                            pos = data.len();
                            self.req.phase = ReqPhase::Body { id, body, may_switch };
                        }
                        Ok(Step::Data { start, end, last }) => {
                            out.push(H1Event::RequestBody {
                                id,
                                data: src.bytes(pos + start..pos + end),
                            });
                            pos += end;
                            if last {
                                self.end_request(id, body.len(), None, may_switch, out);
                            } else {
                                self.req.phase = ReqPhase::Body { id, body, may_switch };
                            }
                        }
                        Ok(Step::End {
                            consumed,
                            trailers,
                            bad_trailers,
                        }) => {
                            pos += consumed;
                            if bad_trailers {
                                out.push(H1Event::Anomaly(Anomaly::BadTrailers { dir: C2S, id }));
                            }
                            self.end_request(id, body.len(), trailers, may_switch, out);
                        }
                        Err(e) => self.give_up(body_give_up(e, C2S), out),
                    }
                }
            }
        }
    }

    fn on_request_head(&mut self, h: RequestHead, out: &mut Vec<H1Event>) {
        if self.pending.len() >= self.limits.max_pipelined {
            return self.give_up(GiveUp::TooManyPipelined, out);
        }
        let Some(next) = self.next_id.checked_add(1) else {
            return self.give_up(GiveUp::TooManyPipelined, out);
        };
        let framing = match head::framing_fields(&h.headers) {
            Ok(FramingFields::None) => Framing::Length(0),
            Ok(FramingFields::Length(n)) => Framing::Length(n),
            Ok(FramingFields::Chunked { with_length }) => {
                if with_length {
                    out.push(H1Event::Anomaly(Anomaly::ChunkedWithLength {
                        dir: C2S,
                        id: self.next_id,
                    }));
                }
                Framing::Chunked
            }
            // A request body without a length cannot be delimited (RFC 9112 section 6.3).
            Ok(FramingFields::OtherCoding) => {
                return self.give_up(GiveUp::BadTransferEncoding, out);
            }
            Err(_) => return self.give_up(GiveUp::BadContentLength { dir: C2S }, out),
        };
        let id = self.next_id;
        self.next_id = next;
        let connect = h.method == "CONNECT";
        let upgrade = h.headers.get("upgrade").is_some() && h.headers.has_token("connection", "upgrade");
        let hijack_path = h.method == "POST" && head::is_docker_hijack_path(&h.target);
        self.pending.push_back(Pending {
            id,
            head_method: h.method == "HEAD",
            connect,
            hijack_path,
        });
        let may_switch = connect || upgrade || hijack_path;
        out.push(H1Event::RequestHead {
            id,
            method: h.method,
            target: h.target,
            version: h.version,
            headers: h.headers,
        });
        let body = BodyDecoder::new(framing);
        if framing == Framing::Length(0) {
            self.end_request(id, 0, None, may_switch, out);
        } else {
            self.req.phase = ReqPhase::Body { id, body, may_switch };
        }
    }

    fn end_request(
        &mut self,
        id: ExchangeId,
        body_len: u64,
        trailers: Option<Headers>,
        may_switch: bool,
        out: &mut Vec<H1Event>,
    ) {
        out.push(H1Event::RequestEnd { id, body_len, trailers });
        self.req.phase = if self.upgraded.is_some() {
            ReqPhase::Raw
        } else if may_switch && self.final_heads <= id {
            ReqPhase::Parked { id }
        } else {
            ReqPhase::Head
        };
    }

    fn run_s2c(&mut self, src: &Src<'_>, out: &mut Vec<H1Event>) {
        let data = src.as_slice();
        let mut pos = 0;
        while pos < data.len() && self.gave_up.is_none() {
            // Client bytes held behind a parked request go first once it is unparked (the
            // mirror of `run_c2s`).
            if self.run_req_stash(out) {
                continue;
            }
            // And so does the client's EOF, which waited for the same answer: at once, not at
            // the end of this read, or its Truncated would land before or after the rest of
            // this response depending on where the server's reads split (found by fuzzing).
            if self.c2s_eof_waiting() {
                self.apply_eof_c2s(out);
                continue;
            }
            match mem::replace(&mut self.resp.phase, RespPhase::Head) {
                RespPhase::Raw => {
                    self.resp.phase = RespPhase::Raw;
                    self.count_raw(S2C, data.len() - pos);
                    pos = data.len();
                }
                RespPhase::Head if self.pending.is_empty() || self.resp.stashed => {
                    // Nothing to answer yet (the request is not seen whole): wait for it.
                    if !Self::stash(&mut self.resp, &data[pos..], self.limits.max_head) {
                        self.give_up(GiveUp::UnexpectedResponse, out);
                    }
                    pos = data.len();
                }
                RespPhase::Head => match read_head(&mut self.resp, data, pos, &self.limits, head::parse_response) {
                    HeadRead::NeedMore => pos = data.len(),
                    HeadRead::TooLarge => self.give_up(GiveUp::HeadTooLarge { dir: S2C }, out),
                    HeadRead::Head { next, parsed } => {
                        pos = next;
                        match parsed {
                            Ok(h) => self.on_response_head(h, out),
                            Err(e) => self.give_up(head_give_up(e, S2C), out),
                        }
                    }
                },
                RespPhase::Body { id, mut body } => {
                    let limits = self.body_limits();
                    match body.step(&data[pos..], &mut self.resp.buf, &limits) {
                        Ok(Step::NeedMore) => {
                            pos = data.len();
                            self.resp.phase = RespPhase::Body { id, body };
                        }
                        Ok(Step::Data { start, end, last }) => {
                            out.push(H1Event::ResponseBody {
                                id,
                                data: src.bytes(pos + start..pos + end),
                            });
                            pos += end;
                            if last {
                                self.end_response(id, body.len(), None, out);
                            } else {
                                self.resp.phase = RespPhase::Body { id, body };
                            }
                        }
                        Ok(Step::End {
                            consumed,
                            trailers,
                            bad_trailers,
                        }) => {
                            pos += consumed;
                            if bad_trailers {
                                out.push(H1Event::Anomaly(Anomaly::BadTrailers { dir: S2C, id }));
                            }
                            self.end_response(id, body.len(), trailers, out);
                        }
                        Err(e) => self.give_up(body_give_up(e, S2C), out),
                    }
                }
            }
        }
    }

    fn on_response_head(&mut self, h: ResponseHead, out: &mut Vec<H1Event>) {
        let Some(front) = self.pending.front().copied() else {
            // run_s2c only parses a head when a request waits for it.
            return self.give_up(GiveUp::UnexpectedResponse, out);
        };
        let id = front.id;
        let status = h.status;
        if (100..200).contains(&status) && status != 101 {
            // 100 Continue, 102, 103: the final head follows for the same request.
            out.push(H1Event::ResponseHead {
                id,
                status,
                headers: h.headers,
                informational: true,
            });
            return;
        }
        let fields = head::framing_fields(&h.headers);
        let switch = status == 101
            || (front.connect && (200..300).contains(&status))
            || (front.hijack_path
                && status == 200
                && head::is_docker_stream_type(&h.headers)
                && matches!(fields, Ok(FramingFields::None)));
        let framing = if switch || front.head_method || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            match fields {
                Ok(FramingFields::None | FramingFields::OtherCoding) => Framing::Close,
                Ok(FramingFields::Length(n)) => Framing::Length(n),
                Ok(FramingFields::Chunked { with_length }) => {
                    if with_length {
                        out.push(H1Event::Anomaly(Anomaly::ChunkedWithLength { dir: S2C, id }));
                    }
                    Framing::Chunked
                }
                Err(_) => return self.give_up(GiveUp::BadContentLength { dir: S2C }, out),
            }
        };
        self.final_heads = self.final_heads.saturating_add(1);
        out.push(H1Event::ResponseHead {
            id,
            status,
            headers: h.headers,
            informational: false,
        });
        if switch {
            return self.switch_protocols(id, out);
        }
        if matches!(self.req.phase, ReqPhase::Parked { id: parked } if parked == id) {
            // Still HTTP: what the client sent meanwhile is parsed by `settle`.
            self.req.phase = ReqPhase::Head;
        }
        if framing == Framing::Length(0) {
            self.end_response(id, 0, None, out);
        } else {
            self.resp.phase = RespPhase::Body {
                id,
                body: BodyDecoder::new(framing),
            };
        }
    }

    fn end_response(&mut self, id: ExchangeId, body_len: u64, trailers: Option<Headers>, out: &mut Vec<H1Event>) {
        out.push(H1Event::ResponseEnd { id, body_len, trailers });
        self.pending.pop_front();
        self.resp.phase = RespPhase::Head;
    }

    /// The exchange `id` left HTTP: from here on both directions are counted, not parsed.
    fn switch_protocols(&mut self, id: ExchangeId, out: &mut Vec<H1Event>) {
        out.push(H1Event::Upgraded { id });
        self.upgraded = Some(id);
        self.pending.pop_front();
        self.resp.phase = RespPhase::Raw;
        match self.req.phase {
            // The request of `id` is still being sent: it turns raw when it ends.
            ReqPhase::Body { id: b, .. } if b == id => {}
            ReqPhase::Raw => {}
            _ => {
                let held = self.req.buf.len();
                self.count_raw(C2S, held);
                self.req.stashed = false;
                self.req.clear_buf();
                self.req.phase = ReqPhase::Raw;
            }
        }
    }

    fn count_raw(&mut self, dir: Direction, n: usize) {
        let c = &mut self.upgraded_bytes[dir.index()];
        *c = c.saturating_add(n as u64);
    }
}
