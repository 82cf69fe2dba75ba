//! The one place that wires runtime-tap together, top to bottom: limits, listeners (handed
//! over or bound), decoding and export, admin endpoint, the intercepts' accept loops with the
//! tap hook that gives each connection its observer and capture (`taps.rs`; the relay knows
//! neither), and the shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Registry;
use crate::capture::flight::FlightRecorder;
use crate::capture::{Capture, CaptureConfig};
use crate::config::{Config, Endpoint, Intercept};
use crate::metrics::InterceptMetrics;
use crate::observe::Observer;
use crate::relay::activation::Handed;
use crate::relay::budget::DecodeBudget;
use crate::relay::limit::ConnectionLimit;
use crate::relay::listener::{Listener, Owner};
use crate::relay::ownership::{self, Access};
use crate::relay::peer::ServerResolver;
use crate::relay::{self, Intercepted};
use crate::schema::Schema;
use crate::trace::call::{CallSink, Clock};
use crate::trace::export::{ExportHandle, Exporter};
use crate::trace::sample::Sampler;
use crate::trace::tracer::Tracer;

mod flight;
mod taps;
#[cfg(test)]
mod tests;

pub use taps::{ConnectionTaps, Lookups};

/// Hooks for embedding the proxy (the demo): told when ready, stopped on request.
#[derive(Default)]
pub struct Hooks {
    /// Told once every listener is bound and accepting.
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Cancelled to shut down as on SIGTERM.
    pub stop: CancellationToken,
}

