//! Protocol detection from the first client bytes of a connection. Pure, and biased towards
//! availability: anything that is neither an HTTP/2 preface nor an HTTP/1 request line start
//! is opaque (bytes still flow, nothing is decoded).

use crate::wire::h2::frame::PREFACE;

/// Longest HTTP/1 method token we wait for before calling the stream opaque.
pub const MAX_METHOD_LEN: usize = 16;

/// What the first client-to-server bytes say the connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Starts with the HTTP/2 client connection preface.
    Http2,
    /// Starts with an uppercase method token followed by a space.
    Http1,
    /// Neither: relay only.
    Opaque,
    /// The bytes so far could still become either; feed more.
    NeedMore,
}

impl Protocol {
    /// Short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http2 => "http2",
            Protocol::Http1 => "http1",
            Protocol::Opaque => "opaque",
            Protocol::NeedMore => "need_more",
        }
    }
}

/// Classify a connection from its first client-to-server bytes (all of them so far).
pub fn sniff(first_c2s_bytes: &[u8]) -> Protocol {
    let b = first_c2s_bytes;
    if b.is_empty() {
        return Protocol::NeedMore;
    }
    if b.starts_with(PREFACE) {
        return Protocol::Http2;
    }
    if b.len() < PREFACE.len() && PREFACE.starts_with(b) {
        return Protocol::NeedMore;
    }
    let token = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    match b.get(token) {
        Some(b' ') if token > 0 => Protocol::Http1,
        None if token < MAX_METHOD_LEN => Protocol::NeedMore,
        _ => Protocol::Opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs() {
        assert_eq!(sniff(b""), Protocol::NeedMore);
        assert_eq!(sniff(b"PRI"), Protocol::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n"), Protocol::NeedMore);
        assert_eq!(sniff(PREFACE), Protocol::Http2);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"), Protocol::Http2);
        assert_eq!(sniff(b"PRI /x HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(sniff(b"GET /_ping HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(sniff(b"POST "), Protocol::Http1);
        assert_eq!(sniff(b"POS"), Protocol::NeedMore);
        assert_eq!(sniff(b"get / HTTP/1.1"), Protocol::Opaque);
        assert_eq!(sniff(b" GET"), Protocol::Opaque);
        assert_eq!(sniff(b"\x16\x03\x01"), Protocol::Opaque);
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Protocol::Opaque);
        assert_eq!(sniff(b"PRX"), Protocol::NeedMore);
    }
}
