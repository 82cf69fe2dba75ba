//! HTTP/2 drain: tells the client the connection is going away the way grpc-go's and Go's
//! http2 servers do, so that no stream is dropped or run twice. First a GOAWAY naming the
//! highest possible stream (2^31-1: "nothing refused yet") followed by a PING with our own
//! payload; the client's ACK of that PING proves it has read the GOAWAY, so every stream it
//! opened before is already on its way to us. Only then the final GOAWAY, with the highest
//! client stream forwarded so far; streams above it are never forwarded (the client sees
//! them refused and retries them elsewhere). The connection may close once every stream up
//! to that id has ended.
//!
//! Both directions are walked frame header by frame header (payloads skipped, no HPACK):
//! daemon-to-client to know the frame boundaries our frames may go between, client-to-daemon
//! to know the streams and to take out the two kinds of frames the drain removes (the ACK
//! of our PING, and frames of streams above the final GOAWAY). Header blocks are never
//! changed or added, so neither side's HPACK table moves; a removed block of a refused stream
//! is the one exception, and the connection ends if the client then sends another block the
//! daemon would decode against a table that block would have changed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::h2::frame::{FRAME_HEADER_LEN, FrameHeader, FrameType, PREFACE, flags};
use crate::wire::inject::Emit;

/// The opaque payload of runtime-tap's drain PING: its ACK is recognised by it.
pub const PING_PAYLOAD: [u8; 8] = *b"rtapdrn1";
/// The highest stream id (2^31-1): the first GOAWAY's "nothing refused yet".
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// Most client streams tracked at once; past it the drain gives up on the connection (it
/// then gets the grace period). SETTINGS_MAX_CONCURRENT_STREAMS of the daemons is far below.
pub const MAX_TRACKED_STREAMS: usize = 16_384;
/// Bytes of one GOAWAY (no debug data) or PING frame.
pub const CONTROL_FRAME_LEN: usize = FRAME_HEADER_LEN + 8;

/// A GOAWAY frame, NO_ERROR, no debug data.
pub fn goaway_frame(last_stream: u32) -> [u8; CONTROL_FRAME_LEN] {
    control_frame(
        FrameType::GoAway,
        0,
        (last_stream & MAX_STREAM_ID).to_be_bytes(),
        [0; 4],
    )
}

/// A PING frame (not an ACK) with `payload`.
pub fn ping_frame(payload: [u8; 8]) -> [u8; CONTROL_FRAME_LEN] {
    let (a, b) = payload.split_at(4);
    control_frame(
        FrameType::Ping,
        0,
        a.try_into().unwrap_or_default(),
        b.try_into().unwrap_or_default(),
    )
}

/// Whether `frame` (header and payload) is the ACK of runtime-tap's drain PING.
pub fn is_drain_ping_ack(frame: &[u8]) -> bool {
    let Some(hdr) = frame
        .get(..FRAME_HEADER_LEN)
        .and_then(|h| <&[u8; FRAME_HEADER_LEN]>::try_from(h).ok())
    else {
        return false;
    };
    let hdr = FrameHeader::parse(hdr);
    hdr.kind == FrameType::Ping
        && hdr.has(flags::ACK)
        && hdr.stream == 0
        && hdr.len == 8
        && frame.len() == CONTROL_FRAME_LEN
        && frame[FRAME_HEADER_LEN..] == PING_PAYLOAD
}

fn control_frame(kind: FrameType, flag_bits: u8, a: [u8; 4], b: [u8; 4]) -> [u8; CONTROL_FRAME_LEN] {
    let hdr = FrameHeader {
        len: 8,
        kind,
        flags: flag_bits,
        stream: 0,
    }
    .encode();
    let mut out = [0u8; CONTROL_FRAME_LEN];
    out[..FRAME_HEADER_LEN].copy_from_slice(&hdr);
    out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 4].copy_from_slice(&a);
    out[FRAME_HEADER_LEN + 4..].copy_from_slice(&b);
    out
}