/// Run until SIGTERM, SIGINT or `hooks.stop`, then shut down gracefully.
pub async fn run(config: Config, hooks: Hooks) -> anyhow::Result<()> {
    // 1. Each connection costs two descriptors: take all the process may have.
    raise_open_files_limit();
    // 2. The admin port first: a clash fails the start before any socket file exists.
    //    It is served from step 6 on, and until exit (readiness says 503 while draining).
    let admin_listener = bind_admin(&config).await?;
    // 3. Listeners: a service manager's first, then our own. Bound before anything starts,
    //    so a clash fails the start instead of a half-running proxy. A start that fails from
    //    here on removes the socket files it created (dropping a `Listener` does).
    let listeners = bind_listeners(&config).await?;
    // 5. Decoding and export, then the raw captures (an unwritable directory fails the start).
    let pipeline = Pipeline::start(&config)?;
    let captures = start_captures(&config, pipeline.clock)?;
    let recorders = flight::start(&config, pipeline.clock, &pipeline.tracer)?;
    // 6. Admin endpoint, on the port bound in step 2.
    let decode_budget = DecodeBudget::new(config.relay.decode_memory_limit_bytes());
    let registry = Registry {
        intercepts: config
            .intercepts
            .iter()
            .map(|ic| InterceptMetrics::new(&ic.name))
            .collect(),
        tracer: Some(Arc::clone(&pipeline.tracer)),
        decode_budget: Some(Arc::clone(&decode_budget)),
        raw: Some(crate::capture::RawMetrics {
            captures: captures.iter().flatten().cloned().collect(),
            recorders: recorders.iter().flatten().cloned().collect(),
        }),
    };
    let admin_stop = CancellationToken::new();
    let admin = admin_listener.map(|(addr, l)| {
        tracing::info!(listen = %addr, "admin endpoint: /healthz /readyz /metrics");
        tokio::spawn(crate::admin::serve(l, registry.clone(), admin_stop.clone()))
    });
    // Before the first connection is served: a SIGTERM that arrives once clients got answers
    // must be a clean stop, never the default action (death with sockets left behind).
    let signals = wait_for_signal();
    // 7. One accept loop per intercept; connections are tracked for the grace period.
    let relays = Relays::new();
    let taps = intercept_taps(&config, &registry, &pipeline, (&captures, &recorders), &decode_budget);
    let loops = relays.serve(&config, listeners, &registry, taps);
    if let Some(ready) = hooks.ready {
        let _ = ready.send(());
    }
    // 8. Shutdown: stop accepting (own sockets removed), let connections finish within the
    //    grace period, then cut the rest (HTTP/2 connections never end on their own). The
    //    admin endpoint keeps serving meanwhile: /metrics shows the drain, /readyz says 503.
    tokio::select! {
        _ = signals => {}
        _ = hooks.stop.cancelled() => tracing::info!("stop requested"),
    }
    let grace_end = relays.drain(loops, config.relay.grace_period()).await;
    flush_captures(captures).await;
    // 9. Spans of finished calls (and of calls cut above, marked incomplete) are flushed
    //    within what is left of the grace period, at least a moment.
    pipeline.stop(grace_end).await;
    // After the span flush, which gave the last dumps their trace ids.
    flight::flush(recorders).await;
    admin_stop.cancel();
    if let Some(a) = admin {
        let _ = a.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The admin endpoint's port, bound (not yet served), unless `admin.listen = "off"`.
async fn bind_admin(config: &Config) -> anyhow::Result<Option<(SocketAddr, tokio::net::TcpListener)>> {
    if config.admin.listen == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = config.admin.listen.parse().context("admin.listen")?;
    let l = crate::admin::bind(addr)
        .await
        .with_context(|| format!("admin endpoint {addr}"))?;
    Ok(Some((addr, l)))
}

/// Every intercept's listener, in config order: handed over by a service manager, else bound
/// here with access no wider than the upstream's.
async fn bind_listeners(config: &Config) -> anyhow::Result<Vec<Listener>> {
    let mut handed = Handed::from_env().context("socket activation")?;
    let mut listeners = Vec::new();
    for ic in &config.intercepts {
        let listener = match handed.take(&ic.name) {
            Some(a) => {
                Listener::from_activation(a).with_context(|| format!("intercept {}: handed-over listener", ic.name))?
            }
            None => Listener::bind(&ic.listen)
                .await
                .with_context(|| format!("intercept {}", ic.name))?,
        };
        if listener.owner() == Owner::Us
            && let Endpoint::Unix(path) = &ic.listen
        {
            apply_access(ic, path).await?;
        }
        listeners.push(listener);
    }
    for name in handed.unused() {
        tracing::warn!(name, "a handed-over listener matches no intercept name; ignoring it");
    }
    Ok(listeners)
}

/// Step 4: access to a socket we bound, no wider than the upstream socket's (copied when it
/// appears) unless the config says otherwise.
async fn apply_access(ic: &Intercept, path: &std::path::Path) -> anyhow::Result<()> {
    let mode = ic
        .socket_mode
        .as_deref()
        .map(crate::config::parse_mode)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let access = Access::resolve(mode, ic.socket_owner.as_deref(), ic.socket_group.as_deref())
        .with_context(|| format!("intercept {}", ic.name))?;
    let upstream = match &ic.upstream {
        Endpoint::Unix(p) => Some(p.clone()),
        Endpoint::Tcp(_) => None,
    };
    ownership::apply(path.to_path_buf(), upstream, access)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("intercept {}", ic.name))
}

/// Decoding and export: the observer every connection shares, the tracer that turns its
/// calls into spans, and the exporter with its own bounded queue.
struct Pipeline {
    observer: Arc<Observer>,
    clock: Clock,
    tracer: Arc<Tracer>,
    tracer_stop: CancellationToken,
    tracer_task: JoinHandle<()>,
    export: ExportHandle,
}

impl Pipeline {
    /// Redaction rules the config adds go in first: nothing is decoded before them. Then the
    /// descriptor pool (built in, plus the user's sets), the exporter, the tracer.
    fn start(config: &Config) -> anyhow::Result<Pipeline> {
        if crate::schema::redact::install(config.redact.clone()).is_err() {
            tracing::warn!("redaction rules were installed before; keeping the first ones");
        }
        let mut schema = Schema::builtin();
        for path in &config.descriptor_sets {
            let bytes = std::fs::read(path).with_context(|| format!("descriptor_sets: {}", path.display()))?;
            schema
                .add_descriptor_set(&bytes)
                .with_context(|| format!("descriptor_sets: {}", path.display()))?;
        }
        let export_config = config.export.resolve(&crate::config::env::var).context("export")?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (exporter, export) = Exporter::start(export_config, host).context("export")?;
        let tracer = Tracer::new(exporter, Sampler::new(&config.sampling), &config.correlation);
        let tracer_stop = CancellationToken::new();
        let tracer_task = tokio::spawn(Arc::clone(&tracer).run(tracer_stop.clone()));
        let sink: Arc<dyn CallSink> = tracer.clone();
        let clock = Clock::new();
        let observer = Arc::new(Observer {
            sink,
            clock,
            schema,
            docker_ids: Default::default(),
        });
        Ok(Pipeline {
            observer,
            clock,
            tracer,
            tracer_stop,
            tracer_task,
            export,
        })
    }

    /// Stop the tracer (open calls end incomplete) and flush the exporter until `grace_end`,
    /// at least a moment. Every connection's observer must have ended before.
    async fn stop(self, grace_end: tokio::time::Instant) {
        drop(self.observer);
        self.tracer_stop.cancel();
        let _ = self.tracer_task.await;
        let left = grace_end
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(2));
        let counters = self.export.shutdown(left).await;
        tracing::info!(
            exported = counters.exported,
            dropped_queue_full = counters.dropped_queue_full,
            dropped_export_failed = counters.dropped_export_failed,
            dropped_shutdown = counters.dropped_shutdown,
            "spans flushed"
        );
    }
}

