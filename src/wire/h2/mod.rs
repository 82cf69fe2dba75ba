//! Passive HTTP/2: frames, HPACK (one decoder per direction) and the connection state
//! machine. It only watches a copy of both directions; it never answers, never fails the
//! connection, and gives up for good on anything it cannot follow.

pub mod conn;
pub mod frame;
pub mod hpack;
pub mod huffman;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testutil;

use crate::wire::Direction;

/// Why the decoder stopped decoding a connection for good (bytes still flow in the relay).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum GiveUp {
    /// The client did not start with the connection preface, or a side's first frame was
    /// not SETTINGS.
    #[error("bad http/2 connection preface")]
    BadPreface,
    /// A frame longer than the peer's advertised SETTINGS_MAX_FRAME_SIZE, or a control frame
    /// longer than we buffer.
    #[error("frame larger than the advertised max frame size")]
    FrameTooLarge,
    /// A header block HPACK could not decode: the dynamic tables are out of sync.
    #[error("hpack decoding failed")]
    HpackError,
    /// A dynamic table size update above what we keep (`Limits::max_hpack_table`).
    #[error("hpack dynamic table larger than the configured limit")]
    HpackTableTooLarge,
    /// A header block (HEADERS + CONTINUATIONs) above `Limits::max_header_block`.
    #[error("header block larger than the configured limit")]
    HeaderBlockTooLarge,
    /// More open streams than `Limits::max_streams`.
    #[error("too many open streams")]
    TooManyStreams,
    /// A frame that breaks HTTP/2 framing rules (bad size, padding, stream id, missing
    /// CONTINUATION...).
    #[error("http/2 protocol error")]
    ProtocolError,
}

impl GiveUp {
    /// snake_case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::BadPreface => "bad_preface",
            GiveUp::FrameTooLarge => "frame_too_large",
            GiveUp::HpackError => "hpack_error",
            GiveUp::HpackTableTooLarge => "hpack_table_too_large",
            GiveUp::HeaderBlockTooLarge => "header_block_too_large",
            GiveUp::TooManyStreams => "too_many_streams",
            GiveUp::ProtocolError => "protocol_error",
        }
    }
}

/// Something odd the decoder survived; counted by the caller, decoding goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Anomaly {
    /// A frame of a type HTTP/2 does not define (skipped, as RFC 9113 asks).
    UnknownFrameType,
    /// A direction ended in the middle of a frame or a header block.
    TruncatedFrame,
    /// A header list above `Limits::max_header_list`: the rest of it was decoded for HPACK
    /// state but not kept.
    HeaderListTooLarge,
    /// HEADERS where none fit: request trailers, a second trailer block, a client HEADERS on a
    /// closed stream id.
    UnexpectedHeaders,
    /// Response trailers without END_STREAM.
    TrailersWithoutEndStream,
    /// A frame for a stream id that was never opened.
    UnknownStream,
    /// DATA on a direction of a stream that already ended it.
    DataAfterEndStream,
    /// A client stream id that is even or not above the previous one.
    BadStreamId,
    /// PUSH_PROMISE (never used by gRPC): its header block was decoded, the stream ignored.
    PushPromise,
    /// A stream direction ended in the middle of a gRPC message.
    TruncatedMessage,
    /// Bytes fed to a direction after its end.
    DataAfterEof,
}

impl Anomaly {
    /// snake_case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::UnknownFrameType => "unknown_frame_type",
            Anomaly::TruncatedFrame => "truncated_frame",
            Anomaly::HeaderListTooLarge => "header_list_too_large",
            Anomaly::UnexpectedHeaders => "unexpected_headers",
            Anomaly::TrailersWithoutEndStream => "trailers_without_end_stream",
            Anomaly::UnknownStream => "unknown_stream",
            Anomaly::DataAfterEndStream => "data_after_end_stream",
            Anomaly::BadStreamId => "bad_stream_id",
            Anomaly::PushPromise => "push_promise",
            Anomaly::TruncatedMessage => "truncated_message",
            Anomaly::DataAfterEof => "data_after_eof",
        }
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamEnd {
    /// Both directions sent END_STREAM.
    Complete,
    /// RST_STREAM with this error code, sent on `by`. A server's NO_ERROR (0) reset after its
    /// trailers is a normal end (RFC 9113 §8.1: grpc-go does it when the client had not yet
    /// half-closed); the trailers' grpc-status is the call's outcome.
    Reset {
        /// HTTP/2 error code (0 = NO_ERROR, 8 = CANCEL...).
        code: u32,
        /// The direction the RST_STREAM travelled (`ClientToServer`: the client reset it).
        by: Direction,
    },
    /// The server's GOAWAY said it would not process this stream.
    GoAway,
    /// The connection ended (both directions at EOF, or one at EOF with the other already
    /// done) with the stream still open.
    ConnectionClosed,
}

impl StreamEnd {
    /// snake_case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::Reset { .. } => "reset",
            StreamEnd::GoAway => "go_away",
            StreamEnd::ConnectionClosed => "connection_closed",
        }
    }
}
