//! gRPC over the passive HTTP/2 decoder: call events per stream, length-prefixed messages
//! reassembled across DATA frames, gzip/deflate decompression, all bounded. Messages above
//! the size cap are counted through, never buffered; a 4 GiB length prefix costs nothing.

use std::fmt;
use std::io::Read as _;

use bytes::Bytes;

use crate::wire::Direction;
pub use crate::wire::h2::conn::{
    DEFAULT_MAX_HEADER_BLOCK, DEFAULT_MAX_HEADER_LIST, DEFAULT_MAX_HPACK_TABLE, DEFAULT_MAX_STREAMS, StreamId,
};
use crate::wire::h2::conn::{H2Conn, H2Limits, Handler, HeaderRole};
pub use crate::wire::h2::hpack::Headers;
use crate::wire::h2::hpack::Keep;
pub use crate::wire::h2::{Anomaly, GiveUp, StreamEnd};

/// Default cap on one gRPC message (its length prefix): 4 MiB, gRPC's own default receive
/// limit. Bigger messages are skipped and counted, never buffered.
pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Default cap on one decompressed message: 4 MiB.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 4 * 1024 * 1024;
/// Default cap on message bytes buffered at once per connection, all streams: 16 MiB.
pub const DEFAULT_MAX_BUFFERED_PER_CONN: usize = 16 * 1024 * 1024;
/// The header fields this decoder reads (`:status` the HTTP/2 layer keeps itself).
const OWN_FIELDS: &[&str] = &[":path", "grpc-encoding"];
/// Bytes of a gRPC message prefix: compressed flag + u32 BE length.
pub const MESSAGE_PREFIX_LEN: usize = 5;

/// Memory bounds of one connection's decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Max bytes of one header block (HEADERS + CONTINUATIONs); above it the connection is
    /// given up (HPACK state cannot be kept without decoding it).
    pub max_header_block: usize,
    /// Max open streams; above it the connection is given up.
    pub max_streams: usize,
    /// Max message length (prefix) buffered; bigger messages are skipped and counted.
    pub max_message: usize,
    /// Max decompressed size of one message; bigger ones are skipped.
    pub max_decompressed: usize,
    /// Max message bytes buffered at once on the connection; messages that would exceed it
    /// are skipped.
    pub max_buffered_per_conn: usize,
    /// Max HPACK dynamic table per direction; a size update above it gives up.
    pub max_hpack_table: usize,
    /// Max decoded header list kept per header block; the rest is decoded and dropped.
    pub max_header_list: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
            max_streams: DEFAULT_MAX_STREAMS,
            max_message: DEFAULT_MAX_MESSAGE,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            max_buffered_per_conn: DEFAULT_MAX_BUFFERED_PER_CONN,
            max_hpack_table: DEFAULT_MAX_HPACK_TABLE,
            max_header_list: DEFAULT_MAX_HEADER_LIST,
        }
    }
}

impl Limits {
    /// The HTTP/2 layer's part.
    pub fn h2(&self) -> H2Limits {
        H2Limits {
            max_header_block: self.max_header_block,
            max_streams: self.max_streams,
            max_hpack_table: self.max_hpack_table,
            max_header_list: self.max_header_list,
        }
    }
}

/// Why a message's payload is not in the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// Length prefix above `Limits::max_message`.
    TooLarge,
    /// The compressed payload did not decompress.
    DecompressFailed,
    /// Decompressed above `Limits::max_decompressed`.
    DecompressTooLarge,
    /// Payload decoding is off (load shedding).
    PayloadsOff,
    /// Compressed with an encoding we do not decode (or none declared).
    UnsupportedEncoding,
    /// Buffering it would exceed `Limits::max_buffered_per_conn`.
    BufferFull,
    /// Its stream or direction ended before the message did (reset, connection closed).
    Truncated,
    /// Every rule that wants this stream's payloads already has its value (first value
    /// wins), so the later messages are walked, not decoded.
    RulesSatisfied,
}

impl SkipReason {
    /// snake_case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TooLarge => "too_large",
            SkipReason::DecompressFailed => "decompress_failed",
            SkipReason::DecompressTooLarge => "decompress_too_large",
            SkipReason::PayloadsOff => "payloads_off",
            SkipReason::UnsupportedEncoding => "unsupported_encoding",
            SkipReason::BufferFull => "buffer_full",
            SkipReason::Truncated => "truncated",
            SkipReason::RulesSatisfied => "rules_satisfied",
        }
    }
}

