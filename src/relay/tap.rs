//! The tap: a connection's ordered chunks, offered to its observer through a bounded queue.
//! The relay never waits on it: `offer` is a `try_send`, and a full queue gives up decoding
//! of that connection for good (counted) while its bytes keep flowing. Queued bytes also count
//! against the process-wide [`DecodeBudget`]: a chunk the budget cannot take gives up the
//! connection's decoding the same way (`reason="decode_memory"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::budget::DecodeBudget;
use crate::conn::LongLived;
use crate::metrics::InterceptMetrics;
use crate::wire::Direction;
use crate::wire::inject::{GiveUpReason, Injection};

/// What the observer of a connection receives, in relay order.
#[derive(Debug)]
pub enum TapEvent {
    /// A chunk as the relay read it, offered before it is written onward (so the two directions
    /// reach the observer in causal order: `copy.rs` says why), and when it was read.
    Data { dir: Direction, at: Instant, bytes: Bytes },
    /// Propagation added a `traceparent` with these ids to a request in the next client
    /// chunk: the call carrying it is runtime-tap's span with exactly this identity.
    Injected(Injection),
    /// That direction half-closed.
    Eof { dir: Direction, at: Instant },
    /// The relay of this connection ended (both directions done, or a side failed).
    /// A queue that closes without it means the tap gave up (already counted).
    Closed { at: Instant },
}

/// The sending side, owned by the relay of one connection.
pub struct Tap {
    tx: Option<mpsc::Sender<TapEvent>>,
    /// Bytes offered and not yet taken by the observer, shared with the receiver.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<InterceptMetrics>,
    budget: Arc<DecodeBudget>,
    long_lived: LongLived,
}

/// The observer's side: events in relay order, with the queue's fill level.
pub struct TapReceiver {
    rx: mpsc::Receiver<TapEvent>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    budget: Arc<DecodeBudget>,
    long_lived: LongLived,
}

impl Drop for TapReceiver {
    /// Chunks still queued when the observer stops go back to the budget.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(event) = self.rx.try_recv() {
            if let TapEvent::Data { bytes, .. } = &event {
                self.budget.release(bytes.len());
            }
        }
    }
}

impl TapReceiver {
    /// The next event; `None` once the relay is done or the tap gave up.
    pub async fn recv(&mut self) -> Option<TapEvent> {
        let event = self.rx.recv().await?;
        if let TapEvent::Data { bytes, .. } = &event {
            self.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
            self.budget.release(bytes.len());
        }
        Some(event)
    }

    /// The process-wide budget this queue's bytes count against.
    pub fn budget(&self) -> &Arc<DecodeBudget> {
        &self.budget
    }

    /// Where the observer says which streams are event subscriptions (for the drain).
    pub fn long_lived(&self) -> LongLived {
        self.long_lived.clone()
    }

    /// How full the queue is, 0.0 to 1.0, by events or bytes, whichever is fuller.
    pub fn fill(&self) -> f64 {
        let events = self.rx.len() as f64 / self.rx.max_capacity().max(1) as f64;
        let bytes = self.queued.load(Ordering::Relaxed) as f64 / self.max_bytes.max(1) as f64;
        events.max(bytes)
    }
}

impl Tap {
    /// A tap feeding a new queue of at most `depth` events and `max_bytes` bytes; the
    /// receiver goes to the observer.
    pub fn new(depth: usize, max_bytes: usize, metrics: Arc<InterceptMetrics>) -> (Tap, TapReceiver) {
        Tap::with_budget(depth, max_bytes, metrics, DecodeBudget::unlimited())
    }

