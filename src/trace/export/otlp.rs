//! OTLP sink: one `ExportTraceServiceRequest` per batch (a `ResourceSpans` per service),
//! encoded by `otlp_encode` and sent over gRPC (tonic) or HTTP/protobuf (hyper) to one
//! endpoint. Every export is bounded by the caller's deadline; a failure is the caller's to
//! count and back off from, never retried here.

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tokio::time::{Instant, timeout_at};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::otlp_encode::Encoder;
use super::sdk::group_by_service;
use super::{DropReason, ExportConfig, ExportError, Protocol};
use crate::trace::span::SpanRecord;

/// Name of the instrumentation scope of every span runtime-tap exports.
pub const SCOPE_NAME: &str = "runtime-tap";

/// The OTLP/gRPC method (opentelemetry-proto's `collector/trace/v1/trace_service.proto`).
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

enum Transport {
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        uri: http::Uri,
        headers: http::HeaderMap,
    },
}

/// Sends batches to one OTLP endpoint.
pub(super) struct OtlpSink {
    url: String,
    transport: Transport,
    encoder: Encoder,
    /// Size of the last request, to size the next one's buffer in one allocation.
    last_len: usize,
}

/// Why one export did not get through.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Grpc(#[from] tonic::Status),
    #[error("{0}")]
    Http(String),
}

impl OtlpSink {
    /// Checks the endpoint and headers; connects lazily, on the first export.
    ///
    /// # Errors
    ///
    /// [`ExportError::Otlp`] for a bad endpoint or header. Must run inside a tokio runtime.
    pub(super) fn new(cfg: &ExportConfig, url: String, host_name: String) -> Result<OtlpSink, ExportError> {
        let bad_url = |e: &dyn std::fmt::Display| {
            ExportError::Otlp(format!("{} endpoint {url}: {e}", protocol_name(cfg.protocol)))
        };
        let uri: http::Uri = url.parse().map_err(|e| bad_url(&e))?;
        match uri.scheme_str() {
            Some("http") => {}
            // Built without a TLS stack: a collector across the network is reached through a
            // local Collector (deploy/README.md).
            Some("https") => return Err(bad_url(&"https is not supported: use http:// to a local collector")),
            _ => return Err(bad_url(&"the endpoint must start with http://")),
        }
        let transport = match cfg.protocol {
            Protocol::Grpc => {
                let mut metadata = MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| ExportError::Otlp(format!("invalid header name {k:?}")))?;
                    let value = MetadataValue::try_from(v.as_str())
                        .map_err(|_| ExportError::Otlp(format!("invalid value for header {k:?}")))?;
                    metadata.insert(key, value);
                }
                let channel = Endpoint::from(uri).connect_timeout(cfg.export_timeout).connect_lazy();
                Transport::Grpc {
                    grpc: tonic::client::Grpc::new(channel),
                    metadata,
                }
            }
            Protocol::HttpProtobuf => {
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| ExportError::Otlp(format!("invalid header name {k:?}")))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|_| ExportError::Otlp(format!("invalid value for header {k:?}")))?;
                    headers.insert(name, value);
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
                Transport::Http {
                    client: Box::new(client),
                    uri,
                    headers,
                }
            }
        };
        Ok(OtlpSink {
            url,
            transport,
            encoder: Encoder::new(host_name, cfg.resource_attributes.clone()),
            last_len: 0,
        })
    }

    /// Exports `spans` in one request before `deadline`. Marks every span in `failed` when it
    /// did not get through: `ExportFailed` when the collector refused or the request failed,
    /// `on_timeout` when the deadline passed. Returns whether it got through.
    pub(super) async fn export(
        &mut self,
        spans: &[SpanRecord],
        deadline: Instant,
        on_timeout: DropReason,
        failed: &mut [Option<DropReason>],
    ) -> bool {
        if spans.is_empty() {
            return true;
        }
        let groups = group_by_service(spans);
        let mut body = Vec::with_capacity(self.last_len + self.last_len / 8);
        self.encoder.encode(spans, &groups, &mut body);
        self.last_len = body.len();
        let reason = match timeout_at(deadline, self.send(Bytes::from(body))).await {
            Ok(Ok(())) => return true,
            Ok(Err(error)) => {
                tracing::warn!(spans = spans.len(), url = %self.url, %error, "otlp export failed");
                DropReason::ExportFailed
            }
            Err(_) => {
                tracing::warn!(spans = spans.len(), url = %self.url, "otlp export timed out");
                on_timeout
            }
        };
        for f in failed.iter_mut() {
            f.get_or_insert(reason);
        }
        false
    }

    async fn send(&mut self, body: Bytes) -> Result<(), SendError> {
        match &mut self.transport {
            Transport::Grpc { grpc, metadata } => {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("collector not ready: {e}")))?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                let response = grpc
                    .unary(request, PathAndQuery::from_static(GRPC_EXPORT), RawCodec)
                    .await?;
                partial_success(response.get_ref());
                Ok(())
            }
            Transport::Http { client, uri, headers } => {
                let mut request = http::Request::new(Full::new(body));
                *request.method_mut() = http::Method::POST;
                *request.uri_mut() = uri.clone();
                *request.headers_mut() = headers.clone();
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| SendError::Http(e.to_string()))?;
                let status = response.status();
                // Read the body to the end so the connection can carry the next export.
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| SendError::Http(e.to_string()))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(SendError::Http(format!("collector answered {status}")));
                }
                partial_success(&body);
                Ok(())
            }
        }
    }
}

/// The collector took the request but rejected some spans: logged, as the spec says, and not
/// retried (they were delivered; what the collector does with them is its own).
fn partial_success(body: &[u8]) {
    let Ok(response) = ExportTraceServiceResponse::decode(body) else {
        return;
    };
    if let Some(p) = response.partial_success
        && (p.rejected_spans > 0 || !p.error_message.is_empty())
    {
        tracing::warn!(
            rejected_spans = p.rejected_spans,
            message = %p.error_message,
            "otlp collector rejected spans"
        );
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Grpc => "grpc",
        Protocol::HttpProtobuf => "http/protobuf",
    }
}

/// A tonic codec for bodies that are already protobuf: requests go out as they are, responses
/// come back as bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
