//! Span export pipeline: a bounded queue between the call model and the sinks (OTLP, span
//! file, console), drained by one tokio task in batches. One pipeline for every intercept
//! (each with its own resource, `service.name`, and its own share of the queue: `share`), so
//! the spans of one trace across dockerd and containerd leave in the same batches.
//!
//! The rule it keeps: [`Exporter::submit`] never blocks and never waits. A span is either
//! exported or counted as dropped with a reason (`queue_full`, `export_failed`, `shutdown`):
//! a down or slow collector costs at most the queue's memory and shows in the counters.
//! Only this module knows OTLP and the opentelemetry crates.
//!
//! While the collector keeps failing, the task backs off ([`MIN_BACKOFF`] doubling to
//! [`MAX_BACKOFF`]) and spans wait in the queue meanwhile (the span file and console wait too);
//! each batch that still fails is counted `export_failed`, and what no longer fits the queue
//! `queue_full`.

mod config;
mod console;
mod file;
mod fold;
mod otlp;
mod otlp_encode;
mod sdk;
mod share;
#[cfg(test)]
mod tests;
pub mod trace_buffer;
pub mod waterfall;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

pub use config::{
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_SCHEDULED_DELAY, ExportConfig, Protocol,
    parse_key_values,
};
pub use otlp::SCOPE_NAME;

use crate::metrics::Family;
use crate::trace::span::SpanRecord;

/// First wait after a failed OTLP export; doubles per failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between OTLP attempts while the collector keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Errors that stop the pipeline from starting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid export config: {0}")]
    Config(String),
    #[error("invalid {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("otlp exporter: {0}")]
    Otlp(String),
    #[error("span file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("span export needs a tokio runtime")]
    NoRuntime,
}

/// Why a span was not exported. A small closed set: a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full when the span was submitted.
    QueueFull,
    /// The collector (or the span file) refused, failed or timed out.
    ExportFailed,
    /// The pipeline was shut down, or its shutdown deadline passed, before the span went out.
    Shutdown,
}

impl DropReason {
    /// The label value: `queue_full`, `export_failed`, `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// A snapshot of the pipeline's counters. Once the pipeline has stopped,
/// `submitted == exported + dropped_queue_full + dropped_export_failed + dropped_shutdown`;
/// before, the difference is `queued` plus the batch in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCounters {
    pub submitted: u64,
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
    pub dropped_shutdown: u64,
    /// Spans waiting in the queue now (a gauge).
    pub queued: u64,
}

impl ExportCounters {
    /// Dropped spans for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::ExportFailed => self.dropped_export_failed,
            DropReason::Shutdown => self.dropped_shutdown,
        }
    }
}

/// `runtime_tap_spans_dropped_total`: the pipeline's drops by [`DropReason`]; the tracer adds
/// the calls its sampling dropped under the same family.
pub const SPANS_DROPPED: Family =
    Family::counter("runtime_tap_spans_dropped_total", "Spans or calls dropped, by reason.");

impl ExportCounters {
    /// The pipeline's flow: submitted, exported, and dropped by reason (the family stays open:
    /// the tracer's drops follow).
    pub fn fmt_flow(&self, out: &mut String) {
        for (family, value) in [
            (
                Family::counter("runtime_tap_spans_submitted_total", "Spans handed to the export queue."),
                self.submitted,
            ),
            (
                Family::counter(
                    "runtime_tap_spans_exported_total",
                    "Spans every configured sink accepted.",
                ),
                self.exported,
            ),
        ] {
            family.header(out);
            family.sample(out, &[], value);
        }
        SPANS_DROPPED.header(out);
        for reason in [DropReason::QueueFull, DropReason::ExportFailed, DropReason::Shutdown] {
            SPANS_DROPPED.sample(out, &[("reason", &reason.as_str())], self.dropped(reason));
        }
    }

    /// The queue's fill (a gauge).
    pub fn fmt_queue(&self, out: &mut String) {
        let family = Family::gauge("runtime_tap_export_queue_spans", "Spans waiting in the export queue.");
        family.header(out);
        family.sample(out, &[], self.queued);
    }
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    exported: AtomicU64,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    shutdown: AtomicU64,
}

