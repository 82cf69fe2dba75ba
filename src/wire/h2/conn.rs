//! The passive HTTP/2 connection state machine: frames both directions as the relay saw
//! them, keeps HPACK and SETTINGS state per direction and the stream lifecycle, and hands
//! header lists, DATA payload and stream ends to a [`Handler`]. DATA payload is streamed to
//! the handler as it arrives (never buffered here); only control frames and header blocks are
//! buffered, each bounded. On anything it cannot follow it gives up once, for good.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::mem;

use bytes::Bytes;

use crate::wire::Direction;
use crate::wire::h2::frame::{
    self, DEFAULT_HEADER_TABLE_SIZE, DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_LEN, FrameHeader, FrameType,
    MAX_MAX_FRAME_SIZE, PREFACE, flags, setting,
};
use crate::wire::h2::hpack::{Headers, HpackDecoder, HpackError, Keep};
use crate::wire::h2::{Anomaly, GiveUp, StreamEnd};

/// Default cap on one header block (HEADERS + CONTINUATIONs), and on a buffered SETTINGS
/// payload: 64 KiB.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Default cap on concurrently open streams per connection.
pub const DEFAULT_MAX_STREAMS: usize = 1024;
/// Default cap on one direction's HPACK dynamic table (the protocol default is 4 KiB; Go and
/// Rust gRPC stay there).
pub const DEFAULT_MAX_HPACK_TABLE: usize = 64 * 1024;
/// Default cap on one decoded header list (name + value + 32 per field): 256 KiB.
pub const DEFAULT_MAX_HEADER_LIST: usize = 256 * 1024;
/// Unacknowledged SETTINGS frames remembered per direction; older ones are taken as acked.
const MAX_PENDING_SETTINGS: usize = 32;
/// Padding length byte + priority fields a HEADERS frame may add to its block.
const HEADERS_OVERHEAD: usize = 1 + 255 + 5;
/// Bytes of a GOAWAY payload we read (the debug data after them is skipped).
const GOAWAY_FIXED: usize = 8;

/// Stream identifier.
pub type StreamId = u32;

/// Memory bounds of the HTTP/2 layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Limits {
    /// Max bytes of one header block; above it the connection is given up.
    pub max_header_block: usize,
    /// Max open streams; above it the connection is given up.
    pub max_streams: usize,
    /// Max HPACK dynamic table per direction.
    pub max_hpack_table: usize,
    /// Max decoded header list kept per block.
    pub max_header_list: usize,
}

impl Default for H2Limits {
    fn default() -> Self {
        H2Limits {
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
            max_streams: DEFAULT_MAX_STREAMS,
            max_hpack_table: DEFAULT_MAX_HPACK_TABLE,
            max_header_list: DEFAULT_MAX_HEADER_LIST,
        }
    }
}

/// What a header list is, by its place in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderRole {
    /// The client's first HEADERS: opens the stream.
    Request,
    /// A later client HEADERS (request trailers; gRPC sends none).
    RequestTrailers,
    /// A 1xx response header block (more follow).
    Informational,
    /// The server's response headers.
    Response,
    /// The server's trailers; `trailers_only` when no response headers came before.
    Trailers {
        /// A Trailers-Only response (HEADERS with END_STREAM first).
        trailers_only: bool,
    },
}

/// Receives what the connection decodes. `Stream` is the handler's per-stream state, owned by
/// the connection's stream table and handed back at the end.
pub trait Handler {
    /// Per-stream state.
    type Stream: Default;
    /// A decoded header list on an open stream.
    fn headers(&mut self, dir: Direction, id: StreamId, st: &mut Self::Stream, role: HeaderRole, headers: Headers);
    /// DATA payload (padding removed), in pieces as the bytes arrive. When `owner` is given,
    /// `data` is a sub-slice of it (zero-copy slicing allowed).
    fn data(&mut self, dir: Direction, id: StreamId, st: &mut Self::Stream, data: &[u8], owner: Option<&Bytes>);
    /// END_STREAM seen in `dir` (after that direction's last headers or data).
    fn end_of_direction(&mut self, dir: Direction, id: StreamId, st: &mut Self::Stream);
    /// The stream is over; its state is handed back.
    fn stream_end(&mut self, id: StreamId, st: Self::Stream, end: StreamEnd);
    /// Something odd, survived.
    fn anomaly(&mut self, anomaly: Anomaly);
    /// The connection is given up (called once); all stream state was dropped.
    fn gave_up(&mut self, reason: GiveUp);
}