/// Where the drain of one connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No drain asked for: every byte passes, streams are only counted.
    Serving,
    /// The first GOAWAY and the PING go out at the next daemon-to-client frame boundary.
    WantFirst,
    /// Sent; waiting for the client's ACK of our PING.
    AwaitAck,
    /// ACK seen (and removed): the final GOAWAY goes out at the next boundary.
    WantFinal,
    /// The final GOAWAY is out: streams up to `last` run to their end, later ones are dropped.
    Final,
}

const CLIENT_ENDED: u8 = 1;
const SERVER_ENDED: u8 = 2;

/// One direction's position: a partial frame header, or payload bytes left.
#[derive(Default)]
struct Walk {
    hdr: [u8; FRAME_HEADER_LEN],
    have: usize,
    left: usize,
}

/// What happens to the payload of the client frame being walked.
enum Payload {
    Pass,
    Drop,
    /// A PING ACK held whole (header included) to see whether it answers ours.
    Ack(Vec<u8>),
}

/// The HTTP/2 drain state of one connection.
pub struct H2Drain {
    preface_left: usize,
    client: Walk,
    payload: Payload,
    /// The current client frame header was held back (not yet emitted).
    client_hdr_held: bool,
    server: Walk,
    /// Complete daemon frames seen: our frames go after the daemon's first (its SETTINGS).
    server_frames: u64,
    /// First payload bytes of a daemon GOAWAY (its last stream id).
    server_goaway: Option<Vec<u8>>,
    /// Open client streams and which sides ended them.
    /// Fx-hashed, as the decoder's streams are (`wire::h2::conn`): a lookup per frame.
    streams: rustc_hash::FxHashMap<u32, u8>,
    max_client: u32,
    phase: Phase,
    /// The final GOAWAY's last stream id.
    last: u32,
    /// A header block of a refused stream was removed: the daemon's HPACK table may now lag.
    removed_block: bool,
    /// The client sent another header block after one was removed: the connection must end.
    out_of_step: bool,
    goaways: u32,
    gave_up: Option<&'static str>,
}

impl Default for H2Drain {
    fn default() -> Self {
        H2Drain {
            preface_left: PREFACE.len(),
            client: Walk::default(),
            payload: Payload::Pass,
            client_hdr_held: false,
            server: Walk::default(),
            server_frames: 0,
            server_goaway: None,
            streams: rustc_hash::FxHashMap::default(),
            max_client: 0,
            phase: Phase::Serving,
            last: MAX_STREAM_ID,
            removed_block: false,
            out_of_step: false,
            goaways: 0,
            gave_up: None,
        }
    }
}