/// One gRPC message. `Debug` prints lengths, never payload bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The compressed flag of the prefix.
    pub compressed: bool,
    /// The length prefix (bytes on the wire).
    pub len: u64,
    /// The decompressed payload; `None` when skipped.
    pub data: Option<Bytes>,
    /// Why `data` is `None`.
    pub skipped: Option<SkipReason>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("compressed", &self.compressed)
            .field("len", &self.len)
            .field("data_len", &self.data.as_ref().map(Bytes::len))
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// What the decoder saw, in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcEvent {
    /// The client opened a stream: `:path`, `:method`, `:authority`, `content-type`,
    /// `grpc-encoding`, `containerd-namespace`, `traceparent`, ...
    RequestHeaders {
        /// Stream id.
        stream: StreamId,
        /// Header list.
        headers: Headers,
    },
    /// A complete request message.
    RequestMessage {
        /// Stream id.
        stream: StreamId,
        /// The message.
        message: Message,
    },
    /// The server's response headers.
    ResponseHeaders {
        /// Stream id.
        stream: StreamId,
        /// Header list.
        headers: Headers,
    },
    /// A complete response message.
    ResponseMessage {
        /// Stream id.
        stream: StreamId,
        /// The message.
        message: Message,
    },
    /// Trailers (or a Trailers-Only response: `trailers_only`). Carries `grpc-status` and
    /// `grpc-message`.
    Trailers {
        /// Stream id.
        stream: StreamId,
        /// Header list.
        headers: Headers,
        /// No response headers came before.
        trailers_only: bool,
    },
    /// The stream is over (both END_STREAMs seen, or reset, or the connection ended with it
    /// open).
    StreamEnd {
        /// Stream id.
        stream: StreamId,
        /// How.
        end: StreamEnd,
    },
    /// A message its stream or direction ended in the middle of (reset, connection closed):
    /// never delivered as a message, so the reason its payload is lost is given here, once
    /// (`Truncated` when it was being buffered). A cut 4 GiB prefix costs no more than this.
    MessageCut {
        /// Stream id.
        stream: StreamId,
        /// The direction the message travelled.
        direction: Direction,
        /// Its length prefix.
        len: u64,
        /// Why its payload is not decoded.
        reason: SkipReason,
    },
    /// Something odd the decoder survived (counted by the caller).
    Anomaly(Anomaly),
    /// The decoder lost sync and stops decoding this connection for good (bytes still flow
    /// in the relay). Streams still open then are not ended by events: the caller ends them.
    GaveUp(GiveUp),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Encoding {
    #[default]
    Identity,
    Gzip,
    Deflate,
    Other,
}

impl Encoding {
    fn from_headers(headers: &Headers) -> Encoding {
        match headers.get("grpc-encoding").map(str::trim) {
            None => Encoding::Identity,
            Some(v) if v.eq_ignore_ascii_case("identity") => Encoding::Identity,
            Some(v) if v.eq_ignore_ascii_case("gzip") => Encoding::Gzip,
            Some(v) if v.eq_ignore_ascii_case("deflate") => Encoding::Deflate,
            Some(_) => Encoding::Other,
        }
    }
}

#[derive(Default)]
enum MsgState {
    /// Reading the 5-byte prefix.
    #[default]
    Idle,
    Prefix {
        buf: [u8; MESSAGE_PREFIX_LEN],
        have: usize,
    },
    Body {
        compressed: bool,
        len: u32,
        left: u32,
        /// Buffered payload so far (None: nothing yet, or skipping).
        buf: Option<Vec<u8>>,
        skip: Option<SkipReason>,
        /// Bytes reserved against the connection cap.
        reserved: usize,
    },
}

/// Per-stream gRPC state. `Debug` prints encodings and counts, never payload bytes.
#[derive(Default)]
pub struct CallState {
    encoding: [Encoding; 2],
    msg: [MsgState; 2],
    messages: [u64; 2],
    /// Payloads nobody wants on this stream, per direction, and why (nothing wants them, or
    /// every rule already has its value): boundaries only, no buffering.
    skip: [Option<SkipReason>; 2],
}

impl fmt::Debug for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallState")
            .field("encoding", &self.encoding)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl CallState {
    /// Messages completed so far per direction (index by [`Direction::index`]).
    pub fn messages(&self) -> [u64; 2] {
        self.messages
    }
}

/// Decides, from a request's `:path`, which directions' payloads are wanted.
pub type Interest = Box<dyn FnMut(&str) -> [bool; 2] + Send>;

struct Shared {
    limits: Limits,
    payloads: bool,
    interest: Option<Interest>,
    /// Message bytes reserved against `max_buffered_per_conn`.
    reserved: usize,
}

