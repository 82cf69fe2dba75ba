//! Our span records as the OpenTelemetry SDK's `SpanData`, with the resource and scope every
//! span carries: what the span file writes through opentelemetry-proto's OTLP/JSON mapping.
//! (OTLP export encodes straight from the records instead: `otlp_encode`.)

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use opentelemetry_semantic_conventions::resource::{HOST_NAME, SERVICE_NAME};

use super::SCOPE_NAME;
use crate::trace::attr::{Attr, AttrValue};
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus};

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
    resource_pairs(service, host_name, extra)
        .map(|(k, v)| KeyValue::new(k.to_owned(), v.to_owned()))
        .collect()
}

/// The same as (key, value) pairs.
pub(super) fn resource_pairs<'a>(
    service: &'a str,
    host_name: &'a str,
    extra: &'a [(String, String)],
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    [(SERVICE_NAME, service), (HOST_NAME, host_name)].into_iter().chain(
        extra
            .iter()
            .filter(|(k, _)| k != SERVICE_NAME && k != HOST_NAME)
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
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
            SpanKind::Client => OtelKind::Client,
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
        AttrValue::Double(d) => Value::F64(*d),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::StrList(l) => Value::Array(Array::String(l.iter().map(|s| StringValue::from(s.clone())).collect())),
    }
}