struct Slot<S> {
    /// END_STREAM seen per direction.
    done: [bool; 2],
    /// Response headers (non-1xx) seen.
    responded: bool,
    user: S,
}

/// SETTINGS advertised by the sender of one direction.
#[derive(Debug)]
struct Advertised {
    table_acked: u32,
    /// One entry per unacknowledged SETTINGS frame: its header table size, if any.
    table_pending: VecDeque<Option<u32>>,
    /// Largest SETTINGS_MAX_FRAME_SIZE ever advertised (a memory bound, not a correctness
    /// check, so lenient about SETTINGS/ACK ordering across directions).
    max_frame: u32,
}

impl Advertised {
    fn new() -> Advertised {
        Advertised {
            table_acked: DEFAULT_HEADER_TABLE_SIZE,
            table_pending: VecDeque::new(),
            max_frame: DEFAULT_MAX_FRAME_SIZE,
        }
    }

    /// The largest table the other side's encoder may use now: acknowledged value or any
    /// value still in flight (the encoder may act on it as soon as it reads it).
    fn table_allowed(&self) -> u32 {
        self.table_pending
            .iter()
            .flatten()
            .fold(self.table_acked, |a, &b| a.max(b))
    }

    fn ack(&mut self) {
        if let Some(Some(v)) = self.table_pending.pop_front() {
            self.table_acked = v;
        }
    }
}

enum Read {
    /// Matching the client preface (c2s only).
    Preface { matched: usize },
    /// Reading a frame header.
    Header { buf: [u8; FRAME_HEADER_LEN], have: usize },
    /// Buffering a frame payload (`want` bytes), then skipping `then_skip`.
    Collect {
        hdr: FrameHeader,
        buf: Vec<u8>,
        want: usize,
        then_skip: u32,
    },
    /// Streaming a DATA payload.
    Data(DataRead),
    /// Skipping `remaining` payload bytes.
    Skip { remaining: u32 },
}

/// Where a DATA frame's payload read stands.
#[derive(Clone, Copy)]
struct DataRead {
    stream: StreamId,
    end_stream: bool,
    /// False when nobody reads this stream's data (it is skipped, not buffered).
    deliver: bool,
    /// PADDED and the pad length byte not read yet (`data_left` is then the whole payload).
    need_pad_len: bool,
    data_left: u32,
    pad_left: u32,
}

/// How a frame's payload is read.
enum Plan {
    /// Buffer `want` bytes (handled whole), then skip `skip`.
    Buffer { want: usize, skip: u32 },
    /// A DATA payload, streamed to its handler as it arrives.
    Stream,
    /// A frame type this decoder does not know: skipped, and reported.
    Unknown,
}

const READ_HEADER: Read = Read::Header {
    buf: [0; FRAME_HEADER_LEN],
    have: 0,
};

#[derive(Clone, Copy, Debug)]
enum BlockKind {
    Headers { end_stream: bool },
    PushPromise,
}

struct PendingBlock {
    stream: StreamId,
    kind: BlockKind,
    buf: Vec<u8>,
}

struct DirState {
    read: Read,
    /// A frame was seen (the first must be SETTINGS).
    started: bool,
    eof: bool,
    /// Header block waiting for CONTINUATION.
    block: Option<PendingBlock>,
}

/// One HTTP/2 connection, both directions. `Debug` prints state sizes, never bytes.
pub struct H2Conn<S> {
    limits: H2Limits,
    dirs: [DirState; 2],
    /// `hpack[d]` decodes header blocks sent on direction `d`.
    hpack: [HpackDecoder; 2],
    /// The fields handed to the handler (the tables take every field).
    keep: Keep,
    /// `adv[d]`: what the sender on direction `d` advertised.
    adv: [Advertised; 2],
    /// Fx-hashed: looked up on every frame, and SipHash's flood resistance buys nothing for
    /// ids bounded by the stream limit (`observe::grpc::GrpcSession::calls` has the figure).
    streams: FxHashMap<StreamId, Slot<S>>,
    max_client_stream: StreamId,
    gave_up: Option<GiveUp>,
}