impl Counters {
    fn add_dropped(&self, reason: DropReason, n: u64) {
        let c = match reason {
            DropReason::QueueFull => &self.queue_full,
            DropReason::ExportFailed => &self.export_failed,
            DropReason::Shutdown => &self.shutdown,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self, queued: u64) -> ExportCounters {
        ExportCounters {
            submitted: self.submitted.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            dropped_queue_full: self.queue_full.load(Ordering::Relaxed),
            dropped_export_failed: self.export_failed.load(Ordering::Relaxed),
            dropped_shutdown: self.shutdown.load(Ordering::Relaxed),
            queued,
        }
    }
}

/// The submitting side of the pipeline: cheap to clone, one per intercept if wanted.
#[derive(Clone)]
pub struct Exporter {
    tx: mpsc::Sender<SpanRecord>,
    counters: Arc<Counters>,
    shares: Arc<share::Shares>,
}

/// The owning side: shuts the pipeline down.
pub struct ExportHandle {
    shutdown: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
    tx: mpsc::WeakSender<SpanRecord>,
}

impl Exporter {
    /// Starts the pipeline: opens the sinks and spawns the export task on the current tokio
    /// runtime. `host_name` is the `host.name` of every resource.
    ///
    /// # Errors
    ///
    /// When the config is invalid, the span file cannot be opened, the OTLP endpoint or a
    /// header is malformed, or there is no tokio runtime.
    pub fn start(cfg: ExportConfig, host_name: String) -> Result<(Exporter, ExportHandle), ExportError> {
        cfg.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let otlp = match cfg.otlp_url() {
            Some(url) => Some(otlp::OtlpSink::new(&cfg, url, host_name.clone())?),
            None => None,
        };
        let file = match &cfg.file {
            Some(path) => Some(file::FileSink::open(
                path,
                host_name.clone(),
                cfg.resource_attributes.clone(),
            )?),
            None => None,
        };
        let console = cfg.console.then(|| console::ConsoleSink::stderr(cfg.console_fold));
        tracing::info!(
            otlp = cfg.otlp_url().as_deref().unwrap_or("off"),
            file = cfg
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .as_deref()
                .unwrap_or("off"),
            console = cfg.console,
            max_queue = cfg.max_queue,
            max_batch = cfg.max_batch,
            "span export started"
        );

        let (tx, rx) = mpsc::channel(cfg.max_queue);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let shares = Arc::new(share::Shares::new(cfg.max_queue));
        let worker = Worker {
            rx,
            shutdown: Some(shutdown_rx),
            counters: counters.clone(),
            shares: Arc::clone(&shares),
            otlp,
            file,
            console,
            max_batch: cfg.max_batch,
            scheduled_delay: cfg.scheduled_delay,
            export_timeout: cfg.export_timeout,
            backoff: None,
            backoff_until: None,
        };
        let task = rt.spawn(worker.run());
        let handle = ExportHandle {
            shutdown: shutdown_tx,
            task,
            counters: counters.clone(),
            tx: tx.downgrade(),
        };
        Ok((Exporter { tx, counters, shares }, handle))
    }

    /// Queues a finished span for export. Never blocks, never waits: when the queue is full
    /// the span is dropped and counted (`queue_full`); after shutdown, counted `shutdown`.
    /// Each intercept (`service.name`) has an equal share of a queue at least half full.
    pub fn submit(&self, span: SpanRecord) {
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let slot = match self.shares.admit(&span.service, queued(&self.tx)) {
            share::Admission::Admitted(slot) => slot,
            share::Admission::OverShare => return self.counters.add_dropped(DropReason::QueueFull, 1),
        };
        let reason = match self.tx.try_send(span) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => DropReason::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => DropReason::Shutdown,
        };
        self.shares.unadmit(slot);
        self.counters.add_dropped(reason, 1);
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ExportCounters {
        self.counters.snapshot(queued(&self.tx))
    }
}

fn queued(tx: &mpsc::Sender<SpanRecord>) -> u64 {
    (tx.max_capacity() - tx.capacity()) as u64
}

impl ExportHandle {
    /// A snapshot of the counters.
    pub fn counters(&self) -> ExportCounters {
        let q = self.tx.upgrade().map_or(0, |tx| queued(&tx));
        self.counters.snapshot(q)
    }

    /// Stops taking spans (later submits count as `shutdown` drops), exports what is queued
    /// until `deadline` from now, then counts the rest as `shutdown` drops. Returns the final
    /// counters.
    pub async fn shutdown(self, deadline: Duration) -> ExportCounters {
        let at = Instant::now() + deadline;
        // The task may be gone already (all exporters dropped): then it has drained the queue.
        let _ = self.shutdown.send(at);
        // The worker honours the deadline itself; the margin covers closing the sinks.
        match tokio::time::timeout_at(at + Duration::from_secs(1), self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "span export task failed"),
            Err(_) => tracing::error!("span export task missed its shutdown deadline"),
        }
        self.counters.snapshot(0)
    }
}

/// The export task: batches from the queue to the sinks.
struct Worker {
    rx: mpsc::Receiver<SpanRecord>,
    /// `None` once the handle is dropped without a shutdown: then run until every exporter is.
    shutdown: Option<oneshot::Receiver<Instant>>,
    counters: Arc<Counters>,
    shares: Arc<share::Shares>,
    otlp: Option<otlp::OtlpSink>,
    file: Option<file::FileSink>,
    console: Option<console::ConsoleSink>,
    max_batch: usize,
    scheduled_delay: Duration,
    export_timeout: Duration,
    /// Current OTLP backoff step, `None` while the collector answers.
    backoff: Option<Duration>,
    backoff_until: Option<Instant>,
}