impl H2Drain {
    /// Ask for the drain: the GOAWAYs go out from the next frame boundary on.
    pub fn start(&mut self) {
        if self.phase == Phase::Serving {
            self.phase = Phase::WantFirst;
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Client streams not yet ended.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Why the drain stopped following the connection, if it did.
    pub fn gave_up(&self) -> Option<&'static str> {
        self.gave_up
    }

    /// GOAWAY frames emitted since the last call.
    pub fn take_goaways(&mut self) -> u32 {
        std::mem::take(&mut self.goaways)
    }

    /// The connection may close now: the final GOAWAY is out and every stream up to it ended
    /// but those `subscription` says are event subscriptions (the client renews those on its
    /// new connection; they would otherwise hold the connection for the whole grace period),
    /// or the client went on with a header block the daemon could no longer decode.
    pub fn finished(&self, subscription: &dyn Fn(u32) -> bool) -> bool {
        self.gave_up.is_none()
            && ((self.phase == Phase::Final && self.streams.keys().all(|&s| subscription(s))) || self.out_of_step)
    }

    /// Whether the client sent a header block after a removed one (the reason to close early).
    pub fn out_of_step(&self) -> bool {
        self.out_of_step
    }

    /// Client bytes as they were read: the bytes to forward (the same bytes unless the drain
    /// removes a frame).
    pub fn client_bytes(&mut self, input: &Bytes) -> Bytes {
        let mut emit = Emit::new(input);
        let mut pos = 0;
        if self.preface_left > 0 {
            let n = self.preface_left.min(input.len());
            emit.input(0, n);
            pos = n;
            self.preface_left -= n;
        }
        while pos < input.len() {
            if self.gave_up.is_some() {
                emit.input(pos, input.len());
                break;
            }
            if self.client.left > 0 {
                let n = self.client.left.min(input.len() - pos);
                match &mut self.payload {
                    Payload::Pass => emit.input(pos, pos + n),
                    Payload::Drop => {}
                    Payload::Ack(held) => held.extend_from_slice(&input[pos..pos + n]),
                }
                pos += n;
                self.client.left -= n;
                if self.client.left == 0 {
                    self.client_payload_done(&mut emit);
                }
                continue;
            }
            if self.client.have == 0 {
                // From the PING on, a frame header is held until whole: it may be removed.
                self.client_hdr_held = matches!(self.phase, Phase::AwaitAck | Phase::WantFinal | Phase::Final);
            }
            let n = (FRAME_HEADER_LEN - self.client.have).min(input.len() - pos);
            let have = self.client.have;
            self.client.hdr[have..have + n].copy_from_slice(&input[pos..pos + n]);
            if !self.client_hdr_held {
                emit.input(pos, pos + n);
            }
            pos += n;
            self.client.have += n;
            if self.client.have < FRAME_HEADER_LEN {
                break;
            }
            self.client.have = 0;
            let hdr = FrameHeader::parse(&self.client.hdr);
            self.payload = self.client_frame(&hdr);
            if self.client_hdr_held && matches!(self.payload, Payload::Pass) {
                emit.owned(Bytes::copy_from_slice(&self.client.hdr));
            }
            self.client.left = hdr.len as usize;
            if self.client.left == 0 {
                self.client_payload_done(&mut emit);
            }
        }
        emit.finish()
    }

    /// Client bytes held back (a partial frame header, a PING ACK), unchanged: the client
    /// closed before they were whole.
    pub fn release_client(&mut self) -> Bytes {
        let mut out = Vec::new();
        if let Payload::Ack(held) = std::mem::replace(&mut self.payload, Payload::Pass) {
            out = held;
        } else if self.client_hdr_held {
            out.extend_from_slice(&self.client.hdr[..self.client.have]);
        }
        self.client.have = 0;
        self.client.left = 0;
        self.client_hdr_held = false;
        Bytes::from(out)
    }

    /// A client frame header: the streams it opens or ends, and what becomes of its payload.
    fn client_frame(&mut self, hdr: &FrameHeader) -> Payload {
        let s = hdr.stream;
        if self.phase == Phase::Final && s > self.last {
            // A stream the final GOAWAY refused: the client retries it elsewhere.
            if matches!(hdr.kind, FrameType::Headers | FrameType::Continuation) {
                self.removed_block = true;
            }
            return Payload::Drop;
        }
        match hdr.kind {
            FrameType::Headers => {
                if self.removed_block {
                    self.out_of_step = true;
                }
                if !s.is_multiple_of(2) && s > self.max_client {
                    if self.streams.len() >= MAX_TRACKED_STREAMS {
                        self.gave_up.get_or_insert("too_many_streams");
                        return Payload::Pass;
                    }
                    self.max_client = s;
                    self.streams.insert(s, 0);
                }
                if hdr.has(flags::END_STREAM) {
                    self.end(s, CLIENT_ENDED);
                }
            }
            FrameType::Data if hdr.has(flags::END_STREAM) => self.end(s, CLIENT_ENDED),
            FrameType::RstStream => {
                self.streams.remove(&s);
            }
            FrameType::Ping
                if self.client_hdr_held
                    && self.phase == Phase::AwaitAck
                    && hdr.has(flags::ACK)
                    && hdr.len == 8
                    && s == 0 =>
            {
                return Payload::Ack(self.client.hdr.to_vec());
            }
            _ => {}
        }
        Payload::Pass
    }

    fn client_payload_done(&mut self, emit: &mut Emit<'_>) {
        if let Payload::Ack(held) = std::mem::replace(&mut self.payload, Payload::Pass) {
            if self.phase == Phase::AwaitAck && is_drain_ping_ack(&held) {
                // Ours: the client has read the first GOAWAY. Not forwarded (the daemon never
                // sent that PING).
                self.phase = Phase::WantFinal;
            } else {
                emit.owned(Bytes::from(held));
            }
        }
    }

    fn end(&mut self, stream: u32, side: u8) {
        if let Some(ended) = self.streams.get_mut(&stream) {
            *ended |= side;
            if *ended == CLIENT_ENDED | SERVER_ENDED {
                self.streams.remove(&stream);
            }
        }
    }

    /// Daemon bytes as they were read: the bytes to forward, with the drain's frames put in
    /// at the first frame boundary when they are due.
    pub fn server_bytes(&mut self, input: &Bytes) -> Bytes {
        let mut emit = Emit::new(input);
        let mut pos = 0;
        loop {
            if let Some(ours) = self.due() {
                emit.owned(ours);
            }
            if pos >= input.len() || self.gave_up.is_some() {
                emit.input(pos, input.len());
                break;
            }
            if self.server.left > 0 {
                let n = self.server.left.min(input.len() - pos);
                if let Some(g) = &mut self.server_goaway
                    && g.len() < 4
                {
                    let take = (4 - g.len()).min(n);
                    g.extend_from_slice(&input[pos..pos + take]);
                }
                emit.input(pos, pos + n);
                pos += n;
                self.server.left -= n;
                if self.server.left == 0 {
                    self.server_frame_done();
                }
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.server.have).min(input.len() - pos);
            let have = self.server.have;
            self.server.hdr[have..have + n].copy_from_slice(&input[pos..pos + n]);
            emit.input(pos, pos + n);
            pos += n;
            self.server.have += n;
            if self.server.have < FRAME_HEADER_LEN {
                continue;
            }
            self.server.have = 0;
            let hdr = FrameHeader::parse(&self.server.hdr);
            match hdr.kind {
                FrameType::Headers | FrameType::Data if hdr.has(flags::END_STREAM) => {
                    self.end(hdr.stream, SERVER_ENDED)
                }
                FrameType::RstStream => {
                    self.streams.remove(&hdr.stream);
                }
                FrameType::GoAway if hdr.stream == 0 => self.server_goaway = Some(Vec::with_capacity(4)),
                _ => {}
            }
            self.server.left = hdr.len as usize;
            if self.server.left == 0 {
                self.server_frame_done();
            }
        }
        emit.finish()
    }

    fn server_frame_done(&mut self) {
        self.server_frames += 1;
        if let Some(g) = self.server_goaway.take()
            && let Ok(last) = <[u8; 4]>::try_from(&g[..])
        {
            // The daemon's own GOAWAY (forwarded untouched): streams above it will never be
            // answered, the client retries them; nothing to wait for.
            let last = u32::from_be_bytes(last) & MAX_STREAM_ID;
            self.streams.retain(|&s, _| s <= last);
        }
    }

    /// The drain's frames to send to the client now, if they are due and the daemon-to-client
    /// direction is between frames (after the daemon's first frame, its SETTINGS).
    pub fn due(&mut self) -> Option<Bytes> {
        let boundary = self.server.have == 0 && self.server.left == 0 && self.server_frames > 0;
        if !boundary || self.gave_up.is_some() {
            return None;
        }
        match self.phase {
            Phase::WantFirst => {
                self.phase = Phase::AwaitAck;
                self.goaways += 1;
                let mut out = BytesMut::with_capacity(2 * CONTROL_FRAME_LEN);
                out.put_slice(&goaway_frame(MAX_STREAM_ID));
                out.put_slice(&ping_frame(PING_PAYLOAD));
                Some(out.freeze())
            }
            Phase::WantFinal => {
                self.phase = Phase::Final;
                self.last = self.max_client;
                self.goaways += 1;
                Some(Bytes::copy_from_slice(&goaway_frame(self.last)))
            }
            _ => None,
        }
    }
}
