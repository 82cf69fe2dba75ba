//! OTLP sink: our span records as OpenTelemetry `SpanData`, sent by the opentelemetry-otlp
//! exporter, one exporter (and so one resource) per service, made on first use.
//! Every export is bounded by a deadline; a failure is the caller's to count, never retried here
//! beyond the exporter's own retry policy.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_semantic_conventions::resource::{HOST_NAME, SERVICE_NAME};
use tokio::time::{Instant, timeout_at};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::{DropReason, ExportConfig, ExportError, Protocol};
use crate::trace::attr::{Attr, AttrValue};
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus};

/// Name of the instrumentation scope of every span runtime-tap exports.
pub const SCOPE_NAME: &str = "runtime-tap";

/// Sends batches to one OTLP endpoint.
pub(super) struct OtlpSink {
    url: String,
    protocol: Protocol,
    metadata: MetadataMap,
    headers: HashMap<String, String>,
    timeout: std::time::Duration,
    host_name: String,
    resource_attributes: Vec<(String, String)>,
    /// One exporter per service name: an exporter carries one resource.
    exporters: HashMap<Arc<str>, opentelemetry_otlp::SpanExporter>,
}

impl OtlpSink {
    /// Checks the endpoint and headers by building one exporter.
    ///
    /// # Errors
    ///
    /// [`ExportError::Otlp`] for a bad endpoint or header. Must run inside a tokio runtime.
    pub(super) fn new(cfg: &ExportConfig, url: String, host_name: String) -> Result<OtlpSink, ExportError> {
        let mut metadata = MetadataMap::new();
        for (k, v) in &cfg.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| ExportError::Otlp(format!("invalid header name {k:?}")))?;
            let value = MetadataValue::try_from(v.as_str())
                .map_err(|_| ExportError::Otlp(format!("invalid value for header {k:?}")))?;
            metadata.insert(key, value);
        }
        let sink = OtlpSink {
            url,
            protocol: cfg.protocol,
            metadata,
            headers: cfg.headers.iter().cloned().collect(),
            timeout: cfg.export_timeout,
            host_name,
            resource_attributes: cfg.resource_attributes.clone(),
            exporters: HashMap::new(),
        };
        sink.build("runtime-tap")?;
        Ok(sink)
    }

    fn build(&self, service: &str) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
        let built = match self.protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(self.url.clone())
                .with_timeout(self.timeout)
                .with_metadata(self.metadata.clone())
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(self.url.clone())
                .with_timeout(self.timeout)
                .with_headers(self.headers.clone())
                .build(),
        };
        let mut exporter = built
            .map_err(|e| ExportError::Otlp(format!("{} endpoint {}: {e}", protocol_name(self.protocol), self.url)))?;
        let resource = Resource::builder_empty()
            .with_attributes(resource_attributes(service, &self.host_name, &self.resource_attributes))
            .build();
        exporter.set_resource(&resource);
        Ok(exporter)
    }

    /// Exports `spans`, one request per service, all before `deadline`. Marks in `failed` the
    /// spans that did not get through: `ExportFailed` when the collector refused or the
    /// request failed, `on_timeout` when the deadline passed. Returns whether all got through.
    pub(super) async fn export(
        &mut self,
        spans: &[SpanRecord],
        deadline: Instant,
        on_timeout: DropReason,
        failed: &mut [Option<DropReason>],
    ) -> bool {
        let mut ok = true;
        for (service, idx) in group_by_service(spans) {
            if !self.exporters.contains_key(&service) {
                match self.build(&service) {
                    Ok(e) => {
                        self.exporters.insert(service.clone(), e);
                    }
                    Err(error) => {
                        tracing::warn!(%service, %error, "otlp exporter build failed");
                        mark(failed, &idx, DropReason::ExportFailed);
                        ok = false;
                        continue;
                    }
                }
            }
            let exporter = &self.exporters[&service];
            let batch = idx.iter().map(|&i| span_data(&spans[i])).collect();
            match timeout_at(deadline, exporter.export(batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%service, spans = idx.len(), %error, "otlp export failed");
                    mark(failed, &idx, DropReason::ExportFailed);
                    ok = false;
                }
                Err(_) => {
                    tracing::warn!(%service, spans = idx.len(), url = %self.url, "otlp export timed out");
                    mark(failed, &idx, on_timeout);
                    ok = false;
                }
            }
        }
        ok
    }
}

fn mark(failed: &mut [Option<DropReason>], idx: &[usize], reason: DropReason) {
    for &i in idx {
        failed[i].get_or_insert(reason);
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Grpc => "grpc",
        Protocol::HttpProtobuf => "http/protobuf",
    }
}

/// Indices of `spans` per service, services in order of first appearance.
pub(super) fn group_by_service(spans: &[SpanRecord]) -> Vec<(Arc<str>, Vec<usize>)> {
    let mut groups: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match groups.iter_mut().find(|(svc, _)| *svc == s.service) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((s.service.clone(), vec![i])),
        }
    }
    groups
}

/// Resource attributes of one service, in a fixed order: `service.name`, `host.name`, then
/// the configured extras (which cannot override the first two).
pub(super) fn resource_attributes(service: &str, host_name: &str, extra: &[(String, String)]) -> Vec<KeyValue> {
    let mut kvs = vec![
        KeyValue::new(SERVICE_NAME, service.to_owned()),
        KeyValue::new(HOST_NAME, host_name.to_owned()),
    ];
    kvs.extend(
        extra
            .iter()
            .filter(|(k, _)| k != SERVICE_NAME && k != HOST_NAME)
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    kvs
}

/// The instrumentation scope of every exported span.
pub(super) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// One span record as SDK span data, sampled, with our ids, parent and times.
pub(super) fn span_data(s: &SpanRecord) -> SpanData {
    let trace_state = s
        .trace_state
        .as_deref()
        .and_then(|ts| ts.parse::<TraceState>().ok())
        .unwrap_or_default();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id: s.parent.map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.span_id)),
        parent_span_is_remote: s.parent.is_some_and(|p| p.remote),
        span_kind: match s.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Internal => OtelKind::Internal,
        },
        name: Cow::Owned(s.name.clone()),
        start_time: s.start,
        end_time: s.end,
        attributes: key_values(&s.attributes),
        dropped_attributes_count: 0,
        events: span_events(s),
        links: span_links(s),
        status: match &s.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error(msg) => Status::error(msg.clone()),
        },
        instrumentation_scope: scope(),
    }
}

fn span_events(s: &SpanRecord) -> SpanEvents {
    let mut events = SpanEvents::default();
    events.events = s
        .events
        .iter()
        .map(|e| Event::new(e.name.clone(), e.time, key_values(&e.attributes), 0))
        .collect();
    events
}

fn span_links(s: &SpanRecord) -> SpanLinks {
    let mut links = SpanLinks::default();
    links.links = s
        .links
        .iter()
        .map(|l| {
            let ctx = SpanContext::new(
                TraceId::from_bytes(l.trace_id),
                SpanId::from_bytes(l.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            );
            Link::new(ctx, key_values(&l.attributes), 0)
        })
        .collect();
    links
}

fn key_values(attrs: &[Attr]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|a| KeyValue::new(a.key.clone(), value(&a.value)))
        .collect()
}

fn value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::String(s.clone().into()),
        AttrValue::Int(i) => Value::I64(*i),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::StrList(l) => Value::Array(Array::String(l.iter().map(|s| StringValue::from(s.clone())).collect())),
    }
}
