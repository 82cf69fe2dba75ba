//! An image pull's progress stream, folded per layer into a fixed-size state, and the
//! breakdown made from it at the end: a `layer download` and a `layer extract` span per
//! layer, and the totals on the pull span (DESIGN.md, "Image pulls").
//!
//! Rule it keeps: bounded and pure. A line updates at most one layer's few timestamps and
//! counters, never adds a record per line; at most [`MAX_LAYERS`] layers are tracked, the rest
//! only counted. No clock and no I/O: the caller stamps each line with the time its bytes
//! arrived.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::names;
use crate::trace::attr::{Attr, AttrValue};
use crate::trace::call::ChildSpan;

/// Layers tracked per pull; more are counted in `runtime_tap.image.layers_untracked`. Real
/// images have tens of layers (Docker caps an image at 127), so 128 keeps every real one, and
/// at most 256 layer spans per pull.
pub const MAX_LAYERS: usize = 128;

/// Longest layer id kept (dockerd sends 12 hex digits; a full digest is 71 bytes).
const MAX_LAYER_ID: usize = 80;

/// `layer download` span name.
pub const LAYER_DOWNLOAD: &str = "layer download";
/// `layer extract` span name.
pub const LAYER_EXTRACT: &str = "layer extract";

/// Whether a Docker span name is the pull whose progress this folds (`docker pull`; push, build
/// and load stream other progress).
pub fn is_docker_pull(span_name: &str) -> bool {
    span_name == "POST /images/create"
}

/// What a gRPC pull call says of its progress: CRI PullImage carries none (the runtime pulls
/// inside and answers once), so its span says `runtime_tap.image.progress = none`; its size is
/// on the ImageStatus that follows (`runtime_tap.image.bytes`).
pub fn grpc_progress(method: &str) -> Option<Attr> {
    method
        .ends_with(".ImageService/PullImage")
        .then(|| Attr::str(names::IMAGE_PROGRESS, "none"))
}

/// One layer's fold: a handful of times and byte counts, whatever the number of lines.
#[derive(Clone, Debug, Default)]
struct Layer {
    id: String,
    /// `Pulling fs layer` (or `Waiting`): the layer is known and queued.
    seen: Option<SystemTime>,
    download_start: Option<SystemTime>,
    download_end: Option<SystemTime>,
    /// `progressDetail.total` of `Downloading`: the compressed blob's size.
    download_bytes: u64,
    extract_start: Option<SystemTime>,
    extract_end: Option<SystemTime>,
    extract_bytes: u64,
}

/// The fold of one pull's progress lines.
#[derive(Clone, Debug, Default)]
pub struct PullProgress {
    layers: Vec<Layer>,
    cached: u64,
    untracked: u64,
    first_byte: Option<SystemTime>,
    /// containerd: the stream said `Pulling from ...` (a push's or an import's progress
    /// stream, which also names blobs `layer-<digest>`, never does).
    pulling: bool,
}

/// The `name` prefix of a layer blob in containerd's transfer progress (`layer-sha256:...`;
/// the manifest and config are `manifest-` and `config-`, not layers).
const CONTAINERD_LAYER: &str = "layer-";
/// The event containerd 2.x's pull sends before any blob (`Pulling from OCI Registry (...)`).
const CONTAINERD_PULLING: &str = "Pulling from ";

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, rename = "progressDetail")]
    detail: Option<Detail>,
}

#[derive(Deserialize, Default)]
struct Detail {
    #[serde(default)]
    total: Option<u64>,
}