struct Sink<'a> {
    shared: &'a mut Shared,
    out: &'a mut Vec<GrpcEvent>,
}

/// The gRPC decoder of one connection (both directions). `Debug` prints sizes, never bytes.
#[derive(Debug)]
pub struct GrpcDecoder {
    conn: H2Conn<CallState>,
    shared: Shared,
}

impl GrpcDecoder {
    /// A decoder for a connection about to see its first bytes.
    pub fn new(limits: Limits) -> Self {
        GrpcDecoder {
            conn: H2Conn::new(limits.h2()),
            shared: Shared {
                limits,
                payloads: true,
                interest: None,
                reserved: 0,
            },
        }
    }

    /// Decide per call which payloads are decoded: `interest(path)` says, for the request and
    /// the response, whether anything needs them. The others are walked (boundaries, counts,
    /// sizes) but never buffered or decompressed — a 256 MiB Content/Read costs no copy.
    pub fn set_interest(&mut self, interest: Interest) {
        self.shared.interest = Some(interest);
    }

    /// Hand over, of each header block, only the fields this decoder reads itself and those
    /// named in `observed` (default: every field).
    pub fn keep_only_fields(&mut self, observed: &'static [&'static str]) {
        self.conn.keep_fields(Keep::Named(OWN_FIELDS, observed));
    }

    /// Feed one chunk as the relay read it. Appends events to `out`.
    pub fn feed(&mut self, dir: Direction, chunk: &[u8], out: &mut Vec<GrpcEvent>) {
        let mut sink = Sink {
            shared: &mut self.shared,
            out,
        };
        self.conn.feed(dir, chunk, None, &mut sink);
    }

    /// Like [`GrpcDecoder::feed`], with a refcounted chunk: a message lying whole inside it is
    /// sliced out without a copy.
    pub fn feed_bytes(&mut self, dir: Direction, chunk: Bytes, out: &mut Vec<GrpcEvent>) {
        let mut sink = Sink {
            shared: &mut self.shared,
            out,
        };
        self.conn.feed(dir, &chunk, Some(&chunk), &mut sink);
    }

    /// That direction half-closed / connection ended.
    pub fn eof(&mut self, dir: Direction, out: &mut Vec<GrpcEvent>) {
        let mut sink = Sink {
            shared: &mut self.shared,
            out,
        };
        self.conn.eof(dir, &mut sink);
    }

    /// Stop decoding the payloads of one direction of one stream from its next message on
    /// (they are walked and counted, never buffered): whoever wanted them has what it needs.
    /// `reason` is what the skipped messages carry. Unknown streams are ignored.
    pub fn skip_payloads(&mut self, stream: StreamId, dir: Direction, reason: SkipReason) {
        if let Some(st) = self.conn.stream_mut(stream) {
            st.skip[dir.index()] = Some(reason);
        }
    }

    /// Load shedding: when false, message payloads are no longer buffered (Message.data =
    /// None) but frames, message boundaries and EVERY header block are still walked, so calls
    /// keep their names and status. Messages being buffered are dropped at their next bytes.
    pub fn set_payloads(&mut self, on: bool) {
        self.shared.payloads = on;
    }

    /// Why decoding stopped, if it did.
    pub fn gave_up(&self) -> Option<GiveUp> {
        self.conn.gave_up()
    }

    /// Bytes held for this connection: message reservations plus HTTP/2 buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.reserved.saturating_add(self.conn.buffered_bytes())
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.conn.open_streams()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }
}

