//! The protocol half of opt-in trace context propagation (`propagate_context = true`): the
//! one part of runtime-tap that changes bytes (DESIGN.md invariant 1). A pure rewriter per
//! connection, fed the client's chunks before they are written onward, and the server's chunks
//! (read only) for the SETTINGS that bound what it may send. It adds a `traceparent` header to
//! each request that carries none, and changes nothing else:
//!
//! - HTTP/1.1: one header line `traceparent: {value}` right after the request line of each
//!   request head without one ([`h1`]).
//! - HTTP/2: one literal header field without indexing (new name, no Huffman) appended to the
//!   header block of each request without one, that frame's length adjusted, or the field
//!   sent in one added CONTINUATION frame when the frame would pass the server's
//!   SETTINGS_MAX_FRAME_SIZE ([`h2`]). Neither side's HPACK table changes.
//!
//! Rule it keeps: what it cannot follow it stops rewriting for good and forwards unchanged
//! (the caller counts it). It never fails or closes a connection and does no I/O; it only
//! holds back an incomplete request head or header block until it is whole (bounded by
//! [`MAX_HELD`]). The clock on held bytes and the hook that names each request belong to the
//! relay (`relay::rewrite`): this module has neither a clock nor a source of ids.
//!
//! The header's value comes from the caller's [`Mint`], for each request that gets one, as
//! opaque text: formatting (and parsing) a W3C trace context is `trace::context`'s job, which
//! wire may not import. [`Injection`] lives here, not in the relay or in trace, because it is
//! plain data (two ids) that the relay hands the tap and observe matches against the decoded
//! header, and wire is the one leaf all three may import without a cycle.

pub mod h1;
pub mod h2;
#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

use crate::wire::sniff::{Protocol, Sniffer};

/// Most bytes held back at once: one request head (HTTP/1) or one header block with its
/// frames (HTTP/2). Past it the rewriter gives up and forwards what it held. 64 KiB.
pub const MAX_HELD: usize = 64 * 1024;

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// The identity given to one request: the ids of runtime-tap's span for it, which the
/// forwarded `traceparent` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The hook that names each request the rewriter adds a header to: its ids and the exact
/// header value (ASCII, without the name). Called once per injected header, in order.
pub type Mint<'a> = dyn FnMut() -> (Injection, String) + 'a;

/// Why a rewriter stopped rewriting a connection (a log field; the metric has no label).
pub type GiveUpReason = &'static str;

enum Proto {
    /// Collecting the first client bytes until the protocol is known, and any server bytes
    /// that came first (an HTTP/2 server may send its SETTINGS before the client's preface);
    /// `None` when the server said more than [`MAX_HELD`] first (HTTP/2 then not rewritten).
    Sniffing(Sniffer, Option<Vec<u8>>),
    Http1(h1::H1Rewriter),
    Http2(Box<h2::H2Rewriter>),
    /// Opaque, or given up: every byte as it came.
    Pass,
}