/// Raw capture (opt-in): one writer per intercept, in config order, its first file opened
/// now so that an unwritable directory fails the start.
fn start_captures(config: &Config, clock: Clock) -> anyhow::Result<Vec<Option<Capture>>> {
    let mut captures = Vec::new();
    for ic in &config.intercepts {
        let Some(dir) = &ic.capture_dir else {
            captures.push(None);
            continue;
        };
        let capture = Capture::start(
            CaptureConfig {
                name: ic.name.clone(),
                dir: dir.clone(),
                max_bytes: ic.capture_max_bytes,
                files: ic.capture_files,
            },
            clock,
        )
        .with_context(|| format!("intercept {}: capture_dir {}", ic.name, dir.display()))?;
        tracing::warn!(intercept = %ic.name, dir = %dir.display(), "raw capture on: connection bytes are written unredacted");
        captures.push(Some(capture));
    }
    Ok(captures)
}

/// Each intercept's [`relay::TapHook`], in config order: the shared observer (behind the
/// intercept's flight recorder, if on), the intercept's capture, and one process lookup for
/// all (its cache is per upstream).
fn intercept_taps(
    config: &Config,
    registry: &Registry,
    pipeline: &Pipeline,
    (captures, recorders): (&[Option<Capture>], &[Option<FlightRecorder>]),
    decode_budget: &Arc<DecodeBudget>,
) -> Vec<Arc<dyn relay::TapHook>> {
    let peers = taps::Lookups::new(Arc::new(ServerResolver::default()));
    config
        .intercepts
        .iter()
        .zip(&registry.intercepts)
        .zip(captures.iter().zip(recorders))
        .map(|((ic, metrics), (capture, recorder))| {
            let observer = match recorder {
                Some(r) => flight::observer(&pipeline.observer, r, config.sampling.slow_ms),
                None => Arc::clone(&pipeline.observer),
            };
            Arc::new(ConnectionTaps {
                config: ic.clone(),
                service: Arc::from(ic.name.as_str()),
                metrics: Arc::clone(metrics),
                tap_queue: config.relay.tap_queue,
                tap_queue_bytes: config.relay.tap_queue_bytes,
                decode_budget: Arc::clone(decode_budget),
                observer,
                capture: capture.clone(),
                flight: recorder.clone(),
                peers: Arc::clone(&peers),
            }) as Arc<dyn relay::TapHook>
        })
        .collect()
}

/// The intercepts' accept loops and their connections, and how they stop.
struct Relays {
    /// Stop accepting, drain, cut at the end of the grace period.
    shutdown: relay::Shutdown,
    /// Every connection and its tap's follower.
    tracker: TaskTracker,
}

