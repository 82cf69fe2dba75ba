//! The protocol half of the graceful drain at shutdown: per connection, a pure walker of the
//! forwarded bytes that knows whether a call is in flight and where the frame or message
//! boundaries are, and that changes bytes in exactly these ways once the drain has begun
//! (README, Lifecycle):
//!
//! - HTTP/2 ([`h2`]): two GOAWAY frames and one PING go to the client at daemon-to-client frame
//!   boundaries; the client's ACK of that PING, and frames of streams the final GOAWAY
//!   refused, are not forwarded to the daemon.
//! - HTTP/1.1 ([`h1`]): `Connection: close` is added to the head of the response in flight
//!   when that head has not gone out yet.
//!
//! Before the drain nothing changes: the walker only follows. What it cannot follow (an opaque
//! protocol, a protocol switch, a decoder that gave up) is never [`Drain::finished`]: such a
//! connection keeps the grace period. No I/O, no clock; the relay drives it (`relay::copy`).

pub mod h1;
pub mod h2;
#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

use crate::wire::inject::MAX_HELD;
use crate::wire::sniff::{Protocol, Sniffer};

enum Proto {
    /// First client bytes not enough to tell the protocol yet.
    Sniffing(Sniffer),
    Http1(Box<h1::H1Drain>),
    Http2(Box<h2::H2Drain>),
    /// Opaque or given up: never finished, every byte as it comes.
    Opaque,
}

/// The drain state of one connection.
pub struct Drain {
    proto: Proto,
    /// Daemon bytes seen before the protocol was known (an HTTP/2 daemon may send its SETTINGS
    /// first), replayed to the walker once it is; `None` past [`MAX_HELD`] (then opaque).
    early: Option<BytesMut>,
    started: bool,
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

impl Drain {
    pub fn new() -> Drain {
        Drain {
            proto: Proto::Sniffing(Sniffer::default()),
            early: Some(BytesMut::new()),
            started: false,
        }
    }

    /// Begin the drain (runtime-tap is shutting down).
    pub fn start(&mut self) {
        self.started = true;
        match &mut self.proto {
            Proto::Http1(d) => d.start(),
            Proto::Http2(d) => d.start(),
            _ => {}
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    /// The connection can close now without cutting a call (and, for HTTP/2, the client has
    /// been told with the final GOAWAY). `subscription` names the HTTP/2 streams the decoder
    /// knows to be event subscriptions, which do not hold the connection.
    pub fn finished(&self, subscription: &dyn Fn(u32) -> bool) -> bool {
        self.started
            && match &self.proto {
                Proto::Http1(d) => !d.gave_up() && !d.upgraded() && d.finished(),
                Proto::Http2(d) => d.finished(subscription),
                _ => false,
            }
    }

    /// Something is under way that HTTP/2's GOAWAY cannot speak for: an HTTP/1 exchange, a
    /// switched protocol, an opaque stream (`relay::settle` waits for these to end first).
    pub fn busy(&self) -> bool {
        match &self.proto {
            Proto::Sniffing(_) | Proto::Http2(_) => false,
            Proto::Opaque => true,
            Proto::Http1(d) => d.busy(),
        }
    }

    /// Nothing the drain can do for this connection: it keeps the grace period (opaque,
    /// switched protocols, or the walker gave up).
    pub fn left_to_grace(&self) -> bool {
        match &self.proto {
            Proto::Opaque => true,
            Proto::Http1(d) => d.gave_up() || d.upgraded(),
            Proto::Http2(d) => d.gave_up().is_some(),
            Proto::Sniffing(_) => false,
        }
    }

    /// The walker follows nothing and never will (an opaque protocol): every byte passes as
    /// it comes, none is held, and it need not see them (the relay may splice).
    pub fn passthrough(&self) -> bool {
        matches!(self.proto, Proto::Opaque)
    }

    /// The client sent a header block after a refused stream's block was removed: the
    /// daemon's HPACK table may differ from the client's, so the connection ends now.
    pub fn hpack_out_of_step(&self) -> bool {
        matches!(&self.proto, Proto::Http2(d) if d.out_of_step())
    }

    /// GOAWAY frames added since the last call (for the metric).
    pub fn take_goaways(&mut self) -> u32 {
        match &mut self.proto {
            Proto::Http2(d) => d.take_goaways(),
            _ => 0,
        }
    }

    /// Where the drain stands, for logs: the protocol and what is left on the connection.
    pub fn describe(&self) -> String {
        match &self.proto {
            Proto::Sniffing(_) => "no request yet".into(),
            Proto::Opaque => "opaque".into(),
            Proto::Http1(d) if d.upgraded() => "http1 switched protocols".into(),
            Proto::Http1(d) if d.gave_up() => "http1 not followed".into(),
            Proto::Http1(d) => format!("http1 finished={}", d.finished()),
            Proto::Http2(d) => format!(
                "http2 phase={:?} open_streams={} gave_up={:?}",
                d.phase(),
                d.open_streams(),
                d.gave_up()
            ),
        }
    }

    /// A chunk read from the client: the bytes to forward.
    pub fn client_bytes(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.proto {
            Proto::Opaque => chunk,
            Proto::Http1(d) => {
                d.client_bytes(&chunk);
                chunk
            }
            Proto::Http2(d) => d.client_bytes(&chunk),
            Proto::Sniffing(sniffer) => {
                let before = sniffer.held().len();
                let Some(verdict) = sniffer.feed(&chunk) else {
                    return chunk;
                };
                // Earlier chunks went out already (followed, never held): the walker starts
                // from the connection's first bytes, both ways, before the drain may act.
                let earlier = Bytes::copy_from_slice(&sniffer.held()[..before]);
                let early = self.early.take().map(BytesMut::freeze);
                self.proto = match (verdict, &early) {
                    (Protocol::Http2, Some(_)) => Proto::Http2(Box::default()),
                    (Protocol::Http1, Some(_)) => Proto::Http1(Box::default()),
                    _ => Proto::Opaque,
                };
                let _ = self.client_bytes(earlier);
                if let Some(early) = early.filter(|e| !e.is_empty()) {
                    let _ = self.server_bytes(early);
                }
                if self.started {
                    self.start();
                }
                self.client_bytes(chunk)
            }
        }
    }

    /// A chunk read from the daemon: the bytes to forward.
    pub fn server_bytes(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.proto {
            Proto::Opaque => chunk,
            Proto::Http1(d) => d.server_bytes(chunk),
            Proto::Http2(d) => d.server_bytes(&chunk),
            Proto::Sniffing(_) => {
                if let Some(e) = &mut self.early {
                    if e.len() + chunk.len() <= MAX_HELD {
                        e.extend_from_slice(&chunk);
                    } else {
                        self.early = None;
                    }
                }
                chunk
            }
        }
    }

    /// Bytes held back in direction `dir`, unchanged, at that side's EOF (nothing more will
    /// complete them).
    pub fn release(&mut self, dir: crate::wire::Direction) -> Bytes {
        match (&mut self.proto, dir) {
            (Proto::Http1(d), crate::wire::Direction::ServerToClient) => d.release(),
            (Proto::Http2(d), crate::wire::Direction::ClientToServer) => d.release_client(),
            _ => Bytes::new(),
        }
    }

    /// The drain's frames to send to the client now, when they are due and the
    /// daemon-to-client direction is between frames (HTTP/2 only).
    pub fn due(&mut self) -> Option<Bytes> {
        match &mut self.proto {
            Proto::Http2(d) => d.due(),
            _ => None,
        }
    }
}