impl Handler for Sink<'_> {
    type Stream = CallState;

    fn headers(&mut self, dir: Direction, stream: StreamId, st: &mut CallState, role: HeaderRole, headers: Headers) {
        let i = dir.index();
        match role {
            HeaderRole::Request => {
                st.encoding[i] = Encoding::from_headers(&headers);
                if let Some(interest) = self.shared.interest.as_mut() {
                    let want = interest(headers.get(":path").unwrap_or(""));
                    st.skip = want.map(|w| (!w).then_some(SkipReason::PayloadsOff));
                }
                self.out.push(GrpcEvent::RequestHeaders { stream, headers });
            }
            HeaderRole::Response => {
                st.encoding[i] = Encoding::from_headers(&headers);
                self.out.push(GrpcEvent::ResponseHeaders { stream, headers });
            }
            HeaderRole::Trailers { trailers_only } => self.out.push(GrpcEvent::Trailers {
                stream,
                headers,
                trailers_only,
            }),
            HeaderRole::RequestTrailers => self.out.push(GrpcEvent::Anomaly(Anomaly::UnexpectedHeaders)),
            HeaderRole::Informational => {}
        }
    }

    fn data(&mut self, dir: Direction, stream: StreamId, st: &mut CallState, data: &[u8], owner: Option<&Bytes>) {
        let i = dir.index();
        let mut rest = data;
        while !rest.is_empty() {
            let state = std::mem::take(&mut st.msg[i]);
            st.msg[i] = match state {
                MsgState::Idle if rest.len() >= MESSAGE_PREFIX_LEN => {
                    let (p, r) = rest.split_at(MESSAGE_PREFIX_LEN);
                    rest = r;
                    let mut buf = [0u8; MESSAGE_PREFIX_LEN];
                    buf.copy_from_slice(p);
                    self.start_message(dir, stream, st, buf)
                }
                MsgState::Idle => MsgState::Prefix {
                    buf: [0; MESSAGE_PREFIX_LEN],
                    have: 0,
                },
                MsgState::Prefix { mut buf, have } => {
                    let n = (MESSAGE_PREFIX_LEN - have).min(rest.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(have..have + n), rest.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    rest = rest.get(n..).unwrap_or_default();
                    if have + n < MESSAGE_PREFIX_LEN {
                        MsgState::Prefix { buf, have: have + n }
                    } else {
                        self.start_message(dir, stream, st, buf)
                    }
                }
                MsgState::Body {
                    compressed,
                    len,
                    left,
                    mut buf,
                    mut skip,
                    mut reserved,
                } => {
                    let avail = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                    let n = left.min(avail);
                    let (piece, r) = rest.split_at(n as usize);
                    rest = r;
                    if skip.is_none() && !self.shared.payloads {
                        skip = Some(SkipReason::PayloadsOff);
                        buf = None;
                        self.release(&mut reserved);
                    }
                    if skip.is_none() {
                        if left == len && n == left {
                            // The whole message is in this piece: slice, do not copy.
                            let whole = slice_or_copy(owner, piece);
                            self.release(&mut reserved);
                            self.finish(dir, stream, st, compressed, len, Some(whole), None);
                            continue;
                        }
                        let b = buf.get_or_insert_with(Vec::new);
                        grow_for(b, piece.len(), len as usize);
                        b.extend_from_slice(piece);
                    }
                    let left = left - n;
                    if left == 0 {
                        self.release(&mut reserved);
                        let data = if skip.is_none() {
                            Some(Bytes::from(buf.unwrap_or_default()))
                        } else {
                            None
                        };
                        self.finish(dir, stream, st, compressed, len, data, skip);
                        continue;
                    }
                    MsgState::Body {
                        compressed,
                        len,
                        left,
                        buf,
                        skip,
                        reserved,
                    }
                }
            };
        }
    }

    fn end_of_direction(&mut self, dir: Direction, stream: StreamId, st: &mut CallState) {
        let i = dir.index();
        let state = std::mem::take(&mut st.msg[i]);
        if !matches!(state, MsgState::Idle) {
            self.out.push(GrpcEvent::Anomaly(Anomaly::TruncatedMessage));
        }
        self.cut(stream, dir, state);
    }

    fn stream_end(&mut self, stream: StreamId, st: CallState, end: StreamEnd) {
        let [a, b] = st.msg;
        self.cut(stream, Direction::ClientToServer, a);
        self.cut(stream, Direction::ServerToClient, b);
        self.out.push(GrpcEvent::StreamEnd { stream, end });
    }

    fn anomaly(&mut self, anomaly: Anomaly) {
        self.out.push(GrpcEvent::Anomaly(anomaly));
    }

    fn gave_up(&mut self, reason: GiveUp) {
        self.shared.reserved = 0;
        self.out.push(GrpcEvent::GaveUp(reason));
    }
}

