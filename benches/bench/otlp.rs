//! The OTLP/gRPC receiver runtime-tap exports to during the benchmark: the generated tonic
//! `TraceService` on 127.0.0.1, on its own thread and runtime, counting spans and nothing else;
//! or, to measure a collector in trouble, one that is slow, down or a black hole.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// How the collector behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Answers every export at once.
    Ok,
    /// Answers every export after [`SLOW_DELAY`].
    Slow,
    /// Nothing listens on the endpoint: connections are refused.
    Down,
    /// Accepts connections and never reads or answers.
    Blackhole,
}

/// How long a slow collector takes to answer an export.
pub const SLOW_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>, Option<std::time::Duration>);

#[tonic::async_trait]
impl TraceService for Count {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(delay) = self.1 {
            tokio::time::sleep(delay).await;
        }
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver; it lives as long as the benchmark process.
pub struct Receiver {
    pub endpoint: String,
    spans: Arc<AtomicU64>,
}

impl Receiver {
    pub fn start(mode: Mode) -> anyhow::Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(AtomicU64::new(0));
        match mode {
            Mode::Ok | Mode::Slow => {}
            Mode::Down => {
                // The port was free a moment ago and nothing listens on it now.
                drop(listener);
                return Ok(Receiver { endpoint, spans });
            }
            Mode::Blackhole => {
                std::thread::Builder::new()
                    .name("otlp-blackhole".into())
                    .spawn(move || {
                        // Held, never read: the exporter's requests sit in the socket buffers.
                        let mut held = Vec::new();
                        for conn in listener.incoming().flatten() {
                            held.push(conn);
                        }
                    })?;
                return Ok(Receiver { endpoint, spans });
            }
        }
        listener.set_nonblocking(true)?;
        let count = Count(spans.clone(), (mode == Mode::Slow).then_some(SLOW_DELAY));
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let _ = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(count).max_decoding_message_size(64 << 20))
                        .serve_with_incoming(incoming)
                        .await;
                });
            })?;
        Ok(Receiver { endpoint, spans })
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Waits until `expected` spans arrived after `before`, or the count stood still for
    /// `quiet` (a batch is at most 200 ms late by default), at most `timeout`. Spans received.
    pub fn settle(&self, before: u64, expected: u64, quiet: std::time::Duration, timeout: std::time::Duration) -> u64 {
        let start = std::time::Instant::now();
        let mut last = self.spans();
        let mut since = std::time::Instant::now();
        loop {
            let now = self.spans();
            if now - before >= expected || start.elapsed() > timeout {
                return now - before;
            }
            if now != last {
                last = now;
                since = std::time::Instant::now();
            } else if since.elapsed() > quiet {
                return now - before;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
