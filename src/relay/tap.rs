//! The tap: a connection's ordered chunks, offered to its observer through a bounded queue.
//! The relay never waits on it: `offer` is a `try_send`, and a full queue gives up decoding
//! of that connection for good (counted) while its bytes keep flowing.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::InterceptMetrics;
use crate::wire::Direction;

/// What the observer of a connection receives, in relay order.
#[derive(Debug)]
pub enum TapEvent {
    /// A chunk as the relay read it (already written onward), and when it was read.
    Data { dir: Direction, at: Instant, bytes: Bytes },
    /// That direction half-closed.
    Eof { dir: Direction, at: Instant },
    /// The relay of this connection ended (both directions done, or a side failed).
    /// A queue that closes without it means the tap gave up (already counted).
    Closed { at: Instant },
}

/// The sending side, owned by the relay of one connection.
pub struct Tap {
    tx: Option<mpsc::Sender<TapEvent>>,
    metrics: Arc<InterceptMetrics>,
}

impl Tap {
    /// A tap feeding a new queue of `depth` events; the receiver goes to the observer.
    pub fn new(depth: usize, metrics: Arc<InterceptMetrics>) -> (Tap, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (Tap { tx: Some(tx), metrics }, rx)
    }

    /// A tap that observes nothing (decoding off for this intercept).
    pub fn off(metrics: Arc<InterceptMetrics>) -> Tap {
        Tap { tx: None, metrics }
    }

    /// Offer a chunk that has been written onward. Never blocks.
    pub fn offer(&mut self, dir: Direction, bytes: Bytes) {
        self.metrics.add_bytes(dir, bytes.len());
        self.send(TapEvent::Data {
            dir,
            at: Instant::now(),
            bytes,
        });
    }

    /// Offer the end of one direction. Never blocks.
    pub fn eof(&mut self, dir: Direction) {
        self.send(TapEvent::Eof {
            dir,
            at: Instant::now(),
        });
    }

    /// The relay is over. Never blocks.
    pub fn close(&mut self) {
        self.send(TapEvent::Closed { at: Instant::now() });
        self.tx = None;
    }

    fn send(&mut self, event: TapEvent) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The observer fell behind past its queue: it can no longer see every byte,
                // so it must stop decoding this connection. Dropping the sender tells it.
                self.metrics.tap_give_ups.queue_full.inc();
                self.tx = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The observer stopped on its own (it gave up and said why); nothing to count.
                self.tx = None;
            }
        }
    }
}