impl Sink<'_> {
    /// A full prefix was read: decide whether to buffer the body.
    fn start_message(
        &mut self,
        dir: Direction,
        stream: StreamId,
        st: &mut CallState,
        prefix: [u8; MESSAGE_PREFIX_LEN],
    ) -> MsgState {
        let [flag, l0, l1, l2, l3] = prefix;
        let compressed = flag != 0;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        let len_usize = len as usize;
        let limits = &self.shared.limits;
        let skip = if len_usize > limits.max_message {
            Some(SkipReason::TooLarge)
        } else if !self.shared.payloads {
            Some(SkipReason::PayloadsOff)
        } else if let Some(reason) = st.skip[dir.index()] {
            Some(reason)
        } else if compressed && matches!(st.encoding[dir.index()], Encoding::Identity | Encoding::Other) {
            Some(SkipReason::UnsupportedEncoding)
        } else if self.shared.reserved.saturating_add(len_usize) > limits.max_buffered_per_conn {
            Some(SkipReason::BufferFull)
        } else {
            None
        };
        if len == 0 {
            let data = if skip.is_none() { Some(Bytes::new()) } else { None };
            self.finish(dir, stream, st, compressed, 0, data, skip);
            return MsgState::Idle;
        }
        let reserved = if skip.is_none() { len_usize } else { 0 };
        self.shared.reserved = self.shared.reserved.saturating_add(reserved);
        MsgState::Body {
            compressed,
            len,
            left: len,
            buf: None,
            skip,
            reserved,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        dir: Direction,
        stream: StreamId,
        st: &mut CallState,
        compressed: bool,
        len: u32,
        data: Option<Bytes>,
        skip: Option<SkipReason>,
    ) {
        let i = dir.index();
        let (data, skipped) = match data {
            Some(raw) if compressed => {
                let max = self.shared.limits.max_decompressed;
                match decompress(st.encoding[i], &raw, max) {
                    Ok(d) => (Some(d), None),
                    Err(reason) => (None, Some(reason)),
                }
            }
            Some(raw) => (Some(raw), None),
            None => (None, skip),
        };
        if let Some(c) = st.messages.get_mut(i) {
            *c = c.saturating_add(1);
        }
        let message = Message {
            compressed,
            len: u64::from(len),
            data,
            skipped,
        };
        self.out.push(match dir {
            Direction::ClientToServer => GrpcEvent::RequestMessage { stream, message },
            Direction::ServerToClient => GrpcEvent::ResponseMessage { stream, message },
        });
    }

    fn release(&mut self, reserved: &mut usize) {
        self.shared.reserved = self.shared.reserved.saturating_sub(*reserved);
        *reserved = 0;
    }

    /// A message state dropped with its stream or direction: its reservation is released
    /// and a message cut in its body is reported (a partial prefix has no length to report).
    fn cut(&mut self, stream: StreamId, direction: Direction, state: MsgState) {
        if let MsgState::Body {
            len,
            skip,
            mut reserved,
            ..
        } = state
        {
            self.release(&mut reserved);
            self.out.push(GrpcEvent::MessageCut {
                stream,
                direction,
                len: u64::from(len),
                reason: skip.unwrap_or(SkipReason::Truncated),
            });
        }
    }
}

/// `piece` as a `Bytes` sharing `owner`'s memory when it lies inside it, else a copy.
fn slice_or_copy(owner: Option<&Bytes>, piece: &[u8]) -> Bytes {
    if let Some(o) = owner {
        let (start, end) = (o.as_ptr() as usize, o.as_ptr() as usize + o.len());
        let p = piece.as_ptr() as usize;
        if !piece.is_empty() && p >= start && p + piece.len() <= end {
            return o.slice_ref(piece);
        }
    }
    Bytes::copy_from_slice(piece)
}

/// Grow `buf` for `more` bytes without ever going past the message's `total` length.
fn grow_for(buf: &mut Vec<u8>, more: usize, total: usize) {
    let need = buf.len().saturating_add(more);
    if need <= buf.capacity() {
        return;
    }
    let target = need.max(buf.capacity().saturating_mul(2)).min(total.max(need));
    buf.reserve_exact(target - buf.len());
}

/// Decompress one message with the stream's declared encoding, reading at most `max` bytes.
fn decompress(encoding: Encoding, raw: &[u8], max: usize) -> Result<Bytes, SkipReason> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::with_capacity(raw.len().saturating_mul(2).min(max));
    let res = match encoding {
        Encoding::Gzip => flate2::read::GzDecoder::new(raw).take(limit).read_to_end(&mut out),
        Encoding::Deflate => flate2::read::ZlibDecoder::new(raw).take(limit).read_to_end(&mut out),
        Encoding::Identity | Encoding::Other => return Err(SkipReason::UnsupportedEncoding),
    };
    match res {
        Err(_) => Err(SkipReason::DecompressFailed),
        Ok(_) if out.len() > max => Err(SkipReason::DecompressTooLarge),
        Ok(_) => Ok(Bytes::from(out)),
    }
}

#[cfg(test)]
mod tests;

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .field("payloads", &self.payloads)
            .field("interest", &self.interest.is_some())
            .field("reserved", &self.reserved)
            .finish()
    }
}
