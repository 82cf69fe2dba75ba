//! The admin endpoint: /healthz (the process is up), /readyz (every listener is bound and
//! accepting) and /metrics (Prometheus text). Served by hyper on its own listener, loopback by
//! default, from start to exit: through the grace period /readyz answers 503 (draining) while
//! /metrics still shows the connections that finish.
//!
//! /metrics is composed here: each component renders its own families ([`FmtMetrics`]), and
//! [`Registry::render`] lists the components in the order the endpoint shows them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{FmtMetrics, InterceptMetrics, InterceptPart, Intercepts};
use crate::relay::budget::DecodeBudget;
use crate::trace::tracer::Tracer;

/// Every metric source of the process, for the admin endpoint.
#[derive(Default, Clone)]
pub struct Registry {
    pub intercepts: Vec<Arc<InterceptMetrics>>,
    /// Call and span accounting, when decoding runs.
    pub tracer: Option<Arc<Tracer>>,
    /// The process-wide decode memory budget.
    pub decode_budget: Option<Arc<DecodeBudget>>,
    /// Raw capture and flight recorder counts, for the intercepts that have them.
    pub raw: Option<crate::capture::RawMetrics>,
}

impl Registry {
    /// Render in the Prometheus text exposition format (version 0.0.4). The order is part of
    /// the output dashboards and tests have seen; components that are absent render nothing.
    pub fn render(&self) -> String {
        let part = |part| Intercepts {
            all: &self.intercepts,
            part,
        };
        let (connections, observers, listeners) = (
            part(InterceptPart::Connections),
            part(InterceptPart::Observers),
            part(InterceptPart::Listeners),
        );
        let components: [&dyn FmtMetrics; 6] = [
            &connections,
            &self.decode_budget,
            &observers,
            &self.tracer,
            &listeners,
            &self.raw,
        ];
        let mut out = String::with_capacity(4096);
        for c in components {
            c.fmt_metrics(&mut out);
        }
        out
    }

    /// Ready when every listener is bound.
    pub fn ready(&self) -> bool {
        self.intercepts.iter().all(|m| m.listening.load(Ordering::Relaxed))
    }
}

