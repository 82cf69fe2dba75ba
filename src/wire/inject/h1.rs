//! HTTP/1.1 requests: one `traceparent` header line after the request line of each request
//! head that has none. Follows request boundaries on the client's bytes alone (heads,
//! Content-Length and chunked bodies, pipelining); after a request that may switch protocols
//! (Upgrade, CONNECT, docker's attach/exec hijack) it stops rewriting: what follows may not
//! be HTTP. A head that does not parse, or framing it cannot follow, makes it give up.

use bytes::{Bytes, BytesMut};

use super::{Emit, GiveUpReason, Injection, MAX_HELD, Mint, TRACEPARENT};
use crate::wire::h1::body::{BodyDecoder, BodyLimits, Step};
use crate::wire::h1::head::{self, EndScan, Framing, FramingFields};
use crate::wire::h1::{DEFAULT_MAX_CHUNK_LINE, DEFAULT_MAX_HEADERS};

const LIMITS: BodyLimits = BodyLimits {
    max_trailers: MAX_HELD,
    max_headers: DEFAULT_MAX_HEADERS,
    max_chunk_line: DEFAULT_MAX_CHUNK_LINE,
};

enum State {
    /// Collecting a request head (held back until complete).
    Head,
    /// Forwarding a request body; then the next head, or nothing more to rewrite.
    Body { body: BodyDecoder, then_stop: bool },
    /// After a protocol switch, or given up.
    Pass,
}

/// The HTTP/1 rewriter of one connection's client bytes.
pub struct H1Rewriter {
    state: State,
    head: BytesMut,
    scan: EndScan,
    /// Partial trailer section of a chunked body (the body decoder's scratch; already sent).
    trailers: BytesMut,
    gave_up: Option<GiveUpReason>,
}

impl Default for H1Rewriter {
    fn default() -> Self {
        H1Rewriter::new()
    }
}

impl H1Rewriter {
    pub fn new() -> H1Rewriter {
        H1Rewriter {
            state: State::Head,
            head: BytesMut::new(),
            scan: EndScan::default(),
            trailers: BytesMut::new(),
            gave_up: None,
        }
    }

    /// Rewrite `input[pos..]` into `emit`.
    pub(crate) fn feed(
        &mut self,
        input: &Bytes,
        mut pos: usize,
        emit: &mut Emit<'_>,
        mint: &mut Mint<'_>,
        injected: &mut Vec<Injection>,
    ) {
        while pos < input.len() {
            match &mut self.state {
                State::Pass => {
                    emit.input(pos, input.len());
                    return;
                }
                State::Head => {
                    if self.head.is_empty() {
                        // Empty lines between requests are tolerated by servers: passed on.
                        let blank = input[pos..].iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                        emit.input(pos, pos + blank);
                        pos += blank;
                        if pos == input.len() {
                            return;
                        }
                    }
                    let rest = &input[pos..];
                    let room = MAX_HELD.saturating_sub(self.head.len());
                    let window = &rest[..rest.len().min(room)];
                    match self.scan.scan(window) {
                        Some(n) => {
                            self.head.extend_from_slice(&rest[..n]);
                            pos += n;
                            let block = self.head.split().freeze();
                            self.head_done(block, emit, mint, injected);
                        }
                        None if window.len() < rest.len() => {
                            self.give_up("head_too_large", emit);
                        }
                        None => {
                            self.head.extend_from_slice(rest);
                            return;
                        }
                    }
                }
                State::Body { body, then_stop } => {
                    let then_stop = *then_stop;
                    match body.step(&input[pos..], &mut self.trailers, &LIMITS) {
                        Ok(Step::NeedMore) => {
                            emit.input(pos, input.len());
                            return;
                        }
                        Ok(Step::Data { end, .. }) => {
                            emit.input(pos, pos + end);
                            pos += end;
                        }
                        Ok(Step::End { consumed, .. }) => {
                            emit.input(pos, pos + consumed);
                            pos += consumed;
                            self.state = if then_stop { State::Pass } else { State::Head };
                        }
                        Err(_) => self.give_up("bad_chunked_body", emit),
                    }
                }
            }
        }
        // A body that ends without more input (Content-Length: 0 after the head) is over now.
        if let State::Body { body, then_stop } = &mut self.state
            && let Ok(Step::End { .. }) = body.step(&[], &mut self.trailers, &LIMITS)
        {
            self.state = if *then_stop { State::Pass } else { State::Head };
        }
    }

    /// A complete request head: forward it, with a `traceparent` line when it has none.
    fn head_done(&mut self, block: Bytes, emit: &mut Emit<'_>, mint: &mut Mint<'_>, injected: &mut Vec<Injection>) {
        let Ok(req) = head::parse_request(&block, DEFAULT_MAX_HEADERS) else {
            emit.owned(block);
            self.give_up("bad_request_head", emit);
            return;
        };
        let framing = match head::framing_fields(&req.headers) {
            Ok(FramingFields::None) => Framing::Length(0),
            Ok(FramingFields::Length(n)) => Framing::Length(n),
            Ok(FramingFields::Chunked { .. }) => Framing::Chunked,
            Ok(FramingFields::OtherCoding) | Err(_) => {
                emit.owned(block);
                self.give_up("request_framing", emit);
                return;
            }
        };
        let switches = req.method.eq_ignore_ascii_case("CONNECT")
            || (req.headers.get("upgrade").is_some() && req.headers.has_token("connection", "upgrade"))
            || head::is_docker_hijack_path(&req.target);
        if req.headers.get(TRACEPARENT).is_some() {
            emit.owned(block);
        } else {
            let (injection, value) = mint();
            let line = format!("{TRACEPARENT}: {value}\r\n");
            // The request line ends at the first LF (a complete head has one).
            let cut = block.iter().position(|&b| b == b'\n').map_or(block.len(), |i| i + 1);
            emit.owned(block.slice(..cut));
            emit.owned(Bytes::from(line));
            emit.owned(block.slice(cut..));
            injected.push(injection);
        }
        self.state = State::Body {
            body: BodyDecoder::new(framing),
            then_stop: switches,
        };
    }

    fn give_up(&mut self, reason: GiveUpReason, emit: &mut Emit<'_>) {
        emit.owned(self.head.split().freeze());
        self.gave_up.get_or_insert(reason);
        self.state = State::Pass;
    }

    /// Bytes held back (part of a head).
    pub fn held(&self) -> usize {
        self.head.len()
    }

    /// Held bytes, unchanged; rewriting stops.
    pub fn release(&mut self) -> Bytes {
        self.state = State::Pass;
        self.head.split().freeze()
    }

    /// Why rewriting stopped, if it gave up.
    pub fn gave_up(&self) -> Option<GiveUpReason> {
        self.gave_up
    }
}
