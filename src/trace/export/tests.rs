//! Unit tests of the export pipeline: env parsing, the span file's OTLP/JSON, queue accounting.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::json;

use super::*;
use crate::trace::attr::Attr;
use crate::trace::span::{LinkRecord, ParentRef, SpanEventRecord, SpanKind, SpanStatus};

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn span(service: &str, name: &str) -> SpanRecord {
    SpanRecord {
        trace_id: [0x4b; 16],
        span_id: [0x0f; 8],
        parent: None,
        trace_state: None,
        name: name.to_owned(),
        kind: SpanKind::Server,
        start: at(1_000_000_000),
        end: at(1_012_500_000),
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        status: SpanStatus::Unset,
        service: service.into(),
    }
}

fn rich() -> SpanRecord {
    SpanRecord {
        trace_id: [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
        ],
        span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        parent: Some(ParentRef {
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            remote: true,
        }),
        trace_state: Some("vendor=abc".to_owned()),
        name: "POST /containers/{id}/start".to_owned(),
        kind: SpanKind::Server,
        start: at(1_700_000_000_000_000_123),
        end: at(1_700_000_001_000_000_456),
        attributes: vec![
            Attr::str("http.route", "/containers/{id}/start"),
            Attr::int("http.response.status_code", 500),
            Attr::bool("runtime_tap.incomplete", true),
            Attr::double("runtime_tap.self_time_ms.dockerd", 6.75),
            Attr::list("container.image.tags", vec!["3.6".to_owned()]),
        ],
        events: vec![SpanEventRecord {
            name: "response headers".to_owned(),
            time: at(1_700_000_000_500_000_000),
            attributes: vec![Attr::int("runtime_tap.response.bytes", 12)],
        }],
        links: vec![LinkRecord {
            trace_id: [0xaa; 16],
            span_id: [0xbb; 8],
            attributes: vec![Attr::str("runtime_tap.link", "subscription")],
        }],
        status: SpanStatus::Error("driver failed".to_owned()),
        service: "dockerd".into(),
    }
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn from_env(pairs: &[(&str, &str)]) -> Result<ExportConfig, ExportError> {
    let map = env(pairs);
    ExportConfig::from_env_and(ExportConfig::default(), &|k| map.get(k).cloned())
}

fn temp_path(tag: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("runtime-tap-{tag}-{}-{nanos}.jsonl", std::process::id()))
}

#[test]
fn env_applies_every_standard_variable() {
    let cfg = from_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret , x-tenant=a%2Cb"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,k8s.cluster.name=eu%201",
        ),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ("OTEL_BSP_SCHEDULED_DELAY", "1500"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "2500"),
    ])
    .unwrap();
    assert_eq!(cfg.endpoint.as_deref(), Some("http://collector:4318/"));
    assert_eq!(cfg.protocol, Protocol::HttpProtobuf);
    assert_eq!(
        cfg.headers,
        vec![("api-key".into(), "s=cret".into()), ("x-tenant".into(), "a,b".into())]
    );
    assert_eq!(
        cfg.resource_attributes,
        vec![
            ("deployment.environment.name".into(), "prod".into()),
            ("k8s.cluster.name".into(), "eu 1".into())
        ]
    );
    assert_eq!(cfg.max_queue, 100);
    assert_eq!(cfg.scheduled_delay, Duration::from_millis(1500));
    assert_eq!(cfg.max_batch, 10);
    assert_eq!(cfg.export_timeout, Duration::from_millis(2500));
    assert_eq!(cfg.otlp_url().as_deref(), Some("http://collector:4318/v1/traces"));
}

#[test]
fn env_traces_variables_win_and_empty_values_are_unset() {
    let cfg = from_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", ""),
    ])
    .unwrap();
    assert_eq!(cfg.protocol, Protocol::Grpc);
    assert_eq!(cfg.otlp_url().as_deref(), Some("http://traces:9999/custom"));
    assert_eq!(cfg.max_queue, DEFAULT_MAX_QUEUE);
}