/// The rewriter of one connection.
pub struct Rewriter {
    proto: Proto,
    gave_up: Option<GiveUpReason>,
    reported: bool,
    /// Client bytes a give-up seen on the server side released (a partial header block held
    /// when the server's SETTINGS could not be followed): `server_bytes` has no output, so
    /// they go out first with the next client bytes, or at `release`. Never dropped.
    spill: Bytes,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter::new()
    }
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter {
            proto: Proto::Sniffing(Sniffer::default(), Some(Vec::new())),
            gave_up: None,
            reported: false,
            spill: Bytes::new(),
        }
    }

    /// A chunk read from the client: returns the bytes to forward now (the same `Bytes`
    /// when nothing changed and nothing is held, so the common case copies nothing), and
    /// appends one [`Injection`] (from `mint`) per `traceparent` added, in order.
    pub fn client_bytes(&mut self, chunk: Bytes, mint: &mut Mint<'_>, injected: &mut Vec<Injection>) -> Bytes {
        if !self.spill.is_empty() {
            return self.take_spill_then(&chunk);
        }
        let mut emit = Emit::new(&chunk);
        match &mut self.proto {
            Proto::Pass => return chunk,
            Proto::Http1(r) => r.feed(&chunk, 0, &mut emit, mint, injected),
            Proto::Http2(r) => r.feed(&chunk, 0, &mut emit, mint, injected),
            Proto::Sniffing(sniffer, server) => {
                let before = sniffer.held().len();
                match sniffer.feed(&chunk) {
                    // Undecided: the sniffer took the whole chunk (it decides by SNIFF_LEN).
                    None => return Bytes::new(),
                    Some(verdict) => {
                        // The bytes held so far start the stream; then the rest of this chunk.
                        let held = Bytes::copy_from_slice(&sniffer.held()[..before]);
                        let server = server.take();
                        self.proto = match (verdict, server) {
                            (Protocol::Http1, _) => Proto::Http1(h1::H1Rewriter::new()),
                            (Protocol::Http2, Some(server)) => {
                                let mut r = Box::<h2::H2Rewriter>::default();
                                r.server_bytes(&server);
                                Proto::Http2(r)
                            }
                            (Protocol::Http2, None) => {
                                self.gave_up.get_or_insert("server_spoke_first");
                                Proto::Pass
                            }
                            (Protocol::Opaque, _) => Proto::Pass,
                        };
                        let mut joined = BytesMut::with_capacity(held.len() + chunk.len());
                        joined.extend_from_slice(&held);
                        joined.extend_from_slice(&chunk);
                        let joined = if held.is_empty() { chunk } else { joined.freeze() };
                        return self.client_bytes(joined, mint, injected);
                    }
                }
            }
        }
        let out = emit.finish();
        self.check_gave_up();
        out
    }

    /// A chunk read from the server (read only: SETTINGS bound the frames and header table
    /// the client side may use).
    pub fn server_bytes(&mut self, chunk: &[u8]) {
        match &mut self.proto {
            Proto::Http2(r) => {
                r.server_bytes(chunk);
                self.check_gave_up();
            }
            Proto::Sniffing(_, server) => {
                if let Some(s) = server {
                    if s.len() + chunk.len() <= MAX_HELD {
                        s.extend_from_slice(chunk);
                    } else {
                        *server = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// Bytes held back now (part of a request head or header block).
    pub fn held(&self) -> usize {
        self.spill.len()
            + match &self.proto {
                Proto::Sniffing(sniffer, _) => sniffer.held().len(),
                Proto::Http1(r) => r.held(),
                Proto::Http2(r) => r.held(),
                Proto::Pass => 0,
            }
    }

    /// Every byte from now on passes as it comes (opaque, given up or released) and none is
    /// held: the relay may move this connection's bytes without showing them to the rewriter.
    pub fn passing(&self) -> bool {
        matches!(self.proto, Proto::Pass) && self.spill.is_empty()
    }

    /// Stop rewriting: returns every held byte, unchanged, to forward now; everything after
    /// passes as it comes. `reason` is `None` at the client's EOF (nothing went wrong), else
    /// why (held too long).
    pub fn release(&mut self, reason: Option<GiveUpReason>) -> Bytes {
        let rest = match std::mem::replace(&mut self.proto, Proto::Pass) {
            Proto::Sniffing(sniffer, _) => Bytes::copy_from_slice(sniffer.held()),
            Proto::Http1(mut r) => r.release(),
            Proto::Http2(mut r) => r.release(),
            Proto::Pass => Bytes::new(),
        };
        let held = if self.spill.is_empty() {
            rest
        } else {
            self.take_spill_then(&rest)
        };
        if let Some(reason) = reason
            && self.gave_up.is_none()
            && !held.is_empty()
        {
            self.gave_up = Some(reason);
        }
        held
    }

    /// Why the rewriter gave up, returned once (for the caller to count and log).
    pub fn take_give_up(&mut self) -> Option<GiveUpReason> {
        if self.reported {
            return None;
        }
        let r = self.gave_up?;
        self.reported = true;
        Some(r)
    }

    /// The spilled bytes followed by `more`, the spill emptied.
    fn take_spill_then(&mut self, more: &[u8]) -> Bytes {
        let mut joined = BytesMut::from(&std::mem::take(&mut self.spill)[..]);
        joined.extend_from_slice(more);
        joined.freeze()
    }

    fn check_gave_up(&mut self) {
        let reason = match &self.proto {
            Proto::Http1(r) => r.gave_up(),
            Proto::Http2(r) => r.gave_up(),
            _ => None,
        };
        if let Some(reason) = reason {
            self.gave_up.get_or_insert(reason);
            // A client-side give-up has emitted what it held; a server-side one has not.
            let held = match std::mem::replace(&mut self.proto, Proto::Pass) {
                Proto::Http1(mut r) => r.release(),
                Proto::Http2(mut r) => r.release(),
                _ => Bytes::new(),
            };
            if !held.is_empty() {
                self.spill = self.take_spill_then(&held);
            }
        }
    }
}

/// The output of one chunk: ranges of the input (no copy) and new bytes, in order.
pub(crate) struct Emit<'a> {
    input: &'a Bytes,
    /// The first part, apart from `rest` so that the common case (the chunk as it came, or one
    /// slice of it) allocates nothing: every decoded chunk passes an `Emit` on the relay's path.
    first: Option<Part>,
    rest: Vec<Part>,
}

enum Part {
    Input(usize, usize),
    Owned(Bytes),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Input(s, e) => e - s,
            Part::Owned(b) => b.len(),
        }
    }
}

impl<'a> Emit<'a> {
    pub(crate) fn new(input: &'a Bytes) -> Emit<'a> {
        Emit {
            input,
            first: None,
            rest: Vec::new(),
        }
    }

    fn push(&mut self, part: Part) {
        match self.first {
            None => self.first = Some(part),
            Some(_) => self.rest.push(part),
        }
    }

    /// `input[start..end]` goes out as it came.
    pub(crate) fn input(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        let last = match self.rest.last_mut() {
            Some(p) => Some(p),
            None => self.first.as_mut(),
        };
        if let Some(Part::Input(_, e)) = last
            && *e == start
        {
            *e = end;
            return;
        }
        self.push(Part::Input(start, end));
    }

    /// New (or held) bytes go out.
    pub(crate) fn owned(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.push(Part::Owned(bytes));
        }
    }

    /// The bytes to forward: a slice of the input when that is all, else one new buffer.
    pub(crate) fn finish(self) -> Bytes {
        match (self.first, self.rest.is_empty()) {
            (None, _) => Bytes::new(),
            (Some(Part::Input(s, e)), true) => self.input.slice(s..e),
            (Some(Part::Owned(b)), true) => b,
            (Some(first), false) => {
                let parts = std::iter::once(&first).chain(&self.rest);
                let mut out = BytesMut::with_capacity(parts.clone().map(Part::len).sum());
                for p in parts {
                    match p {
                        Part::Input(s, e) => out.extend_from_slice(&self.input[*s..*e]),
                        Part::Owned(b) => out.extend_from_slice(b),
                    }
                }
                out.freeze()
            }
        }
    }
}