    /// As [`new`](Self::new), the queued bytes also counted against the process-wide `budget`.
    pub fn with_budget(
        depth: usize,
        max_bytes: usize,
        metrics: Arc<InterceptMetrics>,
        budget: Arc<DecodeBudget>,
    ) -> (Tap, TapReceiver) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let long_lived = LongLived::default();
        let receiver = TapReceiver {
            rx,
            queued: Arc::clone(&queued),
            max_bytes,
            budget: Arc::clone(&budget),
            long_lived: long_lived.clone(),
        };
        (
            Tap {
                tx: Some(tx),
                queued,
                max_bytes,
                metrics,
                budget,
                long_lived,
            },
            receiver,
        )
    }

    /// A tap that observes nothing (decoding off for this intercept).
    pub fn off(metrics: Arc<InterceptMetrics>) -> Tap {
        Tap {
            tx: None,
            queued: Arc::new(AtomicUsize::new(0)),
            max_bytes: 0,
            metrics,
            budget: DecodeBudget::unlimited(),
            long_lived: LongLived::default(),
        }
    }

    /// The streams the observer knows to be event subscriptions (none without an observer).
    pub fn long_lived(&self) -> &LongLived {
        &self.long_lived
    }

    /// Whether chunks still go to an observer (not off, not given up, observer not gone).
    pub fn is_tapping(&self) -> bool {
        self.tx.is_some()
    }

    /// Offer a chunk as it was read. Never blocks.
    pub fn offer(&mut self, dir: Direction, bytes: Bytes) {
        self.metrics.add_bytes(dir, bytes.len());
        if self.tx.is_none() {
            return;
        }
        let len = bytes.len();
        if self.queued.load(Ordering::Relaxed) + len > self.max_bytes {
            // The observer holds too many bytes unread: give up rather than grow.
            self.metrics.tap_give_ups.queue_full.inc();
            self.tx = None;
            return;
        }
        if !self.budget.try_reserve(len) {
            // The process-wide decode budget is spent: this connection stops decoding
            // (shedding step 2) rather than the process growing.
            self.metrics.tap_give_ups.decode_memory.inc();
            self.tx = None;
            return;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        let sent = self.send(TapEvent::Data {
            dir,
            at: Instant::now(),
            bytes,
        });
        if !sent {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.budget.release(len);
        }
    }

    /// Count `n` bytes moved without passing through user space (spliced): only while the
    /// tap is not tapping, so the observer misses nothing but the bytes' count is kept.
    pub fn count(&mut self, dir: Direction, n: usize) {
        debug_assert!(self.tx.is_none());
        self.metrics.add_spliced(dir, n);
    }

    /// This connection wanted to splice a direction and the kernel refused (counted).
    pub fn splice_refused(&mut self) {
        self.metrics.splice_refused.inc();
    }

    /// Announce a `traceparent` added to the next client chunk (sent before it). Never blocks.
    pub fn injected(&mut self, injection: Injection) {
        self.metrics.propagation_injected.inc();
        let _ = self.send(TapEvent::Injected(injection));
    }

    /// The propagation rewriter of this connection stopped rewriting. Counted and logged.
    pub fn rewrite_gave_up(&mut self, reason: GiveUpReason) {
        self.metrics.propagation_give_ups.inc();
        tracing::debug!(intercept = %self.metrics.name, reason, "propagation stopped on a connection; forwarding unchanged");
    }

    /// The shutdown drain added `n` GOAWAY frames to this connection. Counted.
    pub fn goaways_sent(&mut self, n: u32) {
        if n > 0 {
            self.metrics.goaways_sent.add(u64::from(n));
        }
    }

    /// Offer the end of one direction. Never blocks.
    pub fn eof(&mut self, dir: Direction) {
        let _ = self.send(TapEvent::Eof {
            dir,
            at: Instant::now(),
        });
    }

    /// The relay is over. Never blocks.
    pub fn close(&mut self) {
        let _ = self.send(TapEvent::Closed { at: Instant::now() });
        self.tx = None;
    }

    /// Whether the event was queued.
    fn send(&mut self, event: TapEvent) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(event) {
            Ok(()) => return true,
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
        false
    }
}
