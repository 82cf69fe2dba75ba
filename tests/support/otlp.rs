//! A test OTLP receiver built from the official OTLP protos: OTLP/gRPC (tonic, the generated
//! `TraceService`) or OTLP/HTTP protobuf (hyper 1, `POST /v1/traces`) on 127.0.0.1:0, keeping
//! every `ResourceSpans` it gets; and a blackhole that accepts TCP and never answers, to play a
//! hung collector.
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The longest any test waits for spans: the correlator may hold a call 10 s for its parent's
/// trace and 2 s for late ids, and a loaded CI machine adds export batching on top.
pub const SPAN_WAIT: Duration = Duration::from_secs(30);

/// An attribute value as received.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    StrList(Vec<String>),
    Other(String),
}

/// A received event.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedEvent {
    pub name: String,
    pub time_ns: u64,
    pub attributes: BTreeMap<String, Val>,
}

/// A received link.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedLink {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: BTreeMap<String, Val>,
}

/// One received span, flattened with its resource, ids as lowercase hex.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    pub resource: BTreeMap<String, Val>,
    pub scope_name: String,
    pub scope_version: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u32,
    /// OTLP `SpanKind` number: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: BTreeMap<String, Val>,
    /// OTLP `StatusCode` number: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub events: Vec<ReceivedEvent>,
    pub links: Vec<ReceivedLink>,
}

/// OTLP span kind numbers.
pub const KIND_INTERNAL: i32 = 1;
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
/// OTLP status code numbers.
pub const STATUS_UNSET: i32 = 0;
pub const STATUS_ERROR: i32 = 2;

type Store = Arc<Mutex<Vec<ResourceSpans>>>;
/// Spans received per (service, span name).
type Counts = Arc<Mutex<BTreeMap<(String, String), u64>>>;

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    endpoint: String,
    store: Store,
    counts: Counts,
    requests: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Default)]
struct Collect {
    store: Store,
    counts: Counts,
    requests: Arc<Mutex<usize>>,
    /// Count spans only, keep none (long runs).
    count_only: bool,
    /// How long each export waits before it is answered (a slow collector).
    delay: Duration,
}

impl Collect {
    fn take(&self, req: ExportTraceServiceRequest) {
        *self.requests.lock().unwrap() += 1;
        {
            let mut counts = self.counts.lock().unwrap();
            for r in &req.resource_spans {
                let resource = attr_map(r.resource.as_ref().map_or(&[][..], |r| &r.attributes));
                let service = match resource.get("service.name") {
                    Some(Val::Str(s)) => s.clone(),
                    _ => String::new(),
                };
                for s in r.scope_spans.iter().flat_map(|ss| &ss.spans) {
                    *counts.entry((service.clone(), s.name.clone())).or_default() += 1;
                }
            }
        }
        if !self.count_only {
            self.store.lock().unwrap().extend(req.resource_spans);
        }
    }
}

#[tonic::async_trait]
impl TraceService for Collect {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    (listener, endpoint)
}

impl OtlpReceiver {
    /// An OTLP/gRPC receiver; [`endpoint`](Self::endpoint) is `http://127.0.0.1:PORT`.
    pub async fn start() -> OtlpReceiver {
        OtlpReceiver::start_grpc(Collect::default()).await
    }

    /// An OTLP/gRPC receiver that answers each export after `delay`: a slow collector.
    pub async fn start_slow(delay: Duration) -> OtlpReceiver {
        OtlpReceiver::start_grpc(Collect {
            delay,
            ..Collect::default()
        })
        .await
    }

    /// An OTLP/gRPC receiver that counts spans per service and name and keeps none, so that
    /// its memory stays flat however long it runs; [`spans`](Self::spans) is always empty.
    pub async fn start_counting() -> OtlpReceiver {
        OtlpReceiver::start_grpc(Collect {
            count_only: true,
            ..Collect::default()
        })
        .await
    }

    async fn start_grpc(collect: Collect) -> OtlpReceiver {
        let (listener, endpoint) = listen().await;
        let svc = TraceServiceServer::new(collect.clone());
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        OtlpReceiver {
            endpoint,
            store: collect.store,
            counts: collect.counts,
            requests: collect.requests,
            task,
        }
    }

