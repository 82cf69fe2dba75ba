//! Image pulls: every pull span of a file (Docker `POST /images/create?fromImage=`, CRI
//! PullImage, containerd 2.x Transfer from a registry), per image, and the slowest pulls layer
//! by layer from their `layer download` / `layer extract` children (DESIGN.md "Image pulls").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_semantic_conventions::attribute::{CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS, URL_QUERY};

use super::series::Series;
use crate::schema::containerd::TRANSFER;
use crate::schema::pull::{LAYER_DOWNLOAD, LAYER_EXTRACT, is_docker_pull};
use crate::trace::attr::{AttrValue, names};
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus};
use crate::trace::tree::duration;

const CRI_PULL: &str = "ImageService/PullImage";

/// One layer of a pull, from its children.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub id: String,
    pub bytes: Option<u64>,
    pub download: Option<Duration>,
    pub extract: Option<Duration>,
}

impl Layer {
    /// Download throughput in bytes per second.
    pub fn throughput(&self) -> Option<f64> {
        rate(self.bytes?, self.download?)
    }
}

/// One pull.
#[derive(Debug, Clone)]
pub struct Pull {
    pub image: String,
    pub service: Arc<str>,
    pub start: SystemTime,
    pub duration: Duration,
    /// `runtime_tap.image.bytes`, else the sum of the layers' bytes.
    pub bytes: Option<u64>,
    pub error: bool,
    pub layers: Vec<Layer>,
}

impl Pull {
    /// Bytes per second over the whole pull.
    pub fn throughput(&self) -> Option<f64> {
        rate(self.bytes?, self.duration)
    }
}

/// The pulls of one image.
#[derive(Debug, Clone)]
pub struct ImagePulls {
    /// The image (`name:tag`) and every pull's duration.
    pub series: Series,
    /// The largest size a pull of it reported.
    pub bytes: Option<u64>,
    pub errors: usize,
}

impl ImagePulls {
    /// Bytes per second of a typical pull: its size over the median duration.
    pub fn throughput(&self) -> Option<f64> {
        rate(self.bytes?, self.series.percentile(50))
    }
}

/// Every pull of a file.
#[derive(Debug, Default)]
pub struct Pulls {
    pub count: usize,
    /// Per image, by name.
    pub images: Vec<ImagePulls>,
    /// The slowest pulls, slowest first, with their layers.
    pub slowest: Vec<Pull>,
}

impl Pulls {
    /// Over the spans of a file grouped per trace, keeping the `top` slowest pulls whole.
    pub fn of(traces: &[Vec<SpanRecord>], top: usize) -> Pulls {
        let mut pulls: Vec<Pull> = traces
            .iter()
            .flat_map(|spans| spans.iter().filter(|s| is_pull(s)).map(|s| pull(s, spans)))
            .collect();
        let mut per_image: BTreeMap<String, (Vec<Duration>, Option<u64>, usize)> = BTreeMap::new();
        for p in &pulls {
            let e = per_image.entry(p.image.clone()).or_default();
            e.0.push(p.duration);
            e.1 = e.1.max(p.bytes);
            e.2 += usize::from(p.error);
        }
        let images = per_image
            .into_iter()
            .map(|(image, (durations, bytes, errors))| ImagePulls {
                series: Series::sorted(image, durations),
                bytes,
                errors,
            })
            .collect();
        let count = pulls.len();
        pulls.sort_by(|a, b| b.duration.cmp(&a.duration).then(a.start.cmp(&b.start)));
        pulls.truncate(top);
        Pulls {
            count,
            images,
            slowest: pulls,
        }
    }
}

fn is_pull(s: &SpanRecord) -> bool {
    // A CLIENT span repeats its SERVER child's call: the pull is counted once, on the server.
    if s.kind == SpanKind::Client {
        return false;
    }
    if is_docker_pull(&s.name) {
        // `docker import` posts here too, with `fromSrc`.
        return s.attr_str(URL_QUERY).is_none_or(|q| q.contains("fromImage"));
    }
    s.name.ends_with(CRI_PULL)
        || (s.name == TRANSFER
            && s.attr_str(names::CONTAINERD_TRANSFER_SOURCE_TYPE)
                .is_some_and(|t| t.ends_with("OCIRegistry")))
}

fn pull(s: &SpanRecord, trace: &[SpanRecord]) -> Pull {
    let mut layers: Vec<Layer> = Vec::new();
    for kid in trace
        .iter()
        .filter(|k| k.parent.is_some_and(|p| p.span_id == s.span_id))
    {
        let download = kid.name == LAYER_DOWNLOAD;
        if !download && kid.name != LAYER_EXTRACT {
            continue;
        }
        let id = kid.attr_str(names::IMAGE_LAYER_ID).unwrap_or("?").to_string();
        let i = layers.iter().position(|l| l.id == id).unwrap_or_else(|| {
            layers.push(Layer { id, ..Layer::default() });
            layers.len() - 1
        });
        let layer = &mut layers[i];
        let bytes = kid.attr_f64(names::IMAGE_LAYER_BYTES).map(|b| b.max(0.0) as u64);
        if download {
            // The blob's size as downloaded; an extract's bytes count only where no download
            // was seen.
            layer.bytes = bytes.or(layer.bytes);
            layer.download = Some(duration(kid));
        } else {
            layer.bytes = layer.bytes.or(bytes);
            layer.extract = Some(duration(kid));
        }
    }
    let summed = layers
        .iter()
        .map(|l| l.bytes)
        .sum::<Option<u64>>()
        .filter(|_| !layers.is_empty());
    Pull {
        image: image_of(s),
        service: Arc::clone(&s.service),
        start: s.start,
        duration: duration(s),
        bytes: s.attr_f64(names::IMAGE_BYTES).map(|b| b.max(0.0) as u64).or(summed),
        error: matches!(s.status, SpanStatus::Error(_)),
        layers,
    }
}

/// `name:tag` (tags joined by `,`), the name alone, or `?` when the span names no image.
fn image_of(s: &SpanRecord) -> String {
    let name = s.attr_str(CONTAINER_IMAGE_NAME).unwrap_or("?");
    match s.attr(CONTAINER_IMAGE_TAGS) {
        Some(AttrValue::StrList(tags)) if !tags.is_empty() => format!("{name}:{}", tags.join(",")),
        _ => name.to_string(),
    }
}

fn rate(bytes: u64, over: Duration) -> Option<f64> {
    (over > Duration::ZERO).then(|| bytes as f64 / over.as_secs_f64())
}