impl<S> std::fmt::Debug for H2Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Conn")
            .field("open_streams", &self.streams.len())
            .field("max_client_stream", &self.max_client_stream)
            .field("eof", &[self.dirs[0].eof, self.dirs[1].eof])
            .field("hpack", &self.hpack)
            .field("gave_up", &self.gave_up)
            .finish_non_exhaustive()
    }
}

impl<S: Default> H2Conn<S> {
    /// A connection about to see its first bytes.
    pub fn new(limits: H2Limits) -> H2Conn<S> {
        let dir = |read| DirState {
            read,
            started: false,
            eof: false,
            block: None,
        };
        H2Conn {
            limits,
            dirs: [dir(Read::Preface { matched: 0 }), dir(READ_HEADER)],
            hpack: [
                HpackDecoder::new(limits.max_hpack_table),
                HpackDecoder::new(limits.max_hpack_table),
            ],
            keep: Keep::All,
            adv: [Advertised::new(), Advertised::new()],
            streams: FxHashMap::default(),
            max_client_stream: 0,
            gave_up: None,
        }
    }

    /// Hand the handler only the header fields `keep` wants (default: all).
    pub fn keep_fields(&mut self, keep: Keep) {
        self.keep = keep;
    }

    /// Why decoding stopped, if it did.
    pub fn gave_up(&self) -> Option<GiveUp> {
        self.gave_up
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes this layer holds in buffers (partial control frames and header blocks).
    pub fn buffered_bytes(&self) -> usize {
        self.dirs
            .iter()
            .map(|d| {
                let read = match &d.read {
                    Read::Collect { buf, .. } => buf.capacity(),
                    _ => 0,
                };
                read + d.block.as_ref().map_or(0, |b| b.buf.capacity())
            })
            .sum()
    }

    /// Per-stream handler state, for inspection.
    pub fn stream(&self, id: StreamId) -> Option<&S> {
        self.streams.get(&id).map(|s| &s.user)
    }

    /// The handler state of an open stream, to change.
    pub fn stream_mut(&mut self, id: StreamId) -> Option<&mut S> {
        self.streams.get_mut(&id).map(|s| &mut s.user)
    }

    /// Iterate the handler state of all open streams.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, &S)> + '_ {
        self.streams.iter().map(|(id, s)| (*id, &s.user))
    }

    /// Feed one chunk read on `dir`. When `owner` is given, `input` should be (a slice of) it
    /// so that handlers can slice payload out of it without copying.
    pub fn feed<H: Handler<Stream = S>>(&mut self, dir: Direction, input: &[u8], owner: Option<&Bytes>, h: &mut H) {
        if self.gave_up.is_some() || input.is_empty() {
            return;
        }
        let i = dir.index();
        if self.dirs[i].eof {
            h.anomaly(Anomaly::DataAfterEof);
            return;
        }
        let mut pos = 0usize;
        while self.gave_up.is_none() {
            let rest = input.get(pos..).unwrap_or_default();
            let state = mem::replace(&mut self.dirs[i].read, READ_HEADER);
            // Each step consumes from `rest` and says whether to go on (`None`: the input is
            // used up, or the connection was given up; the state to resume from is stored).
            let step = match state {
                Read::Preface { matched } => self.read_preface(dir, matched, rest, h),
                Read::Header { buf, have } => self.read_header(dir, buf, have, rest, h),
                Read::Collect {
                    hdr,
                    buf,
                    want,
                    then_skip,
                } => self.read_collect(dir, (hdr, buf, want, then_skip), rest, h),
                Read::Data(d) => self.read_data(dir, d, rest, owner, h),
                Read::Skip { remaining } => self.read_skip(dir, remaining, rest),
            };
            match step {
                Some(n) => pos += n,
                None => return,
            }
        }
    }