    /// An OTLP/HTTP protobuf receiver answering `POST /v1/traces`; [`endpoint`](Self::endpoint)
    /// is the base `http://127.0.0.1:PORT` (exporters append `/v1/traces`).
    pub async fn start_http() -> OtlpReceiver {
        let (listener, endpoint) = listen().await;
        let collect = Collect::default();
        let c = collect.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| http_export(c.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OtlpReceiver {
            endpoint,
            store: collect.store,
            counts: collect.counts,
            requests: collect.requests,
            task,
        }
    }

    /// A collector that accepts connections and never answers (nor reads).
    pub async fn start_blackhole() -> OtlpReceiver {
        let (listener, endpoint) = listen().await;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        OtlpReceiver {
            endpoint,
            store: Store::default(),
            counts: Counts::default(),
            requests: Default::default(),
            task,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// Spans received so far per (service, span name), kept or not.
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.counts.lock().unwrap().clone()
    }

    /// Spans received so far, kept or not.
    pub fn span_count(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// Every `ResourceSpans` received so far, as received.
    pub fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.store.lock().unwrap().clone()
    }

    /// Every span received so far, flattened.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        flatten(&self.resource_spans())
    }

    /// Blocks until the spans received hold `what` (`pred`), at most [`SPAN_WAIT`]; returns
    /// them all, or panics naming what arrived. The one wait for spans of every test binary.
    pub fn wait_spans(&self, what: &str, pred: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let start = std::time::Instant::now();
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if start.elapsed() > SPAN_WAIT {
                let names: Vec<_> = spans.iter().map(|s| format!("{}:{}", s.service, s.name)).collect();
                panic!("no spans for {what} after {SPAN_WAIT:?}; got {names:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `pred` holds for the spans received; panics with what arrived on timeout.
    pub async fn wait_for(&self, pred: impl Fn(&[ReceivedSpan]) -> bool, timeout: Duration) -> Vec<ReceivedSpan> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "receiver: condition not met within {timeout:?}; got {} spans: {spans:#?}",
                    spans.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn http_export(c: Collect, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        Ok(resp)
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    match ExportTraceServiceRequest::decode(body.to_bytes()) {
        Ok(r) => {
            c.take(r);
            reply(
                StatusCode::OK,
                ExportTraceServiceResponse { partial_success: None }.encode_to_vec(),
            )
        }
        Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A received attribute value in test-friendly form.
pub fn val(v: &Option<AnyValue>) -> Val {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Val::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => Val::Int(*i),
        Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => Val::Double(*d),
        Some(any_value::Value::ArrayValue(a)) => {
            let strs: Option<Vec<String>> = a
                .values
                .iter()
                .map(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            strs.map_or_else(|| Val::Other(format!("{a:?}")), Val::StrList)
        }
        other => Val::Other(format!("{other:?}")),
    }
}

pub fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, Val> {
    kvs.iter().map(|kv| (kv.key.clone(), val(&kv.value))).collect()
}

/// Flattens resource spans to one entry per span.
pub fn flatten(rs: &[ResourceSpans]) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for r in rs {
        let resource = attr_map(r.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        let service = match resource.get("service.name") {
            Some(Val::Str(s)) => s.clone(),
            _ => String::new(),
        };
        for ss in &r.scope_spans {
            let (scope_name, scope_version) = ss
                .scope
                .as_ref()
                .map_or((String::new(), String::new()), |s| (s.name.clone(), s.version.clone()));
            for s in &ss.spans {
                let status = s.status.clone().unwrap_or_default();
                out.push(ReceivedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    scope_version: scope_version.clone(),
                    name: s.name.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    trace_state: s.trace_state.clone(),
                    flags: s.flags,
                    kind: s.kind,
                    attributes: attr_map(&s.attributes),
                    status_code: status.code,
                    status_message: status.message,
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    events: s
                        .events
                        .iter()
                        .map(|e| ReceivedEvent {
                            name: e.name.clone(),
                            time_ns: e.time_unix_nano,
                            attributes: attr_map(&e.attributes),
                        })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .map(|l| ReceivedLink {
                            trace_id: hex(&l.trace_id),
                            span_id: hex(&l.span_id),
                            attributes: attr_map(&l.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

/// A span's string attribute `key`.
pub fn str_attr<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    match span.attributes.get(key) {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    }
}

/// A span's integer attribute `key`.
pub fn int_attr(span: &ReceivedSpan, key: &str) -> Option<i64> {
    match span.attributes.get(key) {
        Some(Val::Int(i)) => Some(*i),
        _ => None,
    }
}

/// A span's double attribute `key`.
pub fn double_attr(span: &ReceivedSpan, key: &str) -> Option<f64> {
    match span.attributes.get(key) {
        Some(Val::Double(d)) => Some(*d),
        _ => None,
    }
}