/// Resolves with the shutdown deadline once [`ExportHandle::shutdown`] is called; never when
/// the handle was dropped instead. Cancel safe.
async fn shutdown_signal(rx: &mut Option<oneshot::Receiver<Instant>>) -> Instant {
    if let Some(r) = rx
        && let Ok(at) = r.await
    {
        return at;
    }
    *rx = None;
    std::future::pending().await
}

/// Sleeps until `at`, or forever when `None`. Cancel safe.
async fn sleep_until_some(at: Option<std::time::Instant>) {
    match at {
        Some(at) => sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Worker {
    async fn run(mut self) {
        let mut buf: Vec<SpanRecord> = Vec::with_capacity(self.max_batch);
        let mut shutdown = self.shutdown.take();
        let deadline = self.run_batches(&mut buf, &mut shutdown).await;
        // Shutdown (or every exporter gone): take no more, flush what is queued.
        self.rx.close();
        loop {
            if buf.is_empty() && self.rx.recv_many(&mut buf, self.max_batch).await == 0 {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut rest = buf.len() as u64;
                buf.clear();
                while self.rx.try_recv().is_ok() {
                    rest += 1;
                }
                self.counters.add_dropped(DropReason::Shutdown, rest);
                tracing::warn!(dropped = rest, "span export shutdown deadline passed");
                break;
            }
            self.export(&mut buf, deadline).await;
        }
        if let Some(c) = &mut self.console {
            c.flush();
        }
        let c = self.counters.snapshot(0);
        tracing::info!(
            exported = c.exported,
            dropped_queue_full = c.dropped_queue_full,
            dropped_export_failed = c.dropped_export_failed,
            dropped_shutdown = c.dropped_shutdown,
            "span export stopped"
        );
    }

    /// Exports batches until shutdown (returns its deadline, with possibly a partial batch
    /// left in `buf`) or until every exporter is dropped and the queue is empty (`None`).
    async fn run_batches(
        &mut self,
        buf: &mut Vec<SpanRecord>,
        shutdown: &mut Option<oneshot::Receiver<Instant>>,
    ) -> Option<Instant> {
        loop {
            // The console shows a trace once it is quiet: wake for that too.
            let console_due = self.console.as_ref().and_then(|c| c.next_due());
            tokio::select! {
                biased;
                at = shutdown_signal(shutdown) => return Some(at),
                n = self.rx.recv_many(buf, self.max_batch) => if n == 0 { return None },
                () = sleep_until_some(console_due) => {
                    if let Some(c) = &mut self.console {
                        c.tick(Instant::now().into_std());
                    }
                    continue;
                }
            }
            let flush_at = Instant::now() + self.scheduled_delay;
            while buf.len() < self.max_batch {
                let room = self.max_batch - buf.len();
                tokio::select! {
                    biased;
                    at = shutdown_signal(shutdown) => return Some(at),
                    n = self.rx.recv_many(buf, room) => if n == 0 { break },
                    _ = sleep_until(flush_at) => break,
                }
            }
            if let Some(until) = self.backoff_until {
                // The collector failed lately: let spans wait in the queue rather than spin.
                tokio::select! {
                    biased;
                    at = shutdown_signal(shutdown) => return Some(at),
                    _ = sleep_until(until) => {},
                }
            }
            let export = self.export(buf, None);
            tokio::pin!(export);
            tokio::select! {
                biased;
                () = &mut export => {}
                at = shutdown_signal(shutdown) => {
                    // Finish this batch, but not past the shutdown deadline. Cut short, its
                    // spans stay in `buf` and are counted as `shutdown` drops.
                    let _ = tokio::time::timeout_at(at, &mut export).await;
                    return Some(at);
                }
            }
        }
    }

    /// Sends `buf` to every sink and counts each span once: exported when every sink took it,
    /// else dropped with the first reason. Empties `buf`.
    async fn export(&mut self, buf: &mut Vec<SpanRecord>, shutdown_at: Option<Instant>) {
        let mut deadline = Instant::now() + self.export_timeout;
        let mut on_timeout = DropReason::ExportFailed;
        if let Some(at) = shutdown_at.filter(|at| *at < deadline) {
            deadline = at;
            on_timeout = DropReason::Shutdown;
        }
        for span in buf.iter() {
            self.shares.taken(&span.service);
        }
        let mut failed: Vec<Option<DropReason>> = vec![None; buf.len()];
        if let Some(console) = &mut self.console {
            console.export(buf, Instant::now().into_std());
        }
        if let Some(file) = &mut self.file
            && !file.export(buf).await
        {
            failed.fill(Some(DropReason::ExportFailed));
        }
        if let Some(otlp) = &mut self.otlp {
            if otlp.export(buf, deadline, on_timeout, &mut failed).await {
                self.backoff = None;
                self.backoff_until = None;
            } else {
                let step = self.backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                self.backoff = Some(step);
                self.backoff_until = Some(Instant::now() + step);
            }
        }
        let mut exported = 0;
        for reason in &failed {
            match reason {
                None => exported += 1,
                Some(r) => self.counters.add_dropped(*r, 1),
            }
        }
        self.counters.exported.fetch_add(exported, Ordering::Relaxed);
        buf.clear();
    }
}