impl PullProgress {
    /// Fold one JSON line of dockerd's pull progress, which arrived at `at`. Lines that are
    /// not a layer's (`Pulling from`, `Digest:`, `Status:`) or do not parse change nothing.
    pub fn docker_line(&mut self, line: &[u8], at: SystemTime) {
        let Ok(line) = serde_json::from_slice::<Line<'_>>(line) else {
            return;
        };
        let (Some(status), Some(id)) = (line.status.as_deref(), line.id.as_deref()) else {
            return;
        };
        let total = line.detail.and_then(|d| d.total).unwrap_or(0);
        if status == "Already exists" {
            self.cached += 1;
            return;
        }
        let new_layer = matches!(status, "Pulling fs layer" | "Waiting");
        let Some(layer) = self.layer(id, new_layer) else {
            return;
        };
        match status {
            "Pulling fs layer" | "Waiting" => {
                layer.seen.get_or_insert(at);
            }
            "Downloading" => {
                layer.download_start.get_or_insert(at);
                layer.download_bytes = layer.download_bytes.max(total);
                self.first_byte.get_or_insert(at);
            }
            "Download complete" => {
                layer.download_end.get_or_insert(at);
            }
            "Extracting" => {
                layer.extract_start.get_or_insert(at);
                layer.extract_bytes = layer.extract_bytes.max(total);
            }
            "Pull complete" => {
                layer.extract_end.get_or_insert(at);
            }
            _ => {}
        }
    }

    /// Fold one `containerd.types.transfer.Progress` of a containerd 2.x Streaming/Stream,
    /// which arrived at `at`: `waiting` (the blob is queued), `downloading` (with the bytes so
    /// far), `complete`, `already exists`, for blobs named `layer-<digest>`; `total` is the
    /// blob's size. Only the stream of a pull counts (it first says `Pulling from ...`);
    /// containerd 2.1 reports no per-layer unpack, so its layers have a download span only.
    /// The times are those of containerd's progress ticks (every 300 ms in containerd 2.1, and a
    /// last one at the end), not of the bytes: a fast layer's `complete` can come with the pull's end.
    pub fn containerd_event(&mut self, event: &str, name: &str, total: u64, at: SystemTime) {
        if event.starts_with(CONTAINERD_PULLING) {
            self.pulling = true;
        }
        let Some(id) = name.strip_prefix(CONTAINERD_LAYER).filter(|_| self.pulling) else {
            return;
        };
        if event == "already exists" {
            self.cached += 1;
            return;
        }
        // A layer is added by its `waiting` (sent once, when containerd queues the blob), so
        // an untracked layer is counted once.
        let Some(layer) = self.layer(id, event == "waiting") else {
            return;
        };
        layer.download_bytes = layer.download_bytes.max(total);
        match event {
            "waiting" => {
                layer.seen.get_or_insert(at);
            }
            "downloading" => {
                layer.download_start.get_or_insert(at);
                self.first_byte.get_or_insert(at);
            }
            // A blob fetched within one progress tick is never `downloading`: then the pull
            // has no `first_byte_ms` (its `complete` may come as late as the pull's end).
            "complete" => {
                layer.download_end.get_or_insert(at);
            }
            _ => {}
        }
    }

    /// [`Self::containerd_event`] from the attributes that `schema::containerd`'s `latest`
    /// rules keep of the last Progress message (event, name, total).
    pub fn containerd_attrs(&mut self, attrs: &[Attr], at: SystemTime) {
        let get = |key: &str| attrs.iter().find(|a| a.key == key).map(|a| &a.value);
        let text = |key: &str| match get(key) {
            Some(AttrValue::Str(s)) => s.as_str(),
            _ => "",
        };
        let total = match get(names::CONTAINERD_TRANSFER_PROGRESS_TOTAL) {
            Some(AttrValue::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        self.containerd_event(
            text(names::CONTAINERD_TRANSFER_PROGRESS_EVENT),
            text(names::CONTAINERD_TRANSFER_PROGRESS_NAME),
            total,
            at,
        );
    }

    /// The layer `id`, added when `new` and there is room (else counted as untracked).
    fn layer(&mut self, id: &str, new: bool) -> Option<&mut Layer> {
        let id = truncate(id, MAX_LAYER_ID);
        if let Some(i) = self.layers.iter().position(|l| l.id == id) {
            return self.layers.get_mut(i);
        }
        if !new {
            return None;
        }
        if self.layers.len() >= MAX_LAYERS {
            self.untracked += 1;
            return None;
        }
        self.layers.push(Layer {
            id: id.to_string(),
            ..Layer::default()
        });
        self.layers.last_mut()
    }

    /// Layers tracked so far (at most [`MAX_LAYERS`]).
    pub fn tracked(&self) -> usize {
        self.layers.len()
    }

    /// The breakdown of a pull that ran from `start` to `end`: the layer spans, and the
    /// totals appended to `attrs` (the pull span's). A stream that named no layer (an import,
    /// `fromSrc`, shares the route; a pull that failed before its manifest) gives nothing.
    pub fn finish(self, start: SystemTime, end: SystemTime, attrs: &mut Vec<Attr>) -> Vec<ChildSpan> {
        if self.layers.is_empty() && self.cached == 0 && self.untracked == 0 {
            return Vec::new();
        }
        let mut children = Vec::with_capacity(self.layers.len() * 2);
        let mut bytes = 0;
        for l in &self.layers {
            // dockerd 26 and later send no `Downloading` line for a layer that arrives in one
            // read (a 114-byte layer: `Pulling fs layer`, then `Download complete`); its
            // `Extracting` total is the same compressed blob's size.
            let download_bytes = if l.download_bytes > 0 {
                l.download_bytes
            } else {
                l.extract_bytes
            };
            bytes += download_bytes;
            let download_start = l.download_start.or(l.seen);
            if let Some(s) = download_start {
                let e = l.download_end.or(l.extract_start).unwrap_or(end);
                children.push(layer_span(LAYER_DOWNLOAD, &l.id, s, e, download_bytes));
            }
            if let Some(s) = l.extract_start {
                let e = l.extract_end.unwrap_or(end);
                children.push(layer_span(LAYER_EXTRACT, &l.id, s, e, l.extract_bytes));
            }
        }
        let layers = self.layers.len() as u64 + self.cached + self.untracked;
        attrs.push(Attr::str(names::IMAGE_PROGRESS, "layers"));
        attrs.push(Attr::int(names::IMAGE_LAYERS, clamp(layers)));
        attrs.push(Attr::int(names::IMAGE_BYTES, clamp(bytes)));
        if self.cached > 0 {
            attrs.push(Attr::int(names::IMAGE_LAYERS_CACHED, clamp(self.cached)));
        }
        if self.untracked > 0 {
            attrs.push(Attr::int(names::IMAGE_LAYERS_UNTRACKED, clamp(self.untracked)));
        }
        if let Some(first) = self.first_byte {
            let ms = first.duration_since(start).unwrap_or(Duration::ZERO);
            attrs.push(Attr::double(names::IMAGE_FIRST_BYTE_MS, ms.as_secs_f64() * 1000.0));
        }
        children
    }
}

fn layer_span(name: &'static str, id: &str, start: SystemTime, end: SystemTime, bytes: u64) -> ChildSpan {
    let end = end.max(start);
    let mut attributes = vec![
        Attr::str(names::IMAGE_LAYER_ID, id),
        Attr::int(names::IMAGE_LAYER_BYTES, clamp(bytes)),
    ];
    let secs = end.duration_since(start).unwrap_or(Duration::ZERO).as_secs_f64();
    if bytes > 0 && secs > 0.0 {
        attributes.push(Attr::double(names::IMAGE_LAYER_BYTES_PER_SECOND, bytes as f64 / secs));
    }
    ChildSpan {
        name,
        start,
        end,
        attributes,
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
