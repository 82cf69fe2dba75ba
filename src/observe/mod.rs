//! The observer of one connection: takes the tap's chunks in relay order, tells the protocol
//! from the first client bytes, and feeds the matching decoder. It runs beside the relay and
//! may fall behind it; it never holds up a byte.

pub mod session;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::metrics::{InterceptMetrics, Protocol};
use crate::relay::peer::Process;
use crate::relay::tap::TapEvent;
use crate::wire::Direction;

/// The longest prefix the sniffer looks at before calling a connection opaque.
const SNIFF_LIMIT: usize = 24;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What is known about a connection when it opens.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub id: u64,
    pub intercept: String,
    pub client: Option<Process>,
    pub server: Option<Process>,
}

/// Shared by all connections of an intercept.
#[derive(Debug, Default)]
pub struct Observer {}

impl Observer {
    /// Observe one connection until its tap closes.
    pub async fn run(
        self: Arc<Self>,
        info: ConnInfo,
        mut rx: mpsc::Receiver<TapEvent>,
        metrics: Arc<InterceptMetrics>,
    ) {
        let mut first = Vec::new();
        let mut sniffed = None;
        while let Some(event) = rx.recv().await {
            match event {
                TapEvent::Data {
                    dir: Direction::ClientToServer,
                    bytes,
                    ..
                } if sniffed.is_none() => {
                    let take = (SNIFF_LIMIT - first.len()).min(bytes.len());
                    first.extend_from_slice(&bytes[..take]);
                    sniffed = sniff(&first);
                }
                TapEvent::Eof { .. } | TapEvent::Closed { .. } if sniffed.is_none() && !first.is_empty() => {
                    sniffed = Some(Protocol::Opaque);
                }
                _ => {}
            }
            if let Some(p) = sniffed.take() {
                metrics.sniffed(p).inc();
                tracing::debug!(intercept = %info.intercept, conn = info.id, protocol = p.as_str(), "protocol sniffed");
                // Until decoders exist the rest of the connection is only counted (by the tap).
                while rx.recv().await.is_some() {}
                return;
            }
        }
    }
}

/// The protocol of a connection from its first client bytes; `None` while undecided.
fn sniff(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    let method_len = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == first.len() && method_len < SNIFF_LIMIT {
        return None;
    }
    if method_len > 0 && first.get(method_len) == Some(&b' ') {
        return Some(Protocol::Http1);
    }
    Some(Protocol::Opaque)
}
