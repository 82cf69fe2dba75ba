//! The process-wide decode memory budget (`relay.decode_memory_limit`): the bytes every
//! connection's tap queue holds for its observer plus the bytes its decoder buffers (partial
//! frames, header blocks, messages, JSON bodies). Rule it keeps: a reservation that would pass
//! the limit fails, so the gauge never exceeds it; what fails sheds decoding, never a byte of
//! the relay. The steps (DESIGN.md invariant 3), applied by the tap and the observer: past
//! [`HIGH_WATER`] of the budget every session stops decoding payloads; at the limit a
//! connection that needs more gives up decoding (`reason="decode_memory"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::{Family, FmtMetrics};

/// The shared budget of buffered decode state.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl DecodeBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<DecodeBudget> {
        Arc::new(DecodeBudget {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// A budget nothing reaches (embedding and fuzzing, where per-connection caps suffice).
    pub fn unlimited() -> Arc<DecodeBudget> {
        DecodeBudget::new(usize::MAX)
    }

    /// Take `n` bytes; `false`, taking nothing, when that would pass the limit.
    pub fn try_reserve(&self, n: usize) -> bool {
        let reserved = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(n).filter(|&total| total <= self.limit)
        });
        match reserved {
            Ok(before) => {
                self.peak.fetch_max(before + n, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Give back `n` bytes taken with [`try_reserve`](Self::try_reserve).
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Move a holder's reservation from `held` to `wanted` bytes. On failure the holder keeps
    /// `held` and must give up what it buffers (then release `held`).
    pub fn resize(&self, held: usize, wanted: usize) -> bool {
        if wanted <= held {
            self.release(held - wanted);
            true
        } else {
            self.try_reserve(wanted - held)
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The most ever reserved at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How full the budget is, 0.0 to 1.0 (compared with the observer's water marks).
    pub fn fill(&self) -> f64 {
        self.used() as f64 / self.limit.max(1) as f64
    }
}

impl FmtMetrics for DecodeBudget {
    fn fmt_metrics(&self, out: &mut String) {
        for (family, value) in [
            (
                Family::gauge(
                    "runtime_tap_decode_memory_bytes",
                    "Decode state buffered now, all connections: tap queues plus decoder buffers.",
                ),
                self.used(),
            ),
            (
                Family::gauge(
                    "runtime_tap_decode_memory_peak_bytes",
                    "The most decode state ever buffered at once.",
                ),
                self.peak(),
            ),
            (
                Family::gauge(
                    "runtime_tap_decode_memory_limit_bytes",
                    "relay.decode_memory_limit: past 75% payloads are shed, at it connections give up decoding.",
                ),
                self.limit(),
            ),
        ] {
            family.header(out);
            family.sample(out, &[], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_limit() {
        let b = DecodeBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        assert_eq!(b.used(), 100);
        assert!(!b.try_reserve(1));
        b.release(50);
        assert!(b.resize(10, 30));
        assert_eq!(b.used(), 70);
        assert!(!b.resize(30, 70));
        assert!(b.resize(30, 0));
        assert_eq!(b.used(), 40);
        assert_eq!(b.peak(), 100);
    }
}
