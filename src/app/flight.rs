//! The flight recorder's wiring: where an intercept's calls end, a call that failed or was
//! slow has its connection's recent bytes dumped (`capture::flight`) and its span names the
//! file; where the tracer releases that span, its trace id goes to the recorder for the
//! file's comments. Neither the observer nor the tracer knows the recorder: the first hands
//! calls to a [`CallSink`], which this wraps, the second calls a hook.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_semantic_conventions::attribute::{HTTP_RESPONSE_STATUS_CODE, RPC_RESPONSE_STATUS_CODE};

use crate::capture::flight::{DumpCall, FlightConfig, FlightRecorder};
use crate::config::Config;
use crate::observe::Observer;
use crate::trace::attr::{Attr, AttrValue, names};
use crate::trace::call::{Call, CallSink, CallStart, Clock, Shape, StreamEvent};
use crate::trace::span::{SpanId, SpanRecord, SpanStatus};
use crate::trace::tracer::Tracer;

/// One flight recorder per intercept that has `flight_recorder`, in config order, each
/// directory created now (an unwritable one fails the start); the tracer is told to pass
/// them their spans' trace ids.
pub fn start(config: &Config, clock: Clock, tracer: &Tracer) -> anyhow::Result<Vec<Option<FlightRecorder>>> {
    let mut recorders = Vec::new();
    for ic in &config.intercepts {
        let Some(bytes) = ic.flight_recorder_bytes() else {
            recorders.push(None);
            continue;
        };
        let dir = ic.flight_recorder_dir();
        let recorder = FlightRecorder::start(
            FlightConfig {
                name: ic.name.clone(),
                dir: dir.clone(),
                bytes,
                files: ic.flight_recorder_files,
                per_minute: ic.flight_recorder_per_minute,
            },
            clock,
        )
        .with_context(|| format!("intercept {}: flight recorder directory {}", ic.name, dir.display()))?;
        tracing::warn!(intercept = %ic.name, dir = %dir.display(), bytes, "flight recorder on: dumps of failed and slow calls' connections are written unredacted");
        recorders.push(Some(recorder));
    }
    let on: Vec<FlightRecorder> = recorders.iter().flatten().cloned().collect();
    if !on.is_empty() {
        tracer.on_submit(Box::new(move |span: &SpanRecord| traced(&on, span)));
    }
    Ok(recorders)
}

/// The observer of an intercept with a flight recorder: the process's, with its sink behind
/// the recorder.
pub fn observer(shared: &Observer, recorder: &FlightRecorder, slow_ms: u64) -> Arc<Observer> {
    Arc::new(Observer {
        sink: Arc::new(FlightSink {
            inner: Arc::clone(&shared.sink),
            recorder: recorder.clone(),
            slow: Duration::from_millis(slow_ms),
        }),
        clock: shared.clock,
        schema: shared.schema.clone(),
        docker_ids: Arc::clone(&shared.docker_ids),
    })
}

/// At exit, after the span flush: write what is still queued.
pub async fn flush(recorders: Vec<Option<FlightRecorder>>) {
    for r in recorders.into_iter().flatten() {
        let name = r.name().to_string();
        let flushed = tokio::task::spawn_blocking(move || (r.flush(Duration::from_secs(5)), r.dumps())).await;
        if let Ok((ok, dumps)) = flushed {
            tracing::info!(intercept = %name, flushed = ok, dumps, "flight recorder written");
        }
    }
}

/// A span that names a recording gives its recorder the trace id.
fn traced(recorders: &[FlightRecorder], span: &SpanRecord) {
    let Some(r) = recorders.iter().find(|r| r.name() == &*span.service) else {
        return;
    };
    if span.attributes.iter().any(|a| a.key == names::RECORDING) {
        r.traced(span.span_id, span.trace_id);
    }
}

/// An intercept's call sink with its flight recorder in front: a failed or slow call is
/// dumped before it goes on, so its span carries the file's name.
pub struct FlightSink {
    pub inner: Arc<dyn CallSink>,
    pub recorder: FlightRecorder,
    /// `sampling.slow_ms`: the calls the sampler always keeps as slow are dumped too.
    pub slow: Duration,
}