impl Relays {
    fn new() -> Relays {
        Relays {
            shutdown: relay::Shutdown::default(),
            tracker: TaskTracker::new(),
        }
    }

    /// One accept loop per intercept, in config order.
    fn serve(
        &self,
        config: &Config,
        listeners: Vec<Listener>,
        registry: &Registry,
        taps: Vec<Arc<dyn relay::TapHook>>,
    ) -> Vec<JoinHandle<()>> {
        let mut loops = Vec::new();
        for (((ic, listener), metrics), taps) in config
            .intercepts
            .iter()
            .zip(listeners)
            .zip(&registry.intercepts)
            .zip(taps)
        {
            let shared = Arc::new(Intercepted {
                config: ic.clone(),
                metrics: Arc::clone(metrics),
                buffer_size: config.relay.buffer_size,
                connect_timeout: config.relay.connect_timeout(),
                taps,
                limit: ConnectionLimit::new(ic.max_connections, Arc::clone(metrics)),
                mint: crate::trace::context::mint,
            });
            loops.push(tokio::spawn(relay::serve(
                shared,
                listener,
                self.shutdown.clone(),
                self.tracker.clone(),
            )));
        }
        loops
    }

    /// Stop accepting (connections not yet accepted wait in the listening socket for the next
    /// process when a service manager holds it), drain: each connection closes as soon as no
    /// call is left on it (HTTP/2 clients told with GOAWAY, HTTP/1.1 ones with
    /// `Connection: close`), and what is left at the end of `grace` (opaque and upgraded
    /// streams, event subscriptions, calls still running) is cut. Returns the end of the grace
    /// period, which bounds the span flush too.
    async fn drain(&self, loops: Vec<JoinHandle<()>>, grace: Duration) -> tokio::time::Instant {
        tracing::info!(
            grace_period_secs = grace.as_secs(),
            open = self.tracker.len(),
            "shutting down: letting connections settle, then draining"
        );
        let grace_end = tokio::time::Instant::now() + grace;
        // First let what GOAWAY cannot speak for settle (`relay::settle` says why), for at most
        // half the grace period, still accepting: a `docker run` in progress holds its `wait`
        // on one connection and needs another for `start`, and its attach session holds this
        // process until it is started. Then stop accepting and drain everything at once.
        self.shutdown.settle.cancel();
        let settled = tokio::time::timeout_at(grace_end - grace / 2, self.shutdown.settled.quiet()).await;
        self.shutdown.stop.cancel();
        for l in loops {
            let _ = l.await;
        }
        tracing::info!(
            settled = settled.is_ok(),
            open = self.tracker.len(),
            "draining: clients told (GOAWAY, Connection: close), idle connections closed"
        );
        self.shutdown.drain.cancel();
        self.tracker.close();
        if tokio::time::timeout_at(grace_end, self.tracker.wait()).await.is_err() {
            tracing::info!(open = self.tracker.len(), "grace period over; closing open connections");
            self.shutdown.cut.cancel();
            self.tracker.wait().await;
        }
        grace_end
    }
}

/// Raw captures: every connection has ended, write out what is queued.
async fn flush_captures(captures: Vec<Option<Capture>>) {
    for capture in captures.into_iter().flatten() {
        let flushed = tokio::task::spawn_blocking(move || {
            let ok = capture.flush(Duration::from_secs(5));
            (ok, capture.stats(), capture.name().to_string())
        })
        .await;
        if let Ok((ok, stats, name)) = flushed {
            tracing::info!(
                intercept = %name,
                flushed = ok,
                segments = stats.segments,
                dropped_segments = stats.dropped_segments,
                dropped_bytes = stats.dropped_bytes,
                files = stats.files_opened,
                "capture written"
            );
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future ends when one arrives.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
        }
    }
}

fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(
                from = soft,
                to = hard,
                connections = hard / 2,
                "raised open-files limit"
            ),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise open-files limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, connections = soft / 2, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read open-files limit"),
    }
}
