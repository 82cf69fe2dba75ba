//! Pod starts: the synthesized `pod start` roots (DESIGN.md "Pod start"), with the phases the
//! correlator put on them, the pod startup SLI, and the slowest pods.

use std::time::Duration;

use super::series::{Series, from_ms};
use crate::trace::attr::names;
use crate::trace::span::SpanRecord;
use crate::trace::tree::duration;

/// Name of the synthesized root of a pod's start.
pub const POD_START: &str = "pod start";

/// The phases, in the order a pod goes through them, with the attribute each is read from.
pub const PHASES: &[(&str, &str)] = &[
    ("sandbox", names::POD_START_SANDBOX_MS),
    ("image check", names::POD_START_IMAGE_CHECK_MS),
    ("image pull", names::POD_START_IMAGE_PULL_MS),
    ("create", names::POD_START_CREATE_MS),
    ("start", names::POD_START_START_MS),
    ("kubelet", names::POD_START_KUBELET_MS),
];

/// Label of the pod startup SLI row.
pub const SLI: &str = "SLI (pulls excluded)";
/// Label of the whole start's row.
pub const TOTAL: &str = "total";

/// The pod starts of a file, summed up per phase.
#[derive(Debug, Default)]
pub struct PodStarts {
    pub count: usize,
    /// `total`, the SLI when the roots carry it, then each phase the roots carry.
    pub rows: Vec<Series>,
}

impl PodStarts {
    /// Over the `pod start` roots.
    pub fn of<'a>(roots: impl Iterator<Item = &'a SpanRecord>) -> PodStarts {
        let roots: Vec<&SpanRecord> = roots.filter(|s| s.name == POD_START).collect();
        let mut rows = vec![Series::sorted(TOTAL, roots.iter().map(|s| duration(s)).collect())];
        let column =
            |key: &str| -> Vec<Duration> { roots.iter().filter_map(|s| s.attr_f64(key)).map(from_ms).collect() };
        for (label, key) in std::iter::once((SLI, names::POD_START_SLI_MS)).chain(PHASES.iter().copied()) {
            let values = column(key);
            if !values.is_empty() {
                rows.push(Series::sorted(label, values));
            }
        }
        PodStarts {
            count: roots.len(),
            rows,
        }
    }
}