/// Bind the admin listener. Bound before the intercepts so a port clash fails the start
/// before any socket file is created.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve admin requests until `stop` is cancelled (at exit, after the grace period).
pub async fn serve(listener: TcpListener, registry: Registry, stop: CancellationToken) {
    let mut errors = crate::relay::accept::AcceptErrors::new();
    let listen = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => {
                    errors.accepted("admin", listen.as_str());
                    a
                }
                Err(e) => {
                    errors.failed("admin", listen.as_str(), &e);
                    errors.backoff().await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(route(&req, &registry)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if registry.ready() => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: a listener is not accepting (starting, or draining after a stop signal)\n".into(),
        ),
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", registry.render()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::metrics::{InterceptMetrics, Protocol};
    use crate::relay::budget::DecodeBudget;
    use crate::trace::attr::Attr;
    use crate::trace::call::{Call, CallSink, CallStart, ConnMeta, RemoteParent, Shape, StreamEvent};
    use crate::trace::export::{ExportConfig, Exporter};
    use crate::trace::remote::CorrelationConfig;
    use crate::trace::sample::{Rule, Sampler, SamplingConfig};
    use crate::trace::span::{SpanStatus, new_span_id};
    use crate::trace::tracer::Tracer;
    use crate::wire::Direction;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
    }

    fn conn(service: &str, id: u64) -> Arc<ConnMeta> {
        Arc::new(ConnMeta {
            id,
            service: Arc::from(service),
            transport: "unix",
            listen: String::new(),
            upstream: String::new(),
            client: None,
            server: None,
            capture_payloads: false,
        })
    }

    /// One call through the tracer, start to end.
    fn call(
        tracer: &Tracer,
        conn: &Arc<ConnMeta>,
        name: &str,
        ms: (u64, u64),
        end: Vec<Attr>,
        remote: Option<RemoteParent>,
        incomplete: bool,
    ) {
        let span_id = new_span_id();
        tracer.started(&CallStart {
            span_id,
            conn: Arc::clone(conn),
            name: name.to_owned(),
            start: at(ms.0),
            shape: Shape::Unary,
            remote_parent: remote.clone(),
            own_trace: None,
            attributes: Vec::new(),
        });
        tracer.ended(Call {
            span_id,
            conn: Arc::clone(conn),
            name: name.to_owned(),
            start: at(ms.0),
            end: at(ms.1),
            attributes: end,
            status: SpanStatus::Unset,
            incomplete,
            shape: Shape::Unary,
            remote_parent: remote,
            own_trace: None,
            events: Vec::new(),
            children: Vec::new(),
        });
    }

    fn intercepts() -> Vec<Arc<InterceptMetrics>> {
        let containerd = InterceptMetrics::new("containerd");
        containerd.accepted.add(7);
        containerd.active.inc();
        containerd.active.inc();
        containerd.accept_errors.inc();
        containerd.upstream_connect_failures.add(2);
        containerd.relay_errors.add(3);
        containerd.connections_refused.add(4);
        containerd.add_bytes(Direction::ClientToServer, 1234);
        containerd.add_bytes(Direction::ServerToClient, 56000);
        containerd.add_spliced(Direction::ServerToClient, 789);
        containerd.splice_refused.inc();
        containerd.tap_give_ups.queue_full.add(5);
        containerd.tap_give_ups.decode_memory.add(6);
        containerd.sniffed(Protocol::Http2).add(7);
        containerd.sniffed(Protocol::Opaque).inc();
        containerd.payload_sheds.add(8);
        containerd.decoder_give_up("frame_too_large");
        containerd.decoder_give_up("frame_too_large");
        containerd.decoder_give_up("bad_preface");
        containerd.payloads_skipped("too_large", 9);
        containerd.listening.store(true, std::sync::atomic::Ordering::Relaxed);
        let dockerd = InterceptMetrics::new("dockerd");
        dockerd.accepted.add(11);
        dockerd.add_bytes(Direction::ClientToServer, 100);
        dockerd.sniffed(Protocol::Http1).add(11);
        dockerd.propagation_injected.add(12);
        dockerd.propagation_give_ups.add(13);
        containerd.goaways_sent.add(2);
        dockerd.payloads_skipped("event_shed", 14);
        dockerd.payloads_skipped("body_not_decoded", 15);
        vec![containerd, dockerd]
    }

    fn tracer() -> Arc<Tracer> {
        let export = ExportConfig {
            max_queue: 4,
            // A sink is required; the export task never runs, so nothing is written to it.
            file: Some(std::env::temp_dir().join(format!("runtime-tap-metrics-{}.json", std::process::id()))),
            ..ExportConfig::default()
        };
        let (exporter, _handle) = Exporter::start(export, "host".into()).unwrap();
        let sampling = SamplingConfig {
            rules: vec![Rule {
                name: "GET /_ping".into(),
                keep: Some(false),
                ratio: None,
                per_second: None,
            }],
            ..SamplingConfig::default()
        };
        let tracer = Tracer::new(exporter, Sampler::new(&sampling), &CorrelationConfig::default());
        let dockerd = conn("dockerd", 1);
        let containerd = conn("containerd", 2);
        let ok = || vec![Attr::int("http.response.status_code", 200)];
        call(&tracer, &dockerd, "GET /containers/json", (0, 12), ok(), None, false);
        call(&tracer, &dockerd, "GET /_ping", (20, 21), ok(), None, false);
        let unsampled = RemoteParent {
            trace_id: [7; 16],
            span_id: [8; 8],
            sampled: false,
            trace_state: None,
        };
        call(
            &tracer,
            &dockerd,
            "GET /version",
            (30, 33),
            ok(),
            Some(unsampled),
            false,
        );
        let status = vec![Attr::str("rpc.response.status_code", "NOT_FOUND")];
        call(
            &tracer,
            &containerd,
            "/containerd.services.tasks.v1.Tasks/Get",
            (40, 41),
            status,
            None,
            false,
        );
        call(
            &tracer,
            &containerd,
            "/containerd.services.tasks.v1.Tasks/Wait",
            (50, 2050),
            Vec::new(),
            None,
            true,
        );
        tracer.event(StreamEvent {
            subscription: new_span_id(),
            conn: Arc::clone(&dockerd),
            name: "event container start".into(),
            time: at(60),
            attributes: Vec::new(),
        });
        tracer.flush();
        for _ in 0..3 {
            call(
                &tracer,
                &containerd,
                "/containerd.services.version.v1.Version/Version",
                (70, 71),
                Vec::new(),
                None,
                false,
            );
        }
        tracer.flush();
        tracer
    }

    /// /metrics for a known state, byte for byte: the families' names, help, order and
    /// values are an interface (dashboards, alerts, the integration tests).
    #[tokio::test(flavor = "current_thread")]
    async fn metrics_text_for_a_known_state() {
        // No await below: the export task never runs, so the queue holds what was submitted.
        let budget = DecodeBudget::new(1 << 20);
        assert!(budget.try_reserve(4096));
        budget.release(1024);
        let registry = Registry {
            intercepts: intercepts(),
            tracer: Some(tracer()),
            decode_budget: Some(budget),
            raw: Some(raw()),
        };
        let text = registry.render();
        assert_eq!(text, EXPECTED);
    }

    /// A capture on containerd and a flight recorder on dockerd, with one dump skipped.
    fn raw() -> crate::capture::RawMetrics {
        use crate::capture::flight::{DumpCall, FlightConfig, FlightRecorder, MIN_BYTES};
        use crate::capture::{Capture, CaptureConfig};
        let dir = std::env::temp_dir().join(format!("runtime-tap-admin-raw-{}", std::process::id()));
        let clock = crate::trace::call::Clock::new();
        let capture = Capture::start(
            CaptureConfig {
                name: "containerd".into(),
                dir: dir.clone(),
                max_bytes: 1 << 20,
                files: 1,
            },
            clock,
        )
        .unwrap();
        let recorder = FlightRecorder::start(
            FlightConfig {
                name: "dockerd".into(),
                dir,
                bytes: MIN_BYTES,
                files: 1,
                per_minute: 1,
            },
            clock,
        )
        .unwrap();
        let now = std::time::SystemTime::now();
        let nothing = recorder.dump(DumpCall {
            conn: 1,
            span_id: [1; 8],
            name: "GET /x".into(),
            reason: "error".into(),
            start: now,
            end: now,
        });
        assert!(nothing.is_err());
        crate::capture::RawMetrics {
            captures: vec![capture],
            recorders: vec![recorder],
        }
    }

    const EXPECTED: &str = r#"# HELP runtime_tap_connections_accepted_total Client connections accepted.
# TYPE runtime_tap_connections_accepted_total counter
runtime_tap_connections_accepted_total{intercept="containerd"} 7
runtime_tap_connections_accepted_total{intercept="dockerd"} 11
# HELP runtime_tap_connections_active Client connections open now.
# TYPE runtime_tap_connections_active gauge
runtime_tap_connections_active{intercept="containerd"} 2
runtime_tap_connections_active{intercept="dockerd"} 0
# HELP runtime_tap_accept_errors_total Failed accept calls (for example out of file descriptors).
# TYPE runtime_tap_accept_errors_total counter
runtime_tap_accept_errors_total{intercept="containerd"} 1
runtime_tap_accept_errors_total{intercept="dockerd"} 0
# HELP runtime_tap_upstream_connect_failures_total Client connections closed because the upstream could not be reached.
# TYPE runtime_tap_upstream_connect_failures_total counter
runtime_tap_upstream_connect_failures_total{intercept="containerd"} 2
runtime_tap_upstream_connect_failures_total{intercept="dockerd"} 0
# HELP runtime_tap_relay_errors_total Connections ended by a read or write error on either side.
# TYPE runtime_tap_relay_errors_total counter
runtime_tap_relay_errors_total{intercept="containerd"} 3
runtime_tap_relay_errors_total{intercept="dockerd"} 0
# HELP runtime_tap_connections_refused_total Client connections closed at once without relaying, by reason (limit = max_connections open).
# TYPE runtime_tap_connections_refused_total counter
runtime_tap_connections_refused_total{intercept="containerd",reason="limit"} 4
runtime_tap_connections_refused_total{intercept="dockerd",reason="limit"} 0
# HELP runtime_tap_bytes_total Bytes relayed, by direction (c2s = client to upstream).
# TYPE runtime_tap_bytes_total counter
runtime_tap_bytes_total{intercept="containerd",direction="c2s"} 1234
runtime_tap_bytes_total{intercept="containerd",direction="s2c"} 56789
runtime_tap_bytes_total{intercept="dockerd",direction="c2s"} 100
runtime_tap_bytes_total{intercept="dockerd",direction="s2c"} 0
# HELP runtime_tap_spliced_bytes_total Of the bytes relayed, those moved with splice(2) on directions nothing decodes, by direction.
# TYPE runtime_tap_spliced_bytes_total counter
runtime_tap_spliced_bytes_total{intercept="containerd",direction="c2s"} 0
runtime_tap_spliced_bytes_total{intercept="containerd",direction="s2c"} 789
runtime_tap_spliced_bytes_total{intercept="dockerd",direction="c2s"} 0
runtime_tap_spliced_bytes_total{intercept="dockerd",direction="s2c"} 0
# HELP runtime_tap_splice_refused_total Directions that would have spliced but the kernel refused splice(2); they use the copy loop.
# TYPE runtime_tap_splice_refused_total counter
runtime_tap_splice_refused_total{intercept="containerd"} 1
runtime_tap_splice_refused_total{intercept="dockerd"} 0
# HELP runtime_tap_tap_give_ups_total Connections whose decoding was given up while bytes kept flowing, by reason.
# TYPE runtime_tap_tap_give_ups_total counter
runtime_tap_tap_give_ups_total{intercept="containerd",reason="queue_full"} 5
runtime_tap_tap_give_ups_total{intercept="containerd",reason="decode_memory"} 6
runtime_tap_tap_give_ups_total{intercept="dockerd",reason="queue_full"} 0
runtime_tap_tap_give_ups_total{intercept="dockerd",reason="decode_memory"} 0
# HELP runtime_tap_decode_memory_bytes Decode state buffered now, all connections: tap queues plus decoder buffers.
# TYPE runtime_tap_decode_memory_bytes gauge
runtime_tap_decode_memory_bytes 3072
# HELP runtime_tap_decode_memory_peak_bytes The most decode state ever buffered at once.
# TYPE runtime_tap_decode_memory_peak_bytes gauge
runtime_tap_decode_memory_peak_bytes 4096
# HELP runtime_tap_decode_memory_limit_bytes relay.decode_memory_limit: past 75% payloads are shed, at it connections give up decoding.
# TYPE runtime_tap_decode_memory_limit_bytes gauge
runtime_tap_decode_memory_limit_bytes 1048576
# HELP runtime_tap_protocols_sniffed_total Connections by the protocol seen in their first client bytes.
# TYPE runtime_tap_protocols_sniffed_total counter
runtime_tap_protocols_sniffed_total{intercept="containerd",protocol="http2"} 7
runtime_tap_protocols_sniffed_total{intercept="containerd",protocol="http1"} 0
runtime_tap_protocols_sniffed_total{intercept="containerd",protocol="opaque"} 1
runtime_tap_protocols_sniffed_total{intercept="dockerd",protocol="http2"} 0
runtime_tap_protocols_sniffed_total{intercept="dockerd",protocol="http1"} 11
runtime_tap_protocols_sniffed_total{intercept="dockerd",protocol="opaque"} 0
# HELP runtime_tap_payload_sheds_total Times decoding of payloads was paused on a connection to catch up with the relay.
# TYPE runtime_tap_payload_sheds_total counter
runtime_tap_payload_sheds_total{intercept="containerd"} 8
runtime_tap_payload_sheds_total{intercept="dockerd"} 0
# HELP runtime_tap_propagation_injected_total Requests forwarded with a traceparent added (propagate_context on).
# TYPE runtime_tap_propagation_injected_total counter
runtime_tap_propagation_injected_total{intercept="containerd"} 0
runtime_tap_propagation_injected_total{intercept="dockerd"} 12
# HELP runtime_tap_propagation_give_ups_total Connections whose propagation rewriter could not follow them and stopped rewriting (bytes forwarded unchanged).
# TYPE runtime_tap_propagation_give_ups_total counter
runtime_tap_propagation_give_ups_total{intercept="containerd"} 0
runtime_tap_propagation_give_ups_total{intercept="dockerd"} 13
# HELP runtime_tap_goaways_sent_total GOAWAY frames runtime-tap sent to HTTP/2 clients while draining at shutdown (two per drained connection).
# TYPE runtime_tap_goaways_sent_total counter
runtime_tap_goaways_sent_total{intercept="containerd"} 2
runtime_tap_goaways_sent_total{intercept="dockerd"} 0
# HELP runtime_tap_decoder_give_ups_total Connections whose decoder gave up (bytes still relayed), by reason.
# TYPE runtime_tap_decoder_give_ups_total counter
runtime_tap_decoder_give_ups_total{intercept="containerd",reason="bad_preface"} 1
runtime_tap_decoder_give_ups_total{intercept="containerd",reason="frame_too_large"} 2
# HELP runtime_tap_payloads_skipped_total Payloads a rule or capture wanted but that were not decoded (too large, not decompressible, cut by a reset or close: truncated...), by reason; their calls are still spans. event_shed: a delivered event left undecoded by load shedding, which therefore has no event span.
# TYPE runtime_tap_payloads_skipped_total counter
runtime_tap_payloads_skipped_total{intercept="containerd",reason="too_large"} 9
runtime_tap_payloads_skipped_total{intercept="dockerd",reason="body_not_decoded"} 15
runtime_tap_payloads_skipped_total{intercept="dockerd",reason="event_shed"} 14
# HELP runtime_tap_calls_total Calls observed to their end (each is one exported span or one counted drop).
# TYPE runtime_tap_calls_total counter
runtime_tap_calls_total 8
# HELP runtime_tap_calls_incomplete_total Calls that ended with their connection or decoder, before their response ended.
# TYPE runtime_tap_calls_incomplete_total counter
runtime_tap_calls_incomplete_total 1
# HELP runtime_tap_event_spans_total Event spans made from event streams.
# TYPE runtime_tap_event_spans_total counter
runtime_tap_event_spans_total 1
# HELP runtime_tap_pod_spans_total Synthesized pod start root spans (no call of their own).
# TYPE runtime_tap_pod_spans_total counter
runtime_tap_pod_spans_total 0
# HELP runtime_tap_child_spans_total Spans synthesized under an exported call: per-layer spans of image pulls (no call of their own).
# TYPE runtime_tap_child_spans_total counter
runtime_tap_child_spans_total 0
# HELP runtime_tap_client_spans_total CLIENT spans made above calls from clients behind no other intercept ([correlation] client_spans; no call of their own).
# TYPE runtime_tap_client_spans_total counter
runtime_tap_client_spans_total 0
# HELP runtime_tap_spans_submitted_total Spans handed to the export queue.
# TYPE runtime_tap_spans_submitted_total counter
runtime_tap_spans_submitted_total 7
# HELP runtime_tap_spans_exported_total Spans every configured sink accepted.
# TYPE runtime_tap_spans_exported_total counter
runtime_tap_spans_exported_total 0
# HELP runtime_tap_spans_dropped_total Spans or calls dropped, by reason.
# TYPE runtime_tap_spans_dropped_total counter
runtime_tap_spans_dropped_total{reason="queue_full"} 3
runtime_tap_spans_dropped_total{reason="export_failed"} 0
runtime_tap_spans_dropped_total{reason="shutdown"} 0
runtime_tap_spans_dropped_total{reason="sampled_out"} 1
runtime_tap_spans_dropped_total{reason="not_sampled"} 1
# HELP runtime_tap_correlations_total Calls by how their parent was decided (runtime_tap.link).
# TYPE runtime_tap_correlations_total counter
runtime_tap_correlations_total{link="entity"} 0
runtime_tap_correlations_total{link="stream"} 0
runtime_tap_correlations_total{link="temporal"} 0
runtime_tap_correlations_total{link="outlived"} 0
runtime_tap_correlations_total{link="ambiguous"} 0
runtime_tap_correlations_total{link="root"} 7
runtime_tap_correlations_total{link="late"} 0
runtime_tap_correlations_total{link="evicted"} 0
# HELP runtime_tap_remote_parents_total Calls that carried a client's traceparent, by what became of it (config correlation.remote_parent).
# TYPE runtime_tap_remote_parents_total counter
runtime_tap_remote_parents_total{outcome="followed"} 1
runtime_tap_remote_parents_total{outcome="confirmed"} 0
runtime_tap_remote_parents_total{outcome="replaced"} 0
runtime_tap_remote_parents_total{outcome="linked"} 0
# HELP runtime_tap_call_duration_seconds Duration of calls through runtime-tap, from the first request byte to the last response byte.
# TYPE runtime_tap_call_duration_seconds histogram
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.0005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.001"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.0025"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.005"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.01"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.025"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.05"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.25"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="0.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="2.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="10"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="30"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND",le="+Inf"} 1
runtime_tap_call_duration_seconds_sum{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND"} 0.001
runtime_tap_call_duration_seconds_count{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Get",status="NOT_FOUND"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.0005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.001"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.0025"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.01"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.025"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.05"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.1"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.25"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="0.5"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="1"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="2.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="10"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="30"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete",le="+Inf"} 1
runtime_tap_call_duration_seconds_sum{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete"} 2
runtime_tap_call_duration_seconds_count{intercept="containerd",method="/containerd.services.tasks.v1.Tasks/Wait",status="incomplete"} 1
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.0005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.001"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.0025"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.005"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.01"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.025"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.05"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.1"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.25"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="0.5"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="1"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="2.5"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="5"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="10"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="30"} 3
runtime_tap_call_duration_seconds_bucket{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset",le="+Inf"} 3
runtime_tap_call_duration_seconds_sum{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset"} 0.003
runtime_tap_call_duration_seconds_count{intercept="containerd",method="/containerd.services.version.v1.Version/Version",status="unset"} 3
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.0005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.001"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.0025"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.005"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.01"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.025"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.05"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.25"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="0.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="2.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="10"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="30"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /_ping",status="200",le="+Inf"} 1
runtime_tap_call_duration_seconds_sum{intercept="dockerd",method="GET /_ping",status="200"} 0.001
runtime_tap_call_duration_seconds_count{intercept="dockerd",method="GET /_ping",status="200"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.0005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.001"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.0025"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.01"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.025"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.05"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.25"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="0.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="2.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="10"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="30"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /containers/json",status="200",le="+Inf"} 1
runtime_tap_call_duration_seconds_sum{intercept="dockerd",method="GET /containers/json",status="200"} 0.012
runtime_tap_call_duration_seconds_count{intercept="dockerd",method="GET /containers/json",status="200"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.0005"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.001"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.0025"} 0
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.005"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.01"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.025"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.05"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.25"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="0.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="1"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="2.5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="5"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="10"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="30"} 1
runtime_tap_call_duration_seconds_bucket{intercept="dockerd",method="GET /version",status="200",le="+Inf"} 1
runtime_tap_call_duration_seconds_sum{intercept="dockerd",method="GET /version",status="200"} 0.003
runtime_tap_call_duration_seconds_count{intercept="dockerd",method="GET /version",status="200"} 1
# HELP runtime_tap_export_queue_spans Spans waiting in the export queue.
# TYPE runtime_tap_export_queue_spans gauge
runtime_tap_export_queue_spans 4
# HELP runtime_tap_pod_start_duration_seconds Pod starts (synthesized pod start roots) by phase: each phase's wall time, counted once where calls overlap; kubelet = no call of the pod in flight; total = the root.
# TYPE runtime_tap_pod_start_duration_seconds histogram
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="sandbox",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="sandbox"} 0
runtime_tap_pod_start_duration_seconds_count{phase="sandbox"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_pull",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="image_pull"} 0
runtime_tap_pod_start_duration_seconds_count{phase="image_pull"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="image_check",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="image_check"} 0
runtime_tap_pod_start_duration_seconds_count{phase="image_check"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="create",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="create"} 0
runtime_tap_pod_start_duration_seconds_count{phase="create"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="start",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="start"} 0
runtime_tap_pod_start_duration_seconds_count{phase="start"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="kubelet",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="kubelet"} 0
runtime_tap_pod_start_duration_seconds_count{phase="kubelet"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.0005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.001"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.0025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.005"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.01"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.025"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.05"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.25"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="0.5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="1"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="2"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="3"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="4"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="5"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="6"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="8"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="10"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="20"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="30"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="45"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="60"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="120"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="180"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="240"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="300"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="360"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="480"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="900"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="1200"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="1800"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="2700"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="3600"} 0
runtime_tap_pod_start_duration_seconds_bucket{phase="total",le="+Inf"} 0
runtime_tap_pod_start_duration_seconds_sum{phase="total"} 0
runtime_tap_pod_start_duration_seconds_count{phase="total"} 0
# HELP runtime_tap_pod_start_sli_duration_seconds Pod startup SLI as the Kubernetes SLO defines it: pod start minus image pulls (buckets of kubelet_pod_start_sli_duration_seconds).
# TYPE runtime_tap_pod_start_sli_duration_seconds histogram
runtime_tap_pod_start_sli_duration_seconds_bucket{le="0.5"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="1"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="2"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="3"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="4"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="5"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="6"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="8"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="10"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="20"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="30"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="45"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="60"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="120"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="180"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="240"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="300"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="360"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="480"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="600"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="900"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="1200"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="1800"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="2700"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="3600"} 0
runtime_tap_pod_start_sli_duration_seconds_bucket{le="+Inf"} 0
runtime_tap_pod_start_sli_duration_seconds_sum 0
runtime_tap_pod_start_sli_duration_seconds_count 0
# HELP runtime_tap_correlator_pending_calls Ended calls not exported yet: deciding their parent or held for its trace (as of the last tick).
# TYPE runtime_tap_correlator_pending_calls gauge
runtime_tap_correlator_pending_calls 0
# HELP runtime_tap_listener_up 1 when the intercept's listener is bound and accepting.
# TYPE runtime_tap_listener_up gauge
runtime_tap_listener_up{intercept="containerd"} 1
runtime_tap_listener_up{intercept="dockerd"} 0
# HELP runtime_tap_capture_segments_total Segments written to capture files (capture_dir).
# TYPE runtime_tap_capture_segments_total counter
runtime_tap_capture_segments_total{intercept="containerd"} 0
# HELP runtime_tap_capture_dropped_segments_total Segments left out of capture files: the writer's queue was full or writing failed (the file shows a gap).
# TYPE runtime_tap_capture_dropped_segments_total counter
runtime_tap_capture_dropped_segments_total{intercept="containerd"} 0
# HELP runtime_tap_capture_dropped_bytes_total Payload bytes in the segments left out of capture files.
# TYPE runtime_tap_capture_dropped_bytes_total counter
runtime_tap_capture_dropped_bytes_total{intercept="containerd"} 0
# HELP runtime_tap_flight_recorder_bytes Bytes the flight recorder's ring holds now (flight_recorder bounds it).
# TYPE runtime_tap_flight_recorder_bytes gauge
runtime_tap_flight_recorder_bytes{intercept="dockerd"} 0
# HELP runtime_tap_flight_recorder_dumps_total Flight recorder dumps written: a connection's recent bytes, for a call that failed or was slow.
# TYPE runtime_tap_flight_recorder_dumps_total counter
runtime_tap_flight_recorder_dumps_total{intercept="dockerd"} 0
# HELP runtime_tap_flight_recorder_dumps_skipped_total Flight recorder dumps not written, by reason (rate_limited: past flight_recorder_per_minute).
# TYPE runtime_tap_flight_recorder_dumps_skipped_total counter
runtime_tap_flight_recorder_dumps_skipped_total{intercept="dockerd",reason="rate_limited"} 0
runtime_tap_flight_recorder_dumps_skipped_total{intercept="dockerd",reason="queue_full"} 0
runtime_tap_flight_recorder_dumps_skipped_total{intercept="dockerd",reason="no_bytes"} 1
runtime_tap_flight_recorder_dumps_skipped_total{intercept="dockerd",reason="write_failed"} 0
"#;
}
