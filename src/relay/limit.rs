//! The optional per-intercept connection limit (`max_connections`, off by default: refusing
//! kubelet is worse than not tracing it). Rule it keeps: a connection beyond the limit is
//! accepted and closed at once, counted every time, and logged at most once per
//! [`LOG_INTERVAL`] with the count since the last line, so a flood cannot flood the log.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::InterceptMetrics;

/// At most one log line about refused connections per intercept in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The open connections of one intercept, against its limit.
pub struct ConnectionLimit {
    max: Option<usize>,
    open: AtomicUsize,
    metrics: Arc<InterceptMetrics>,
    /// Refusals not yet reported in a log line.
    unlogged: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// An admitted connection; dropping it frees its place.
pub struct Permit(Arc<ConnectionLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionLimit {
    /// A limit of `max` open connections (`None`: unlimited, only counted).
    pub fn new(max: Option<usize>, metrics: Arc<InterceptMetrics>) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            max,
            open: AtomicUsize::new(0),
            metrics,
            unlogged: AtomicU64::new(0),
            last_log: Mutex::new(None),
        })
    }

    /// Admit one more connection, or refuse it (counted, logged at a bounded rate): the caller
    /// then closes it at once.
    pub fn admit(self: &Arc<Self>) -> Option<Permit> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match self.max {
                Some(max) if n >= max => None,
                _ => Some(n + 1),
            })
            .is_ok();
        if admitted {
            return Some(Permit(Arc::clone(self)));
        }
        self.metrics.connections_refused.inc();
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        self.maybe_log(Instant::now());
        None
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn maybe_log(&self, now: Instant) {
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        let refused = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            intercept = %self.metrics.name,
            max_connections = self.max.unwrap_or(0),
            refused,
            interval_secs = LOG_INTERVAL.as_secs(),
            "connection limit reached: new connections are closed at once (not relayed); at most one such line per interval"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_frees_on_drop() {
        let metrics = InterceptMetrics::new("t");
        let limit = ConnectionLimit::new(Some(2), Arc::clone(&metrics));
        let a = limit.admit().unwrap();
        let _b = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        assert!(limit.admit().is_none());
        assert_eq!(metrics.connections_refused.get(), 2);
        drop(a);
        assert_eq!(limit.open(), 1);
        assert!(limit.admit().is_some());
    }

    #[test]
    fn unlimited_by_default() {
        let metrics = InterceptMetrics::new("t");
        let limit = ConnectionLimit::new(None, Arc::clone(&metrics));
        let permits: Vec<_> = (0..10_000).map(|_| limit.admit().unwrap()).collect();
        assert_eq!(limit.open(), 10_000);
        drop(permits);
        assert_eq!(limit.open(), 0);
        assert_eq!(metrics.connections_refused.get(), 0);
    }

    #[test]
    fn logs_once_per_interval_with_the_count() {
        let metrics = InterceptMetrics::new("t");
        let limit = ConnectionLimit::new(Some(0), metrics);
        for _ in 0..100 {
            assert!(limit.admit().is_none());
        }
        // The first refusal logged at once; the other 99 wait for the next line.
        assert_eq!(limit.unlogged.load(Ordering::Relaxed), 99);
        let later = Instant::now() + LOG_INTERVAL;
        limit.maybe_log(later);
        assert_eq!(limit.unlogged.load(Ordering::Relaxed), 0);
    }
}
