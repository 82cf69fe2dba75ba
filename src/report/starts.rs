//! Container starts: each `POST /containers/{id}/start` root (`docker start`, the start of a
//! `docker run`), its duration and each layer's self time in it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::series::Series;
use crate::trace::export::waterfall;
use crate::trace::span::SpanRecord;
use crate::trace::tree::{SpanTree, duration};

/// The route of a container start.
pub const CONTAINER_START: &str = "POST /containers/{id}/start";

/// The container starts of a file.
#[derive(Debug, Default)]
pub struct ContainerStarts {
    pub durations: Series,
    /// Per layer (service), its self time in each start, in order of first appearance.
    pub layers: Vec<Series>,
}

impl ContainerStarts {
    /// Over the roots `(trace, index of the root in it)`.
    pub fn of<'a>(roots: impl Iterator<Item = (&'a [SpanRecord], usize)>) -> ContainerStarts {
        let mut durations = Vec::new();
        let mut order: Vec<Arc<str>> = Vec::new();
        let mut per_layer: BTreeMap<Arc<str>, Vec<Duration>> = BTreeMap::new();
        for (trace, r) in roots.filter(|(t, r)| t[*r].name == CONTAINER_START) {
            durations.push(duration(&trace[r]));
            let tree = SpanTree::new(trace);
            for (svc, d) in waterfall::self_times(&tree, r) {
                let svc: Arc<str> = Arc::from(svc);
                if !order.contains(&svc) {
                    order.push(Arc::clone(&svc));
                }
                per_layer.entry(svc).or_default().push(d);
            }
        }
        let layers = order
            .into_iter()
            .map(|svc| Series::sorted(svc.to_string(), per_layer.remove(&svc).unwrap_or_default()))
            .collect();
        ContainerStarts {
            durations: Series::sorted(CONTAINER_START, durations),
            layers,
        }
    }
}