    fn read_preface<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        matched: usize,
        rest: &[u8],
        h: &mut H,
    ) -> Option<usize> {
        let Some(expect) = PREFACE.get(matched..) else {
            return Some(0);
        };
        let n = expect.len().min(rest.len());
        if rest.get(..n) != expect.get(..n) {
            self.give_up(GiveUp::BadPreface, h);
            return None;
        }
        if matched + n < PREFACE.len() {
            self.dirs[dir.index()].read = Read::Preface { matched: matched + n };
            return None;
        }
        Some(n)
    }

    fn read_header<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        mut buf: [u8; FRAME_HEADER_LEN],
        have: usize,
        rest: &[u8],
        h: &mut H,
    ) -> Option<usize> {
        if rest.is_empty() {
            self.dirs[dir.index()].read = Read::Header { buf, have };
            return None;
        }
        let n = (FRAME_HEADER_LEN - have).min(rest.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(have..have + n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        if have + n < FRAME_HEADER_LEN {
            self.dirs[dir.index()].read = Read::Header { buf, have: have + n };
            return None;
        }
        let hdr = FrameHeader::parse(&buf);
        Some(n + self.start_frame(dir, hdr, rest.get(n..).unwrap_or_default(), h))
    }

    fn read_collect<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        (hdr, mut buf, want, then_skip): (FrameHeader, Vec<u8>, usize, u32),
        rest: &[u8],
        h: &mut H,
    ) -> Option<usize> {
        let n = want.saturating_sub(buf.len()).min(rest.len());
        buf.extend_from_slice(rest.get(..n).unwrap_or_default());
        let i = dir.index();
        if buf.len() < want {
            self.dirs[i].read = Read::Collect {
                hdr,
                buf,
                want,
                then_skip,
            };
            return None;
        }
        if then_skip > 0 {
            self.dirs[i].read = Read::Skip { remaining: then_skip };
        }
        self.frame_payload(dir, hdr, &buf, h);
        Some(n)
    }

    fn read_data<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        d: DataRead,
        rest: &[u8],
        owner: Option<&Bytes>,
        h: &mut H,
    ) -> Option<usize> {
        let i = dir.index();
        if d.need_pad_len {
            let Some(&pad) = rest.first() else {
                self.dirs[i].read = Read::Data(d);
                return None;
            };
            // data_left holds the payload length here, at least 1 (checked).
            let Some(left) = d.data_left.checked_sub(1).and_then(|l| l.checked_sub(u32::from(pad))) else {
                self.give_up(GiveUp::ProtocolError, h);
                return None;
            };
            self.dirs[i].read = Read::Data(DataRead {
                need_pad_len: false,
                data_left: left,
                pad_left: u32::from(pad),
                ..d
            });
            return Some(1);
        }
        if d.data_left == 0 && d.pad_left == 0 {
            // Frame done.
            if d.end_stream && d.deliver {
                self.end_stream(dir, d.stream, h);
            }
            return Some(0);
        }
        if rest.is_empty() {
            self.dirs[i].read = Read::Data(d);
            return None;
        }
        let avail = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let n = d.data_left.min(avail);
        if n > 0 && d.deliver {
            let piece = rest.get(..n as usize).unwrap_or_default();
            self.deliver_data(dir, d.stream, piece, owner, h);
        }
        let p = d.pad_left.min(avail - n);
        self.dirs[i].read = Read::Data(DataRead {
            data_left: d.data_left - n,
            pad_left: d.pad_left - p,
            ..d
        });
        Some((n + p) as usize)
    }

    fn read_skip(&mut self, dir: Direction, remaining: u32, rest: &[u8]) -> Option<usize> {
        let avail = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let n = remaining.min(avail);
        if remaining > n {
            self.dirs[dir.index()].read = Read::Skip {
                remaining: remaining - n,
            };
            return None;
        }
        Some(n as usize)
    }

    /// `dir` reached its end (half-close, or the connection ended).
    pub fn eof<H: Handler<Stream = S>>(&mut self, dir: Direction, h: &mut H) {
        if self.gave_up.is_some() {
            return;
        }
        let i = dir.index();
        let d = &mut self.dirs[i];
        if d.eof {
            return;
        }
        d.eof = true;
        let mid_frame = match &d.read {
            Read::Preface { matched } => *matched > 0,
            Read::Header { have, .. } => *have > 0,
            _ => true,
        };
        d.read = READ_HEADER;
        // Both are released whatever the other says (no short-circuit: found by fuzzing, a
        // pending header block outlived the EOF when a frame was cut too).
        let mid_block = d.block.take().is_some();
        if mid_frame || mid_block {
            h.anomaly(Anomaly::TruncatedFrame);
        }
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.maybe_close(id, h);
        }
    }

    fn give_up<H: Handler<Stream = S>>(&mut self, reason: GiveUp, h: &mut H) {
        if self.gave_up.is_some() {
            return;
        }
        self.gave_up = Some(reason);
        self.streams = FxHashMap::default();
        for d in &mut self.dirs {
            d.read = READ_HEADER;
            d.block = None;
        }
        let cap = self.limits.max_hpack_table;
        self.hpack = [HpackDecoder::new(cap), HpackDecoder::new(cap)];
        h.gave_up(reason);
    }

    /// A frame header was read; decide how to read its payload. `rest` is the input after
    /// the header: when a buffered frame's whole payload is there it is handled in place.
    /// Returns how many bytes of `rest` were consumed.
    fn start_frame<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        hdr: FrameHeader,
        rest: &[u8],
        h: &mut H,
    ) -> usize {
        let i = dir.index();
        let plan = self
            .check_frame_start(dir, &hdr)
            .and_then(|()| self.payload_plan(dir, &hdr));
        let (want, skip) = match plan {
            Err(reason) => {
                self.give_up(reason, h);
                return 0;
            }
            Ok(Plan::Stream) => {
                let deliver = self.data_target(dir, hdr.stream, h);
                self.dirs[i].read = Read::Data(DataRead {
                    stream: hdr.stream,
                    end_stream: hdr.has(flags::END_STREAM),
                    deliver,
                    need_pad_len: hdr.has(flags::PADDED),
                    data_left: hdr.len,
                    pad_left: 0,
                });
                return 0;
            }
            Ok(Plan::Unknown) => {
                h.anomaly(Anomaly::UnknownFrameType);
                (0, hdr.len)
            }
            Ok(Plan::Buffer { want, skip }) => (want, skip),
        };
        if let Some(payload) = rest.get(..want) {
            // Whole payload at hand: no buffering.
            if skip > 0 {
                self.dirs[i].read = Read::Skip { remaining: skip };
            }
            self.frame_payload(dir, hdr, payload, h);
            want
        } else {
            let mut buf = Vec::with_capacity(want);
            buf.extend_from_slice(rest);
            self.dirs[i].read = Read::Collect {
                hdr,
                buf,
                want,
                then_skip: skip,
            };
            rest.len()
        }
    }

    /// What every frame must be, whatever its type: SETTINGS first, within the size the
    /// peer advertised, and no other frame inside a header block.
    fn check_frame_start(&mut self, dir: Direction, hdr: &FrameHeader) -> Result<(), GiveUp> {
        let i = dir.index();
        if !self.dirs[i].started {
            self.dirs[i].started = true;
            if hdr.kind != FrameType::Settings || hdr.has(flags::ACK) {
                return Err(GiveUp::BadPreface);
            }
        }
        if hdr.len > self.adv[dir.reverse().index()].max_frame {
            return Err(GiveUp::FrameTooLarge);
        }
        if let Some(block) = &self.dirs[i].block
            && (hdr.kind != FrameType::Continuation || hdr.stream != block.stream)
        {
            return Err(GiveUp::ProtocolError);
        }
        Ok(())
    }

    /// How a frame's payload is read, from its type's rules (RFC 9113 section 6).
    fn payload_plan(&self, dir: Direction, hdr: &FrameHeader) -> Result<Plan, GiveUp> {
        let len = hdr.len as usize;
        let max_block = self.limits.max_header_block;
        let buffer = |want| Ok(Plan::Buffer { want, skip: 0 });
        let skip = |skip| Ok(Plan::Buffer { want: 0, skip });
        let require = |ok: bool| if ok { Ok(()) } else { Err(GiveUp::ProtocolError) };
        match hdr.kind {
            FrameType::Data => {
                require(hdr.stream != 0 && !(hdr.has(flags::PADDED) && hdr.len == 0))?;
                Ok(Plan::Stream)
            }
            FrameType::Headers | FrameType::PushPromise => {
                require(hdr.stream != 0)?;
                if len > max_block.saturating_add(HEADERS_OVERHEAD) {
                    return Err(GiveUp::HeaderBlockTooLarge);
                }
                buffer(len)
            }
            FrameType::Continuation => match self.dirs[dir.index()].block.as_ref().map(|b| b.buf.len()) {
                None => Err(GiveUp::ProtocolError),
                Some(have) if have.saturating_add(len) > max_block => Err(GiveUp::HeaderBlockTooLarge),
                Some(_) => buffer(len),
            },
            FrameType::Priority => {
                require(hdr.stream != 0 && hdr.len == 5)?;
                skip(hdr.len)
            }
            FrameType::RstStream => {
                require(hdr.stream != 0 && hdr.len == 4)?;
                buffer(len)
            }
            FrameType::Settings => {
                require(hdr.stream == 0 && !(hdr.has(flags::ACK) && hdr.len != 0) && hdr.len.is_multiple_of(6))?;
                if len > max_block {
                    return Err(GiveUp::FrameTooLarge);
                }
                buffer(len)
            }
            FrameType::Ping => {
                require(hdr.stream == 0 && hdr.len == 8)?;
                skip(hdr.len)
            }
            FrameType::GoAway => {
                require(hdr.stream == 0 && len >= GOAWAY_FIXED)?;
                Ok(Plan::Buffer {
                    want: GOAWAY_FIXED,
                    skip: hdr.len - GOAWAY_FIXED as u32,
                })
            }
            FrameType::WindowUpdate => {
                require(hdr.len == 4)?;
                skip(hdr.len)
            }
            FrameType::Unknown(_) => Ok(Plan::Unknown),
        }
    }

    /// Handle a buffered frame payload (`payload` holds exactly what `start_frame` wanted).
    fn frame_payload<H: Handler<Stream = S>>(&mut self, dir: Direction, hdr: FrameHeader, payload: &[u8], h: &mut H) {
        let i = dir.index();
        match hdr.kind {
            FrameType::Headers => match frame::headers_fragment(hdr.flags, payload) {
                Ok(frag) => {
                    let kind = BlockKind::Headers {
                        end_stream: hdr.has(flags::END_STREAM),
                    };
                    if frag.len() > self.limits.max_header_block {
                        self.give_up(GiveUp::HeaderBlockTooLarge, h);
                    } else if hdr.has(flags::END_HEADERS) {
                        self.header_block(dir, hdr.stream, kind, frag, h);
                    } else {
                        self.dirs[i].block = Some(PendingBlock {
                            stream: hdr.stream,
                            kind,
                            buf: frag.to_vec(),
                        });
                    }
                }
                Err(_) => self.give_up(GiveUp::ProtocolError, h),
            },
            FrameType::PushPromise => match frame::push_promise_fragment(hdr.flags, payload) {
                Ok((_promised, frag)) => {
                    if frag.len() > self.limits.max_header_block {
                        self.give_up(GiveUp::HeaderBlockTooLarge, h);
                    } else if hdr.has(flags::END_HEADERS) {
                        self.header_block(dir, hdr.stream, BlockKind::PushPromise, frag, h);
                    } else {
                        self.dirs[i].block = Some(PendingBlock {
                            stream: hdr.stream,
                            kind: BlockKind::PushPromise,
                            buf: frag.to_vec(),
                        });
                    }
                }
                Err(_) => self.give_up(GiveUp::ProtocolError, h),
            },
            FrameType::Continuation => {
                let Some(mut block) = self.dirs[i].block.take() else {
                    self.give_up(GiveUp::ProtocolError, h);
                    return;
                };
                block.buf.extend_from_slice(payload);
                if hdr.has(flags::END_HEADERS) {
                    self.header_block(dir, block.stream, block.kind, &block.buf, h);
                } else {
                    self.dirs[i].block = Some(block);
                }
            }
            FrameType::RstStream => match frame::rst_stream_code(payload) {
                Ok(code) => {
                    if let Some(slot) = self.streams.remove(&hdr.stream) {
                        h.stream_end(hdr.stream, slot.user, StreamEnd::Reset { code, by: dir });
                    }
                }
                Err(_) => self.give_up(GiveUp::ProtocolError, h),
            },
            FrameType::Settings => {
                if hdr.has(flags::ACK) {
                    // Acknowledges the oldest SETTINGS of the other direction, which bounds
                    // this direction's encoder.
                    let other = dir.reverse().index();
                    self.adv[other].ack();
                    let allowed = self.adv[other].table_allowed();
                    self.hpack[i].set_protocol_max(allowed as usize);
                } else {
                    self.settings(dir, payload, h);
                }
            }
            FrameType::GoAway => match frame::goaway(payload) {
                Ok((last, _code)) => {
                    if dir == Direction::ServerToClient {
                        let mut gone: Vec<StreamId> = self.streams.keys().copied().filter(|&id| id > last).collect();
                        gone.sort_unstable();
                        for id in gone {
                            if let Some(slot) = self.streams.remove(&id) {
                                h.stream_end(id, slot.user, StreamEnd::GoAway);
                            }
                        }
                    }
                }
                Err(_) => self.give_up(GiveUp::ProtocolError, h),
            },
            // Skipped without buffering.
            FrameType::Data
            | FrameType::Priority
            | FrameType::Ping
            | FrameType::WindowUpdate
            | FrameType::Unknown(_) => {}
        }
    }

    /// SETTINGS sent on `dir`: bounds what the other direction may send.
    fn settings<H: Handler<Stream = S>>(&mut self, dir: Direction, payload: &[u8], h: &mut H) {
        let i = dir.index();
        let mut table = None;
        for (id, value) in frame::settings(payload) {
            match id {
                setting::HEADER_TABLE_SIZE => table = Some(value),
                setting::MAX_FRAME_SIZE => {
                    if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                        self.give_up(GiveUp::ProtocolError, h);
                        return;
                    }
                    self.adv[i].max_frame = self.adv[i].max_frame.max(value);
                }
                _ => {}
            }
        }
        let adv = &mut self.adv[i];
        if adv.table_pending.len() >= MAX_PENDING_SETTINGS {
            adv.ack();
        }
        adv.table_pending.push_back(table);
        let allowed = adv.table_allowed();
        self.hpack[dir.reverse().index()].set_protocol_max(allowed as usize);
    }

    /// A complete header block sent on `dir`: decode it (always, for HPACK state), then
    /// apply it to the stream.
    fn header_block<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        stream: StreamId,
        kind: BlockKind,
        block: &[u8],
        h: &mut H,
    ) {
        let decoded = match self.hpack[dir.index()].decode_kept(block, self.limits.max_header_list, self.keep) {
            Ok(d) => d,
            Err(HpackError::TableTooLarge) => {
                self.give_up(GiveUp::HpackTableTooLarge, h);
                return;
            }
            Err(HpackError::Invalid) => {
                self.give_up(GiveUp::HpackError, h);
                return;
            }
        };
        if decoded.truncated {
            h.anomaly(Anomaly::HeaderListTooLarge);
        }
        match kind {
            BlockKind::PushPromise => h.anomaly(Anomaly::PushPromise),
            BlockKind::Headers { end_stream } => match dir {
                Direction::ClientToServer => self.client_headers(stream, decoded.headers, end_stream, h),
                Direction::ServerToClient => self.server_headers(stream, decoded.headers, end_stream, h),
            },
        }
    }

    fn client_headers<H: Handler<Stream = S>>(&mut self, id: StreamId, headers: Headers, end_stream: bool, h: &mut H) {
        let dir = Direction::ClientToServer;
        if let Some(slot) = self.streams.get_mut(&id) {
            if slot.done[dir.index()] {
                h.anomaly(Anomaly::UnexpectedHeaders);
                return;
            }
            h.headers(dir, id, &mut slot.user, HeaderRole::RequestTrailers, headers);
        } else if id % 2 == 1 && id > self.max_client_stream {
            if self.streams.len() >= self.limits.max_streams {
                self.give_up(GiveUp::TooManyStreams, h);
                return;
            }
            self.max_client_stream = id;
            let mut user = S::default();
            h.headers(dir, id, &mut user, HeaderRole::Request, headers);
            self.streams.insert(
                id,
                Slot {
                    done: [false; 2],
                    responded: false,
                    user,
                },
            );
        } else if id.is_multiple_of(2) {
            h.anomaly(Anomaly::BadStreamId);
            return;
        } else {
            // A stream id already used and closed.
            h.anomaly(Anomaly::UnexpectedHeaders);
            return;
        }
        if end_stream {
            self.end_stream(dir, id, h);
        }
    }

    fn server_headers<H: Handler<Stream = S>>(&mut self, id: StreamId, headers: Headers, end_stream: bool, h: &mut H) {
        let dir = Direction::ServerToClient;
        let Some(slot) = self.streams.get_mut(&id) else {
            if id > self.max_client_stream {
                h.anomaly(Anomaly::UnknownStream);
            }
            return;
        };
        if slot.done[dir.index()] {
            h.anomaly(Anomaly::UnexpectedHeaders);
            return;
        }
        let role = if !slot.responded {
            if end_stream {
                HeaderRole::Trailers { trailers_only: true }
            } else if headers
                .get(":status")
                .is_some_and(|s| s.len() == 3 && s.starts_with('1'))
            {
                HeaderRole::Informational
            } else {
                slot.responded = true;
                HeaderRole::Response
            }
        } else {
            if !end_stream {
                h.anomaly(Anomaly::TrailersWithoutEndStream);
            }
            HeaderRole::Trailers { trailers_only: false }
        };
        h.headers(dir, id, &mut slot.user, role, headers);
        if end_stream {
            self.end_stream(dir, id, h);
        }
    }

    /// Whether the DATA frame starting on `dir` goes to a stream (anomalies decided here,
    /// once per frame, so they do not depend on chunking).
    fn data_target<H: Handler<Stream = S>>(&mut self, dir: Direction, id: StreamId, h: &mut H) -> bool {
        match self.streams.get(&id) {
            Some(slot) if slot.done[dir.index()] => {
                h.anomaly(Anomaly::DataAfterEndStream);
                false
            }
            Some(_) => true,
            None => {
                // Frames racing a reset or GOAWAY are normal; a never-opened id is not.
                if id > self.max_client_stream {
                    h.anomaly(Anomaly::UnknownStream);
                }
                false
            }
        }
    }

    fn deliver_data<H: Handler<Stream = S>>(
        &mut self,
        dir: Direction,
        id: StreamId,
        data: &[u8],
        owner: Option<&Bytes>,
        h: &mut H,
    ) {
        // The stream may have been reset from the other direction mid-frame.
        if let Some(slot) = self.streams.get_mut(&id) {
            h.data(dir, id, &mut slot.user, data, owner);
        }
    }

    fn end_stream<H: Handler<Stream = S>>(&mut self, dir: Direction, id: StreamId, h: &mut H) {
        if let Some(slot) = self.streams.get_mut(&id) {
            slot.done[dir.index()] = true;
            h.end_of_direction(dir, id, &mut slot.user);
        }
        self.maybe_close(id, h);
    }

    /// End the stream when each direction is finished or at EOF.
    fn maybe_close<H: Handler<Stream = S>>(&mut self, id: StreamId, h: &mut H) {
        let Some(slot) = self.streams.get(&id) else {
            return;
        };
        let finished = |d: usize| slot.done[d] || self.dirs[d].eof;
        if !(finished(0) && finished(1)) {
            return;
        }
        let complete = slot.done[0] && slot.done[1];
        if let Some(slot) = self.streams.remove(&id) {
            let end = if complete {
                StreamEnd::Complete
            } else {
                StreamEnd::ConnectionClosed
            };
            h.stream_end(id, slot.user, end);
        }
    }
}