#[test]
fn env_overrides_base_and_keeps_the_rest() {
    let base = ExportConfig {
        endpoint: Some("http://base:4317".into()),
        console: true,
        headers: vec![("API-Key".into(), "old".into())],
        ..ExportConfig::default()
    };
    let map = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=new")]);
    let cfg = ExportConfig::from_env_and(base, &|k| map.get(k).cloned()).unwrap();
    assert_eq!(cfg.endpoint.as_deref(), Some("http://base:4317"));
    assert!(cfg.console);
    assert_eq!(cfg.headers, vec![("api-key".into(), "new".into())]);
    assert_eq!(cfg.otlp_url().as_deref(), Some("http://base:4317"));
}

#[test]
fn env_rejects_bad_values_by_name() {
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BSP_SCHEDULED_DELAY", "1s"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
    ] {
        let err = from_env(&[(name, value)]).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn percent_decoding_keeps_broken_escapes() {
    assert_eq!(
        parse_key_values("a=100%,b=%zz,c=%41%42").unwrap(),
        vec![
            ("a".into(), "100%".into()),
            ("b".into(), "%zz".into()),
            ("c".into(), "AB".into())
        ]
    );
}

#[test]
fn validate_needs_a_sink_and_nonzero_limits() {
    assert!(ExportConfig::default().validate().is_err());
    let console = ExportConfig {
        console: true,
        ..ExportConfig::default()
    };
    assert!(console.validate().is_ok());
    assert!(
        ExportConfig {
            max_queue: 0,
            ..console.clone()
        }
        .validate()
        .is_err()
    );
    assert!(
        ExportConfig {
            max_batch: 0,
            ..console.clone()
        }
        .validate()
        .is_err()
    );
    assert!(
        ExportConfig {
            export_timeout: Duration::ZERO,
            ..console
        }
        .validate()
        .is_err()
    );
}

#[test]
fn start_needs_a_runtime() {
    let cfg = ExportConfig {
        console: true,
        ..ExportConfig::default()
    };
    assert!(matches!(Exporter::start(cfg, "h".into()), Err(ExportError::NoRuntime)));
}

#[tokio::test]
async fn start_rejects_a_bad_endpoint() {
    let cfg = ExportConfig {
        endpoint: Some("http://[::1".into()),
        ..ExportConfig::default()
    };
    assert!(matches!(Exporter::start(cfg, "h".into()), Err(ExportError::Otlp(_))));
}

/// The span file line, written out by hand from the OTLP/JSON rules: lowerCamelCase names,
/// ids as hex, 64-bit integers as strings, enums as numbers.
fn expected_line() -> serde_json::Value {
    json!({"resourceSpans": [{
        "resource": {
            "attributes": [
                {"key": "service.name", "value": {"stringValue": "dockerd"}},
                {"key": "host.name", "value": {"stringValue": "node-1"}},
                {"key": "deployment.environment.name", "value": {"stringValue": "prod"}}
            ],
            "droppedAttributesCount": 0,
            "entityRefs": []
        },
        "scopeSpans": [{
            "scope": {
                "name": "runtime-tap",
                "version": env!("CARGO_PKG_VERSION"),
                "attributes": [],
                "droppedAttributesCount": 0
            },
            "spans": [{
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanId": "00f067aa0ba902b7",
                "traceState": "vendor=abc",
                "parentSpanId": "0102030405060708",
                "flags": 0x301,
                "name": "POST /containers/{id}/start",
                "kind": 2,
                "startTimeUnixNano": "1700000000000000123",
                "endTimeUnixNano": "1700000001000000456",
                "attributes": [
                    {"key": "http.route", "value": {"stringValue": "/containers/{id}/start"}},
                    {"key": "http.response.status_code", "value": {"intValue": "500"}},
                    {"key": "runtime_tap.incomplete", "value": {"boolValue": true}},
                    {"key": "runtime_tap.self_time_ms.dockerd", "value": {"doubleValue": 6.75}},
                    {"key": "container.image.tags",
                     "value": {"arrayValue": {"values": [{"stringValue": "3.6"}]}}}
                ],
                "droppedAttributesCount": 0,
                "events": [{
                    "timeUnixNano": "1700000000500000000",
                    "name": "response headers",
                    "attributes": [
                        {"key": "runtime_tap.response.bytes", "value": {"intValue": "12"}}
                    ],
                    "droppedAttributesCount": 0
                }],
                "droppedEventsCount": 0,
                "links": [{
                    "traceId": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    "spanId": "bbbbbbbbbbbbbbbb",
                    "traceState": "",
                    "attributes": [
                        {"key": "runtime_tap.link", "value": {"stringValue": "subscription"}}
                    ],
                    "droppedAttributesCount": 0,
                    "flags": 0x101
                }],
                "droppedLinksCount": 0,
                "status": {"message": "driver failed", "code": 2}
            }],
            "schemaUrl": ""
        }],
        "schemaUrl": ""
    }]})
}

#[tokio::test]
async fn span_file_lines_are_otlp_json() {
    let path = temp_path("file");
    let cfg = ExportConfig {
        file: Some(path.clone()),
        resource_attributes: vec![
            ("deployment.environment.name".into(), "prod".into()),
            ("service.name".into(), "ignored".into()),
        ],
        ..ExportConfig::default()
    };
    let (exporter, handle) = Exporter::start(cfg, "node-1".into()).unwrap();
    exporter.submit(rich());
    // Let the first batch go out alone, so the file holds two lines.
    let until = Instant::now() + Duration::from_secs(20);
    while exporter.counters().exported < 1 {
        assert!(Instant::now() < until, "first batch never exported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exporter.submit(span("containerd", "a"));
    exporter.submit(span("cri", "b"));
    exporter.submit(span("containerd", "c"));
    let c = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!((c.submitted, c.exported), (4, 4));

    let text = std::fs::read_to_string(&path).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(mode & 0o777, 0o600);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");

    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first, expected_line());

    // The second batch: one resource per service, in order of first appearance, and it
    // reads back as an OTLP request.
    let second: ExportTraceServiceRequest = serde_json::from_str(lines[1]).unwrap();
    let services: Vec<(String, usize)> = second
        .resource_spans
        .iter()
        .map(|rs| {
            let attrs = &rs.resource.as_ref().unwrap().attributes;
            let name = format!("{:?}", attrs[0].value.as_ref().unwrap().value.as_ref().unwrap());
            (name, rs.scope_spans[0].spans.len())
        })
        .collect();
    assert_eq!(
        services,
        vec![
            (r#"StringValue("containerd")"#.into(), 2),
            (r#"StringValue("cri")"#.into(), 1)
        ]
    );
}

#[tokio::test]
async fn span_file_appends() {
    let path = temp_path("append");
    std::fs::write(&path, "existing\n").unwrap();
    let cfg = ExportConfig {
        file: Some(path.clone()),
        ..ExportConfig::default()
    };
    let (exporter, handle) = Exporter::start(cfg, "node-1".into()).unwrap();
    exporter.submit(span("containerd", "a"));
    handle.shutdown(Duration::from_secs(5)).await;
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(text.starts_with("existing\n{\"resourceSpans\""), "{text}");
    assert_eq!(text.lines().count(), 2);
}

#[tokio::test]
async fn full_queue_drops_are_counted_and_submit_never_waits() {
    let path = temp_path("queue");
    let cfg = ExportConfig {
        file: Some(path.clone()),
        max_queue: 16,
        max_batch: 4,
        ..ExportConfig::default()
    };
    let (exporter, handle) = Exporter::start(cfg, "node-1".into()).unwrap();
    let s = span("containerd", "flood");
    // The test runtime has one thread: the export task cannot run while this loop does.
    for _ in 0..100_000 {
        exporter.submit(s.clone());
    }
    let c = exporter.counters();
    assert_eq!(c.submitted, 100_000);
    assert_eq!(c.queued, 16);
    assert_eq!(c.dropped(DropReason::QueueFull), 100_000 - 16);
    let c = handle.shutdown(Duration::from_secs(5)).await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(c.exported, 16);
    assert_eq!(c.exported + c.dropped_queue_full, c.submitted);
}

#[tokio::test]
async fn dropping_every_exporter_flushes_and_stops() {
    let path = temp_path("drop");
    let cfg = ExportConfig {
        file: Some(path.clone()),
        scheduled_delay: Duration::from_secs(3600),
        ..ExportConfig::default()
    };
    let (exporter, handle) = Exporter::start(cfg, "node-1".into()).unwrap();
    exporter.submit(span("containerd", "a"));
    drop(exporter);
    let c = handle.shutdown(Duration::from_secs(5)).await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!((c.submitted, c.exported), (1, 1));
}

#[test]
fn console_line_is_readable() {
    let line = console::line(&rich());
    assert_eq!(
        line,
        "dockerd POST /containers/{id}/start server 1000.0ms error=\"driver failed\" \
         trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 parent=0102030405060708 \
         http.response.status_code=500 runtime_tap.incomplete=true"
    );
    assert_eq!(
        console::line(&span("containerd", "x")),
        "containerd x server 12.5ms ok trace=4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b span=0f0f0f0f0f0f0f0f"
    );
}

#[test]
fn span_data_keeps_ids_parent_and_scope() {
    let d = sdk::span_data(&rich());
    assert_eq!(d.span_context.trace_id().to_bytes(), rich().trace_id);
    assert_eq!(d.span_context.span_id().to_bytes(), rich().span_id);
    assert!(d.span_context.is_sampled());
    assert_eq!(d.parent_span_id.to_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(d.parent_span_is_remote);
    assert_eq!(d.span_context.trace_state().header(), "vendor=abc");
    assert_eq!(d.instrumentation_scope.name(), SCOPE_NAME);
    let root = sdk::span_data(&span("containerd", "x"));
    assert_eq!(root.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert!(!root.parent_span_is_remote);
}

/// What the OTLP sink sends, decoded with opentelemetry-proto's types, equals what the SDK's
/// conversion of the same records gives (the span file's path): every field, every value
/// kind, several services in one request, and a tracestate the SDK would drop.
#[test]
fn otlp_encoding_equals_the_sdk_conversion() {
    use prost::Message as _;
    let mut odd = span("containerd", "containerd.services.tasks.v1.Tasks/Start");
    odd.parent = Some(ParentRef {
        span_id: [9; 8],
        remote: false,
    });
    odd.trace_state = Some("not a tracestate".to_owned());
    odd.kind = SpanKind::Internal;
    odd.status = SpanStatus::Error(String::new());
    odd.attributes = vec![
        Attr::str("empty", ""),
        Attr::int("negative", -3),
        Attr::int("big", i64::MAX),
        Attr::bool("no", false),
        Attr::list("none", Vec::new()),
        Attr::list("two", vec![String::new(), "b".repeat(300)]),
        Attr::str("long", "x".repeat(20_000)),
    ];
    let spans = vec![rich(), span("containerd", "x"), odd, span("dockerd", "GET /_ping")];
    let extra = vec![("deployment.environment".to_owned(), "test".to_owned())];
    let mut encoder = otlp_encode::Encoder::new("node-1".to_owned(), extra.clone());
    let mut body = Vec::new();
    encoder.encode(&spans, &sdk::group_by_service(&spans), &mut body);
    let got = ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes as OTLP");
    assert_eq!(got, file::request(&spans, "node-1", &extra));
    assert_eq!(got.resource_spans.len(), 2);
    // The encoder reuses its resources: a second batch encodes the same.
    let mut again = Vec::new();
    encoder.encode(&spans, &sdk::group_by_service(&spans), &mut again);
    assert_eq!(again, body);
}
