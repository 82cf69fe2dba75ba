//! HTTP/2 frame layout (RFC 9113 §4 and §6): the 9-byte header, frame types, flags and the
//! payload fields the passive decoder needs. Every read is bounds-checked; nothing panics.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE before any SETTINGS, and its lowest legal value.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Highest legal SETTINGS_MAX_FRAME_SIZE (2^24 - 1).
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;
/// SETTINGS_HEADER_TABLE_SIZE before any SETTINGS.
pub const DEFAULT_HEADER_TABLE_SIZE: u32 = 4_096;

/// Frame flags (their meaning depends on the frame type).
pub mod flags {
    /// DATA, HEADERS: last frame of this direction of the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block is complete.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: a pad length byte and padding are present.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: stream dependency and weight (5 bytes) are present.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE: max HPACK dynamic table of the sender's decoder.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE: largest frame payload the sender accepts.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Frame type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0x0
    Data,
    /// 0x1
    Headers,
    /// 0x2
    Priority,
    /// 0x3
    RstStream,
    /// 0x4
    Settings,
    /// 0x5
    PushPromise,
    /// 0x6
    Ping,
    /// 0x7
    GoAway,
    /// 0x8
    WindowUpdate,
    /// 0x9
    Continuation,
    /// Anything else: ignored (RFC 9113 §4.1).
    Unknown(u8),
}

impl FrameType {
    /// From the type byte.
    pub fn from_u8(b: u8) -> FrameType {
        match b {
            0x0 => FrameType::Data,
            0x1 => FrameType::Headers,
            0x2 => FrameType::Priority,
            0x3 => FrameType::RstStream,
            0x4 => FrameType::Settings,
            0x5 => FrameType::PushPromise,
            0x6 => FrameType::Ping,
            0x7 => FrameType::GoAway,
            0x8 => FrameType::WindowUpdate,
            0x9 => FrameType::Continuation,
            other => FrameType::Unknown(other),
        }
    }

    /// The type byte.
    pub fn as_u8(self) -> u8 {
        match self {
            FrameType::Data => 0x0,
            FrameType::Headers => 0x1,
            FrameType::Priority => 0x2,
            FrameType::RstStream => 0x3,
            FrameType::Settings => 0x4,
            FrameType::PushPromise => 0x5,
            FrameType::Ping => 0x6,
            FrameType::GoAway => 0x7,
            FrameType::WindowUpdate => 0x8,
            FrameType::Continuation => 0x9,
            FrameType::Unknown(b) => b,
        }
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    /// Frame type.
    pub kind: FrameType,
    /// Flags byte.
    pub flags: u8,
    /// Stream id, reserved bit cleared.
    pub stream: u32,
}

impl FrameHeader {
    /// Parse the 9 header bytes.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: FrameType::from_u8(b[3]),
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// The 9 header bytes (length truncated to 24 bits).
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let s = (self.stream & 0x7fff_ffff).to_be_bytes();
        [l[1], l[2], l[3], self.kind.as_u8(), self.flags, s[0], s[1], s[2], s[3]]
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame payload that breaks its type's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FrameError {
    /// Pad length not smaller than the payload.
    #[error("pad length exceeds frame payload")]
    BadPadding,
    /// Payload shorter than its fixed fields.
    #[error("frame payload too short")]
    TooShort,
}

/// Drop the pad length byte and padding when PADDED is set.
///
/// # Errors
///
/// [`FrameError::BadPadding`] when the padding does not fit in the payload.
pub fn strip_padding(flag_bits: u8, payload: &[u8]) -> Result<&[u8], FrameError> {
    if flag_bits & flags::PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or(FrameError::BadPadding)?;
    let keep = rest.len().checked_sub(usize::from(pad)).ok_or(FrameError::BadPadding)?;
    rest.get(..keep).ok_or(FrameError::BadPadding)
}

/// The header block fragment of a HEADERS payload (padding and priority removed).
///
/// # Errors
///
/// Bad padding, or a PRIORITY flag with fewer than 5 bytes.
pub fn headers_fragment(flag_bits: u8, payload: &[u8]) -> Result<&[u8], FrameError> {
    let rest = strip_padding(flag_bits, payload)?;
    if flag_bits & flags::PRIORITY != 0 {
        rest.get(5..).ok_or(FrameError::TooShort)
    } else {
        Ok(rest)
    }
}

/// The promised stream id and header block fragment of a PUSH_PROMISE payload.
///
/// # Errors
///
/// Bad padding, or fewer than 4 bytes after it.
pub fn push_promise_fragment(flag_bits: u8, payload: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    let rest = strip_padding(flag_bits, payload)?;
    let id = be_u32(rest).ok_or(FrameError::TooShort)? & 0x7fff_ffff;
    Ok((id, rest.get(4..).ok_or(FrameError::TooShort)?))
}

/// The (identifier, value) pairs of a SETTINGS payload; a trailing partial entry is ignored
/// (callers check `len % 6` first).
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    })
}

/// The error code of a RST_STREAM payload.
///
/// # Errors
///
/// Fewer than 4 bytes.
pub fn rst_stream_code(payload: &[u8]) -> Result<u32, FrameError> {
    be_u32(payload).ok_or(FrameError::TooShort)
}

/// (last stream id, error code) of a GOAWAY payload.
///
/// # Errors
///
/// Fewer than 8 bytes.
pub fn goaway(payload: &[u8]) -> Result<(u32, u32), FrameError> {
    let last = be_u32(payload).ok_or(FrameError::TooShort)? & 0x7fff_ffff;
    let code = be_u32(payload.get(4..).unwrap_or_default()).ok_or(FrameError::TooShort)?;
    Ok((last, code))
}

fn be_u32(b: &[u8]) -> Option<u32> {
    let four: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(four))
}
