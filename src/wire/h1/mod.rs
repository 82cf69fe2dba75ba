//! Passive HTTP/1.1 decoding (RFC 9112) of one connection, both directions: requests and
//! responses matched in order, bodies passed through as slices (never accumulated),
//! protocol switches (101, docker's attach/exec hijack) followed by byte counts only.
//! Pure: no I/O, no clock; bounded memory; never panics, gives up instead.

use std::fmt;

pub(crate) mod body;
mod conn;
pub(crate) mod head;
#[cfg(test)]
mod tests;

pub use conn::H1Decoder;
pub use head::Headers;

use super::Direction;

/// Default for [`Limits::max_head`]: a request or response head (start line and fields),
/// or a trailer section, longer than this makes the decoder give up. 64 KiB.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;

/// Default for [`Limits::max_pipelined`]: requests waiting for their response at once. 64.
pub const DEFAULT_MAX_PIPELINED: usize = 64;

/// Default for [`Limits::max_headers`]: fields in one head or trailer section. 128.
pub const DEFAULT_MAX_HEADERS: usize = 128;

/// Default for [`Limits::max_chunk_line`]: bytes in one chunk-size line, extensions
/// included. 4 KiB.
pub const DEFAULT_MAX_CHUNK_LINE: usize = 4 * 1024;

/// Bounds on what the decoder keeps or tracks for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest head or trailer section, in bytes; also the most bytes held while waiting
    /// to learn whether a connection switched protocols.
    pub max_head: usize,
    /// Most requests outstanding (sent, response not complete).
    pub max_pipelined: usize,
    /// Most fields in one head or trailer section.
    pub max_headers: usize,
    /// Longest chunk-size line.
    pub max_chunk_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: DEFAULT_MAX_HEAD,
            max_pipelined: DEFAULT_MAX_PIPELINED,
            max_headers: DEFAULT_MAX_HEADERS,
            max_chunk_line: DEFAULT_MAX_CHUNK_LINE,
        }
    }
}

/// Sequence number of a request on its connection, from 0; its response has the same.
pub type ExchangeId = u64;

/// What the decoder saw. Per exchange, in order: `RequestHead`, `RequestBody`*,
/// `RequestEnd`, and `ResponseHead` (informational ones first), `ResponseBody`*,
/// `ResponseEnd` — the two sides interleave as the bytes did. A switched exchange has
/// `ResponseHead` then `Upgraded` and ends with `Closed`.
///
/// `Debug` prints body lengths, not bytes, and header value lengths, not values.
#[derive(Clone, PartialEq, Eq)]
pub enum H1Event {
    /// A request head.
    RequestHead {
        id: ExchangeId,
        method: String,
        target: String,
        /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
        version: u8,
        headers: Headers,
    },
    /// De-chunked request body bytes as they pass (never empty).
    RequestBody { id: ExchangeId, data: bytes::Bytes },
    /// The request is complete.
    RequestEnd {
        id: ExchangeId,
        /// De-chunked body length.
        body_len: u64,
        trailers: Option<Headers>,
    },
    /// A response head. `informational` for 1xx other than 101 (100 Continue etc.): the
    /// final head for the same exchange follows.
    ResponseHead {
        id: ExchangeId,
        status: u16,
        headers: Headers,
        informational: bool,
    },
    /// De-chunked response body bytes as they pass (never empty).
    ResponseBody { id: ExchangeId, data: bytes::Bytes },
    /// The response is complete (for a close-delimited body: at the server's close).
    ResponseEnd {
        id: ExchangeId,
        body_len: u64,
        trailers: Option<Headers>,
    },
    /// The connection stopped being HTTP: 101 Switching Protocols, a 2xx to CONNECT, or
    /// docker's old hijack (a 200 with Content-Type application/vnd.docker.raw-stream or
    /// application/vnd.docker.multiplexed-stream, and neither Content-Length nor
    /// Transfer-Encoding, to `POST .../containers/{id}/attach` or `.../exec/{id}/start`).
    /// From here on only byte counts; the exchange ends with [`H1Event::Closed`].
    Upgraded { id: ExchangeId },
    /// Both sides closed: the end of the connection. `upgraded_bytes` counts the bytes
    /// after the switch of the upgraded exchange, indexed by [`Direction::index`];
    /// `open` lists the exchanges still incomplete (not the upgraded one, which this event
    /// ends normally).
    Closed {
        upgraded_bytes: [u64; 2],
        open: Vec<ExchangeId>,
    },
    /// Something off that the decoder got past.
    Anomaly(Anomaly),
    /// The decoder stopped following the connection; nothing follows this event.
    GaveUp(GiveUp),
}

