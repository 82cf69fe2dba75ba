//! Protocol detection from the first client bytes of a connection. Pure, and biased towards
//! availability: anything that is neither an HTTP/2 preface nor an HTTP/1 request line start
//! is opaque (bytes still flow, nothing is decoded).
//!
//! One [`Sniffer`] holds those first bytes, bounded by [`SNIFF_LEN`], for both readers of
//! them: the observer (which decoder to start) and the traceparent rewriter (which protocol
//! to rewrite), so the two always agree on what a connection speaks.

use crate::wire::h2::frame::PREFACE;

/// Longest HTTP/1 method token we wait for before calling the stream opaque.
pub const MAX_METHOD_LEN: usize = 16;

/// Most client bytes the sniffer ever needs: the HTTP/2 preface or a method token, whichever
/// is longer. With this many bytes [`sniff`] always decides.
pub const SNIFF_LEN: usize = if PREFACE.len() > MAX_METHOD_LEN {
    PREFACE.len()
} else {
    MAX_METHOD_LEN
};

/// What the first client-to-server bytes say the connection speaks (also a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Starts with the HTTP/2 client connection preface.
    Http2,
    /// Starts with an uppercase method token followed by a space.
    Http1,
    /// Neither: relay only.
    Opaque,
}

impl Protocol {
    /// Every protocol, in the order metrics list them.
    pub const ALL: [Protocol; 3] = [Protocol::Http2, Protocol::Http1, Protocol::Opaque];

    /// Short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http2 => "http2",
            Protocol::Http1 => "http1",
            Protocol::Opaque => "opaque",
        }
    }
}

/// Classify a connection from its first client-to-server bytes (all of them so far); `None`
/// while the bytes so far could still become either protocol.
pub fn sniff(first_c2s_bytes: &[u8]) -> Option<Protocol> {
    let b = first_c2s_bytes;
    if b.is_empty() {
        return None;
    }
    if b.starts_with(PREFACE) {
        return Some(Protocol::Http2);
    }
    if b.len() < PREFACE.len() && PREFACE.starts_with(b) {
        return None;
    }
    let token = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    match b.get(token) {
        // A method longer than MAX_METHOD_LEN is no method, followed by a space or not: else
        // 17 letters would be opaque and 17 letters and a space HTTP/1, the verdict depending
        // on where the first read ended (found by the rewrite fuzz target).
        Some(b' ') if (1..=MAX_METHOD_LEN).contains(&token) => Some(Protocol::Http1),
        None if token <= MAX_METHOD_LEN => None,
        _ => Some(Protocol::Opaque),
    }
}

/// The first client bytes of a connection, kept until [`sniff`] decides (at most
/// [`SNIFF_LEN`]: no allocation, whatever the client sends).
#[derive(Clone, Debug, Default)]
pub struct Sniffer {
    first: [u8; SNIFF_LEN],
    len: usize,
}

impl Sniffer {
    /// Takes of a client chunk what the sniffer still lacks and says what the bytes so far
    /// speak; `None` means the whole chunk was taken and more is needed.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Protocol> {
        let take = chunk.len().min(SNIFF_LEN - self.len);
        self.first[self.len..self.len + take].copy_from_slice(&chunk[..take]);
        self.len += take;
        sniff(self.held())
    }

    /// The client bytes taken so far.
    pub fn held(&self) -> &[u8] {
        &self.first[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"PRI"), None);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n"), None);
        assert_eq!(sniff(PREFACE), Some(Protocol::Http2));
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"), Some(Protocol::Http2));
        assert_eq!(sniff(b"PRI /x HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(sniff(b"GET /_ping HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(sniff(b"POST "), Some(Protocol::Http1));
        assert_eq!(sniff(b"POS"), None);
        assert_eq!(sniff(b"get / HTTP/1.1"), Some(Protocol::Opaque));
        assert_eq!(sniff(b" GET"), Some(Protocol::Opaque));
        assert_eq!(sniff(b"\x16\x03\x01"), Some(Protocol::Opaque));
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Some(Protocol::Opaque));
        assert_eq!(sniff(b"PRX"), None);
        // The longest method, and one letter more, whether or not the space has come yet.
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOP"), None);
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOP "), Some(Protocol::Http1));
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQ"), Some(Protocol::Opaque));
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQ "), Some(Protocol::Opaque));
    }

    /// With [`SNIFF_LEN`] bytes the verdict is always in, so a sniffer that asks for more has
    /// taken its whole chunk.
    #[test]
    fn sniff_len_bytes_always_decide() {
        for prefix in [
            &PREFACE[..],
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r",
        ] {
            let mut first = prefix[..prefix.len().min(SNIFF_LEN)].to_vec();
            first.resize(SNIFF_LEN, b'A');
            assert!(sniff(&first).is_some(), "{first:?}");
        }
    }

    /// Byte by byte or in one chunk, the sniffer decides the same and keeps at most
    /// [`SNIFF_LEN`] bytes.
    #[test]
    fn sniffer_decides_the_same_at_every_split() {
        let inputs: [&[u8]; 4] = [
            PREFACE,
            b"GET /_ping HTTP/1.1\r\n",
            b"\x16\x03\x01\x02",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        ];
        for input in inputs {
            let whole = Sniffer::default().feed(input);
            for cut in 0..=input.len() {
                let mut s = Sniffer::default();
                let verdict = s.feed(&input[..cut]).or_else(|| s.feed(&input[cut..]));
                assert_eq!(verdict, whole, "cut {cut} of {input:?}");
                assert!(s.held().len() <= SNIFF_LEN);
            }
        }
    }
}
