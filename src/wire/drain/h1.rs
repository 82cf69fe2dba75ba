//! HTTP/1.1 drain: the connection closes once the response in flight has ended, and that
//! response says so (`Connection: close`) when its head has not gone out yet. The drain walks
//! both directions with the passive decoder (request and response framing, protocol
//! switches) fed exactly the bytes forwarded; the only bytes it changes are the one header
//! line it adds to the head of the response it holds.

use bytes::{Bytes, BytesMut};

use crate::wire::Direction;
use crate::wire::h1::{H1Decoder, H1Event, head};
use crate::wire::inject::MAX_HELD;

/// The header line the drain adds before the final CRLF of the response in flight.
pub const CONNECTION_CLOSE: &[u8] = b"Connection: close\r\n";

/// `head` (a whole response head, ending in CRLF CRLF) with [`CONNECTION_CLOSE`] inserted
/// before its final CRLF; `None` when it is not such a head.
pub fn insert_connection_close(head: &[u8]) -> Option<Vec<u8>> {
    let body_start = head.len().checked_sub(2)?;
    if !head.ends_with(b"\r\n\r\n") || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    let mut out = Vec::with_capacity(head.len() + CONNECTION_CLOSE.len());
    out.extend_from_slice(&head[..body_start]);
    out.extend_from_slice(CONNECTION_CLOSE);
    out.extend_from_slice(&head[body_start..]);
    Some(out)
}

/// The status code of a response head's status line, when it parses.
pub fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let code = line.split(|&b| b == b' ').nth(1)?;
    std::str::from_utf8(code).ok()?.trim().parse().ok()
}

/// The HTTP/1 drain state of one connection.
#[derive(Default)]
pub struct H1Drain {
    dec: H1Decoder,
    events: Vec<H1Event>,
    draining: bool,
    /// A response head held back until whole, to add `Connection: close` to it.
    held: Option<BytesMut>,
    /// The response in flight was marked (or could not be): nothing more to add.
    marked: bool,
    /// The latest request may switch protocols (Upgrade, CONNECT, docker hijack): its
    /// response is left as it is.
    may_switch: bool,
}

impl H1Drain {
    pub fn start(&mut self) {
        self.draining = true;
    }

    /// Why the decoder stopped following the connection, if it did.
    pub fn gave_up(&self) -> bool {
        self.dec.gave_up().is_some()
    }

    /// The connection switched protocols: not HTTP any more, the grace period applies.
    pub fn upgraded(&self) -> bool {
        self.dec.upgraded().is_some()
    }

    /// Draining and no call under way: at least one request was served (a fresh connection
    /// is about to carry one) and nothing is in flight or held.
    pub fn finished(&self) -> bool {
        self.draining && self.held.is_none() && self.dec.requests_seen() > 0 && self.dec.between_exchanges()
    }

    /// The held response bytes, unchanged (the daemon closed before the head was whole).
    pub fn release(&mut self) -> Bytes {
        self.marked = true;
        self.held.take().map(BytesMut::freeze).unwrap_or_default()
    }

    /// An exchange is under way (or the connection switched protocols, or is not followed).
    pub fn busy(&self) -> bool {
        self.gave_up() || self.upgraded() || !self.dec.between_exchanges()
    }

    /// Client bytes as forwarded (the drain never changes them).
    pub fn client_bytes(&mut self, chunk: &Bytes) {
        self.dec
            .feed_bytes(Direction::ClientToServer, chunk.clone(), &mut self.events);
        for e in self.events.drain(..) {
            if let H1Event::RequestHead {
                method,
                target,
                headers,
                ..
            } = e
            {
                self.may_switch = method == "CONNECT"
                    || headers.get("upgrade").is_some()
                    || (method == "POST" && head::is_docker_hijack_path(&target));
                // A new request while draining: its response is the one to mark.
                self.marked = false;
            }
        }
    }

    /// Daemon bytes as read: the bytes to forward (empty while a response head is held).
    pub fn server_bytes(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_none()
            && self.draining
            && !self.marked
            && !self.may_switch
            && self.dec.at_response_head_start()
            && !self.dec.between_exchanges()
        {
            self.held = Some(BytesMut::new());
        }
        let out = match self.held.take() {
            None => chunk,
            Some(mut held) => {
                held.extend_from_slice(&chunk);
                match self.mark(held) {
                    Ok(out) => out,
                    Err(held) => {
                        self.held = Some(held);
                        return Bytes::new();
                    }
                }
            }
        };
        self.dec
            .feed_bytes(Direction::ServerToClient, out.clone(), &mut self.events);
        self.events.clear();
        out
    }

    /// The held bytes with `Connection: close` in the final response head, once it is whole;
    /// the bytes back when it is not.
    fn mark(&mut self, mut held: BytesMut) -> Result<Bytes, BytesMut> {
        let mut out = BytesMut::new();
        loop {
            let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
                if held.len() > MAX_HELD {
                    // Not a head we can follow: sent as it came, closed after its end.
                    self.marked = true;
                    out.extend_from_slice(&held);
                    return Ok(out.freeze());
                }
                if out.is_empty() {
                    return Err(held);
                }
                // An interim head went out whole; the final one is still coming.
                self.held = Some(held);
                return Ok(out.freeze());
            };
            let head = held.split_to(end);
            match status_of(&head) {
                // 100 Continue and friends: the final head follows.
                Some(s) if (100..200).contains(&s) && s != 101 => out.extend_from_slice(&head),
                Some(s) if s != 101 => {
                    match insert_connection_close(&head) {
                        Some(marked) => out.extend_from_slice(&marked),
                        None => out.extend_from_slice(&head),
                    }
                    self.marked = true;
                    out.extend_from_slice(&held);
                    return Ok(out.freeze());
                }
                _ => {
                    self.marked = true;
                    out.extend_from_slice(&head);
                    out.extend_from_slice(&held);
                    return Ok(out.freeze());
                }
            }
        }
    }
}