impl CallSink for FlightSink {
    fn started(&self, call: &CallStart) {
        self.inner.started(call);
    }

    fn learned(&self, span_id: SpanId, attributes: &[Attr]) {
        self.inner.learned(span_id, attributes);
    }

    fn ended(&self, mut call: Call) {
        if let Some(reason) = trigger(&call, self.slow) {
            let dumped = self.recorder.dump(DumpCall {
                conn: call.conn.id,
                span_id: call.span_id,
                name: call.name.clone(),
                reason,
                start: call.start,
                end: call.end,
            });
            if let Ok(file) = dumped {
                call.attributes.push(Attr::str(names::RECORDING, file));
            }
        }
        self.inner.ended(call);
    }

    fn event(&self, event: StreamEvent) {
        self.inner.event(event);
    }
}

/// Why `call` is worth a dump, if it is: an error (a gRPC status other than OK, an HTTP
/// status of 500 or more, or a span status of Error, as a failed image pull's 200 has), or
/// slowness past `slow`. Not calls cut incomplete (a connection's or the process's end
/// would dump every open call) and not long-lived streams, which are slow by nature.
pub fn trigger(call: &Call, slow: Duration) -> Option<String> {
    if call.incomplete {
        return None;
    }
    let attr = |key: &str| call.attributes.iter().find(|a| a.key == key).map(|a| &a.value);
    match attr(RPC_RESPONSE_STATUS_CODE) {
        Some(AttrValue::Str(code)) if code != "OK" => return Some(format!("error: rpc {code}")),
        _ => {}
    }
    match attr(HTTP_RESPONSE_STATUS_CODE) {
        Some(AttrValue::Int(code)) if *code >= 500 => return Some(format!("error: http {code}")),
        _ => {}
    }
    if matches!(call.status, SpanStatus::Error(_)) {
        return Some("error".into());
    }
    let took = call.end.duration_since(call.start).unwrap_or_default();
    if call.shape == Shape::Unary && took >= slow {
        return Some(format!("slow: {} ms", took.as_millis()));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::trace::call::ConnMeta;

    fn call(attributes: Vec<Attr>, took_ms: u64) -> Call {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Call {
            span_id: [1; 8],
            conn: Arc::new(ConnMeta {
                id: 1,
                service: Arc::from("dockerd"),
                transport: "unix",
                listen: "unix:///tap.sock".into(),
                upstream: "unix:///up.sock".into(),
                client: None,
                server: None,
                capture_payloads: false,
            }),
            name: "x".into(),
            start,
            end: start + Duration::from_millis(took_ms),
            attributes,
            status: SpanStatus::Unset,
            incomplete: false,
            shape: Shape::Unary,
            remote_parent: None,
            own_trace: None,
            events: Vec::new(),
            children: Vec::new(),
        }
    }

    #[test]
    fn errors_and_slow_calls_are_dumped_others_not() {
        let slow = Duration::from_millis(1000);
        let rpc = |code: &str| vec![Attr::str(RPC_RESPONSE_STATUS_CODE, code)];
        let http = |code| vec![Attr::int(HTTP_RESPONSE_STATUS_CODE, code)];
        assert_eq!(trigger(&call(rpc("OK"), 5), slow), None);
        assert_eq!(
            trigger(&call(rpc("NOT_FOUND"), 5), slow).as_deref(),
            Some("error: rpc NOT_FOUND")
        );
        assert_eq!(trigger(&call(http(200), 5), slow), None);
        assert_eq!(trigger(&call(http(404), 5), slow), None);
        assert_eq!(trigger(&call(http(500), 5), slow).as_deref(), Some("error: http 500"));
        let mut pull = call(http(200), 5);
        pull.status = SpanStatus::Error("manifest unknown".into());
        assert_eq!(trigger(&pull, slow).as_deref(), Some("error"));
        assert_eq!(trigger(&call(http(200), 1500), slow).as_deref(), Some("slow: 1500 ms"));
        let mut stream = call(http(200), 60_000);
        stream.shape = Shape::LongLived;
        assert_eq!(trigger(&stream, slow), None);
        let mut cut = call(rpc("UNKNOWN"), 5);
        cut.incomplete = true;
        assert_eq!(trigger(&cut, slow), None);
    }
}
