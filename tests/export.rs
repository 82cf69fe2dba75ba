//! The span export pipeline against a real OTLP receiver (gRPC and HTTP), a collector that is
//! down and one that never answers. No timing assertions: only what arrived and what was counted.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runtime_tap::trace::attr::Attr;
use runtime_tap::trace::export::{ExportConfig, ExportCounters, Exporter, Protocol};
use runtime_tap::trace::span::{
    LinkRecord, ParentRef, SpanEventRecord, SpanKind, SpanRecord, SpanStatus, hex, new_span_id, new_trace_id,
};
use support::otlp::{KIND_INTERNAL, KIND_SERVER, OtlpReceiver, STATUS_ERROR, STATUS_UNSET, Val};

const WAIT: Duration = support::otlp::SPAN_WAIT;

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn call_span(service: &str, name: &str) -> SpanRecord {
    SpanRecord {
        trace_id: new_trace_id(),
        span_id: new_span_id(),
        parent: None,
        trace_state: None,
        name: name.to_owned(),
        kind: SpanKind::Server,
        start: at(1_700_000_000_000_000_000),
        end: at(1_700_000_000_250_000_000),
        attributes: vec![Attr::str("rpc.method", name.to_owned())],
        events: Vec::new(),
        links: Vec::new(),
        status: SpanStatus::Unset,
        service: Arc::from(service),
    }
}

/// A span using every field: parent, trace state, each attribute type, events, links, error.
fn rich_span() -> SpanRecord {
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
        name: "containerd.services.tasks.v1.Tasks/Start".to_owned(),
        kind: SpanKind::Server,
        start: at(1_700_000_000_000_000_123),
        end: at(1_700_000_001_000_000_456),
        attributes: vec![
            Attr::str("rpc.system.name", "grpc"),
            Attr::int("containerd.task.pid", 4242),
            Attr::bool("runtime_tap.incomplete", false),
            Attr::list("container.image.tags", vec!["3.6".to_owned(), "latest".to_owned()]),
        ],
        events: vec![SpanEventRecord {
            name: "response headers".to_owned(),
            time: at(1_700_000_000_500_000_000),
            attributes: vec![Attr::int("runtime_tap.response.bytes", 12)],
        }],
        links: vec![LinkRecord {
            trace_id: [9; 16],
            span_id: [8; 8],
            attributes: vec![Attr::str("runtime_tap.link", "subscription")],
        }],
        status: SpanStatus::Error("task not found".to_owned()),
        service: Arc::from("containerd"),
    }
}

fn config(endpoint: &str, protocol: Protocol) -> ExportConfig {
    let env: HashMap<&str, &str> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            if protocol == Protocol::Grpc {
                "grpc"
            } else {
                "http/protobuf"
            },
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test,k8s.cluster.name=c%201",
        ),
        ("OTEL_BSP_SCHEDULED_DELAY", "50"),
    ]
    .into_iter()
    .collect();
    ExportConfig::from_env_and(ExportConfig::default(), &|k| env.get(k).map(|v| v.to_string())).unwrap()
}

fn balanced(c: &ExportCounters) -> bool {
    c.submitted == c.exported + c.dropped_queue_full + c.dropped_export_failed + c.dropped_shutdown
}

async fn spans_arrive_exactly(receiver: OtlpReceiver, protocol: Protocol) {
    let (exporter, handle) = Exporter::start(config(receiver.endpoint(), protocol), "test-host".to_owned()).unwrap();
    let rich = rich_span();
    let mut root = call_span("cri", "pod start");
    root.kind = SpanKind::Internal;
    exporter.submit(rich.clone());
    exporter.submit(root.clone());

    let spans = receiver.wait_for(|s| s.len() == 2, WAIT).await;
    let got = spans
        .iter()
        .find(|s| s.service == "containerd")
        .expect("containerd span");
    assert_eq!(got.name, "containerd.services.tasks.v1.Tasks/Start");
    assert_eq!(got.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(got.span_id, "00f067aa0ba902b7");
    assert_eq!(got.parent_span_id, "0102030405060708");
    assert_eq!(got.trace_state, "vendor=abc");
    assert_eq!(got.flags & 0x300, 0x300, "parent is remote");
    assert_eq!(got.kind, KIND_SERVER);
    assert_eq!(got.start_ns, 1_700_000_000_000_000_123);
    assert_eq!(got.end_ns, 1_700_000_001_000_000_456);
    assert_eq!(got.attributes["rpc.system.name"], Val::Str("grpc".into()));
    assert_eq!(got.attributes["containerd.task.pid"], Val::Int(4242));
    assert_eq!(got.attributes["runtime_tap.incomplete"], Val::Bool(false));
    assert_eq!(
        got.attributes["container.image.tags"],
        Val::StrList(vec!["3.6".into(), "latest".into()])
    );
    assert_eq!(got.attributes.len(), 4);
    assert_eq!(got.status_code, STATUS_ERROR);
    assert_eq!(got.status_message, "task not found");
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].name, "response headers");
    assert_eq!(got.events[0].time_ns, 1_700_000_000_500_000_000);
    assert_eq!(got.events[0].attributes["runtime_tap.response.bytes"], Val::Int(12));
    assert_eq!(got.links.len(), 1);
    assert_eq!(got.links[0].trace_id, hex(&[9; 16]));
    assert_eq!(got.links[0].span_id, hex(&[8; 8]));
    assert_eq!(
        got.links[0].attributes["runtime_tap.link"],
        Val::Str("subscription".into())
    );
    assert_eq!(got.scope_name, "runtime-tap");
    assert_eq!(got.resource["host.name"], Val::Str("test-host".into()));
    assert_eq!(got.resource["deployment.environment.name"], Val::Str("test".into()));
    assert_eq!(got.resource["k8s.cluster.name"], Val::Str("c 1".into()));

    let root_got = spans.iter().find(|s| s.service == "cri").expect("cri span");
    assert_eq!(root_got.name, "pod start");
    assert_eq!(root_got.trace_id, hex(&root.trace_id));
    assert_eq!(root_got.span_id, hex(&root.span_id));
    assert_eq!(root_got.parent_span_id, "");
    assert_eq!(root_got.kind, KIND_INTERNAL);
    assert_eq!(root_got.status_code, STATUS_UNSET);
    assert_eq!(root_got.resource["host.name"], Val::Str("test-host".into()));

    // One resource per service.
    let rs = receiver.resource_spans();
    assert_eq!(rs.len(), 2);
    let c = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!((c.submitted, c.exported), (2, 2));
    assert!(balanced(&c));
}