impl fmt::Debug for H1Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H1Event::RequestHead {
                id,
                method,
                target,
                version,
                headers,
            } => f
                .debug_struct("RequestHead")
                .field("id", id)
                .field("method", method)
                .field("target", target)
                .field("version", version)
                .field("headers", headers)
                .finish(),
            H1Event::RequestBody { id, data } => f
                .debug_struct("RequestBody")
                .field("id", id)
                .field("len", &data.len())
                .finish(),
            H1Event::RequestEnd { id, body_len, trailers } => f
                .debug_struct("RequestEnd")
                .field("id", id)
                .field("body_len", body_len)
                .field("trailers", trailers)
                .finish(),
            H1Event::ResponseHead {
                id,
                status,
                headers,
                informational,
            } => f
                .debug_struct("ResponseHead")
                .field("id", id)
                .field("status", status)
                .field("headers", headers)
                .field("informational", informational)
                .finish(),
            H1Event::ResponseBody { id, data } => f
                .debug_struct("ResponseBody")
                .field("id", id)
                .field("len", &data.len())
                .finish(),
            H1Event::ResponseEnd { id, body_len, trailers } => f
                .debug_struct("ResponseEnd")
                .field("id", id)
                .field("body_len", body_len)
                .field("trailers", trailers)
                .finish(),
            H1Event::Upgraded { id } => f.debug_struct("Upgraded").field("id", id).finish(),
            H1Event::Closed { upgraded_bytes, open } => f
                .debug_struct("Closed")
                .field("upgraded_bytes", upgraded_bytes)
                .field("open", open)
                .finish(),
            H1Event::Anomaly(a) => f.debug_tuple("Anomaly").field(a).finish(),
            H1Event::GaveUp(g) => f.debug_tuple("GaveUp").field(g).finish(),
        }
    }
}

/// Irregularities that do not lose sync: data, not errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// A side closed inside a message (`id` when inside a body).
    Truncated { dir: Direction, id: Option<ExchangeId> },
    /// Bytes after that side's close; ignored.
    DataAfterEof { dir: Direction },
    /// Both `Transfer-Encoding: chunked` and `Content-Length`; the length was ignored
    /// (RFC 9112 section 6.3). A request smuggling sign.
    ChunkedWithLength { dir: Direction, id: ExchangeId },
    /// A trailer section that did not parse; dropped.
    BadTrailers { dir: Direction, id: ExchangeId },
    /// Server bytes that answered no request, found at the server's close.
    UnsolicitedResponse { bytes: u64 },
}

/// Why the decoder stopped following a connection (the bytes still flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// A head or trailer section beyond [`Limits::max_head`].
    #[error("{} head larger than the limit", dir.as_str())]
    HeadTooLarge { dir: Direction },
    /// Not an HTTP/1.x head (a garbage request lands here).
    #[error("{} head is not http/1.x", dir.as_str())]
    MalformedHead { dir: Direction },
    /// More fields than [`Limits::max_headers`].
    #[error("{} head has more fields than the limit", dir.as_str())]
    TooManyHeaders { dir: Direction },
    /// Invalid or conflicting `Content-Length`.
    #[error("{} content-length is invalid", dir.as_str())]
    BadContentLength { dir: Direction },
    /// A request `Transfer-Encoding` whose last coding is not chunked.
    #[error("request transfer-encoding does not end with chunked")]
    BadTransferEncoding,
    /// A chunk-size line or chunk end that does not parse.
    #[error("{} chunked framing is invalid", dir.as_str())]
    BadChunk { dir: Direction },
    /// More than [`Limits::max_pipelined`] requests outstanding.
    #[error("too many requests outstanding")]
    TooManyPipelined,
    /// Server bytes beyond [`Limits::max_head`] with no request to answer.
    #[error("server sent bytes that answer no request")]
    UnexpectedResponse,
    /// Client bytes beyond [`Limits::max_head`] while waiting to learn whether the
    /// connection switched protocols.
    #[error("client sent too much before the protocol switch was answered")]
    ParkedOverflow,
}

impl GiveUp {
    /// Short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GiveUp::HeadTooLarge { .. } => "head_too_large",
            GiveUp::MalformedHead { .. } => "malformed_head",
            GiveUp::TooManyHeaders { .. } => "too_many_headers",
            GiveUp::BadContentLength { .. } => "bad_content_length",
            GiveUp::BadTransferEncoding => "bad_transfer_encoding",
            GiveUp::BadChunk { .. } => "bad_chunk",
            GiveUp::TooManyPipelined => "too_many_pipelined",
            GiveUp::UnexpectedResponse => "unexpected_response",
            GiveUp::ParkedOverflow => "parked_overflow",
        }
    }
}
