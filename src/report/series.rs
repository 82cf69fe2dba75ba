//! A named series of durations with nearest-rank percentiles: one phase of the pod starts, one
//! layer's self time over container starts, the pulls of one image.

use std::time::Duration;

use super::nearest_rank;

/// Durations under one label, ascending once [`Series::sorted`] ran.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub label: String,
    pub durations: Vec<Duration>,
}

impl Series {
    /// The series of `durations`, sorted.
    pub fn sorted(label: impl Into<String>, mut durations: Vec<Duration>) -> Series {
        durations.sort();
        Series {
            label: label.into(),
            durations,
        }
    }

    pub fn count(&self) -> usize {
        self.durations.len()
    }

    /// Nearest-rank percentile, `p` in 1..=100.
    pub fn percentile(&self, p: u32) -> Duration {
        nearest_rank(&self.durations, p)
    }

    pub fn max(&self) -> Duration {
        self.durations.last().copied().unwrap_or_default()
    }

    pub fn total(&self) -> Duration {
        self.durations.iter().sum()
    }
}

/// A duration from milliseconds as the span attributes carry them (negative or not a number:
/// zero, so a bad value in a file cannot panic the report).
pub fn from_ms(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default()
}