#[tokio::test]
async fn grpc_spans_arrive_exactly() {
    spans_arrive_exactly(OtlpReceiver::start().await, Protocol::Grpc).await;
}

#[tokio::test]
async fn http_protobuf_spans_arrive_exactly() {
    spans_arrive_exactly(OtlpReceiver::start_http().await, Protocol::HttpProtobuf).await;
}

#[tokio::test]
async fn shutdown_flushes_the_queue() {
    let receiver = OtlpReceiver::start().await;
    let mut cfg = config(receiver.endpoint(), Protocol::Grpc);
    cfg.scheduled_delay = Duration::from_secs(3600); // only shutdown sends the partial batch
    cfg.max_batch = 64;
    let (exporter, handle) = Exporter::start(cfg, "test-host".to_owned()).unwrap();
    for i in 0..1000 {
        exporter.submit(call_span(if i % 2 == 0 { "containerd" } else { "dockerd" }, "call"));
    }
    let c = handle.shutdown(Duration::from_secs(10)).await;
    assert_eq!(c.submitted, 1000);
    assert_eq!(c.exported, 1000, "{c:?}");
    assert_eq!(receiver.spans().len(), 1000);
    // After shutdown, a submit is a counted drop, not an error.
    exporter.submit(call_span("containerd", "late"));
    let c = exporter.counters();
    assert_eq!(c.dropped_shutdown, 1);
    assert!(balanced(&c));
}

/// Submits `n` spans as fast as possible; returns how many.
fn flood(exporter: &Exporter, n: usize) -> usize {
    let span = call_span("containerd", "flood");
    for _ in 0..n {
        exporter.submit(span.clone());
    }
    n
}

async fn wait_counters(exporter: &Exporter, pred: impl Fn(&ExportCounters) -> bool) -> ExportCounters {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let c = exporter.counters();
        if pred(&c) {
            return c;
        }
        assert!(tokio::time::Instant::now() < until, "counters never matched: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn collector_in_trouble(endpoint: &str) {
    let mut cfg = config(endpoint, Protocol::Grpc);
    cfg.max_queue = 1024;
    cfg.max_batch = 128;
    cfg.export_timeout = Duration::from_millis(300);
    let (exporter, handle) = Exporter::start(cfg, "test-host".to_owned()).unwrap();

    // Never blocks, whatever the collector does; the queue holds at most its capacity.
    let n = flood(&exporter, 100_000) as u64;
    let c = exporter.counters();
    assert_eq!(c.submitted, n);
    assert!(c.queued <= 1024, "{c:?}");
    assert!(c.dropped_queue_full >= n - 1024 - 128, "{c:?}");

    let c = wait_counters(&exporter, |c| c.dropped_export_failed > 0).await;
    assert_eq!(c.exported, 0);
    assert!(c.queued <= 1024);

    flood(&exporter, 100_000);
    let c = handle.shutdown(Duration::from_millis(500)).await;
    assert_eq!(c.submitted, 200_000);
    assert_eq!(c.exported, 0);
    assert!(balanced(&c), "{c:?}");
}

#[tokio::test]
async fn collector_down_counts_export_failed() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    collector_in_trouble(&format!("http://{closed}")).await;
}

#[tokio::test]
async fn blackhole_collector_counts_export_failed() {
    let receiver = OtlpReceiver::start_blackhole().await;
    collector_in_trouble(receiver.endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_collector_with_concurrent_export_task() {
    let receiver = OtlpReceiver::start_blackhole().await;
    collector_in_trouble(receiver.endpoint()).await;
}

#[tokio::test]
async fn shutdown_deadline_cuts_a_hung_export() {
    let receiver = OtlpReceiver::start_blackhole().await;
    let mut cfg = config(receiver.endpoint(), Protocol::Grpc);
    cfg.export_timeout = Duration::from_secs(3600); // the shutdown deadline must win
    let (exporter, handle) = Exporter::start(cfg, "test-host".to_owned()).unwrap();
    flood(&exporter, 10);
    // Wait until the batch is out of the queue and hanging on the collector.
    wait_counters(&exporter, |c| c.queued == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    flood(&exporter, 5);
    let c = handle.shutdown(Duration::from_millis(300)).await;
    assert_eq!(c.submitted, 15);
    assert_eq!(c.dropped_shutdown, 15, "{c:?}");
    assert!(balanced(&c), "{c:?}");
}
