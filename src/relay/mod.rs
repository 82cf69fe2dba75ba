//! The relay layer: listeners, the accept loop of each intercept, and each connection's
//! byte relay with its tap. Vocabulary as in pingora: the client is downstream, the daemon's
//! socket is upstream. Nothing here waits on decoding.

pub mod accept;
pub mod activation;
pub mod budget;
pub mod copy;
pub mod limit;
pub mod listener;
pub mod ownership;
pub mod peer;
pub mod rewrite;
pub mod stream;
pub mod tap;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Endpoint, Intercept};
use crate::metrics::InterceptMetrics;
use crate::observe::Observer;
use crate::trace::call::ConnMeta;
use listener::Listener;
use peer::{Process, ServerResolver};
use tap::Tap;

/// Connection ids, unique in the process, for logs.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// What one intercept's connections share.
pub struct Intercepted {
    pub config: Intercept,
    pub metrics: Arc<InterceptMetrics>,
    pub buffer_size: usize,
    pub tap_queue: usize,
    pub tap_queue_bytes: usize,
    /// How long a connect to the upstream may take (`relay.connect_timeout_secs`).
    pub connect_timeout: std::time::Duration,
    pub servers: Arc<ServerResolver>,
    pub observer: Arc<Observer>,
    /// The intercept's name as `service.name`, shared by its spans.
    pub service: Arc<str>,
    /// Raw capture of this intercept's connections (`capture_dir`), if on.
    pub capture: Option<crate::capture::Capture>,
    /// `max_connections`: open connections against the optional limit.
    pub limit: Arc<limit::ConnectionLimit>,
    /// The process-wide decode memory budget the tap queues count against.
    pub decode_budget: Arc<budget::DecodeBudget>,
    /// Names each request propagation adds a `traceparent` to (used when `propagate_context`).
    pub mint: rewrite::MintFn,
}

/// Accept connections on `listener` until `stop` is cancelled; each connection runs in
/// `tracker` until it ends or `cut` is cancelled (end of the grace period).
pub async fn serve(
    shared: Arc<Intercepted>,
    listener: Listener,
    stop: CancellationToken,
    cut: CancellationToken,
    tracker: TaskTracker,
) {
    shared.metrics.listening.store(true, Ordering::Relaxed);
    tracing::info!(intercept = %shared.config.name, listen = %shared.config.listen, upstream = %shared.config.upstream, owner = ?listener.owner(), "intercept listening");
    let mut errors = accept::AcceptErrors::new();
    let (name, listen) = (shared.config.name.as_str(), shared.config.listen.to_string());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(client) => {
                errors.accepted(name, &listen);
                shared.metrics.accepted.inc();
                // Beyond `max_connections` the client is closed at once (counted, logged).
                let Some(permit) = shared.limit.admit() else { continue };
                let shared = Arc::clone(&shared);
                let cut = cut.clone();
                let conn_tracker = tracker.clone();
                tracker.spawn(async move {
                    shared.metrics.active.inc();
                    handle(&shared, client, cut, &conn_tracker).await;
                    shared.metrics.active.dec();
                    drop(permit);
                });
            }
            Err(e) => {
                shared.metrics.accept_errors.inc();
                errors.failed(name, &listen, &e);
                // A stop during the backoff ends the loop at once.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = errors.backoff() => {}
                }
            }
        }
    }
    shared.metrics.listening.store(false, Ordering::Relaxed);
    listener.remove_own_socket();
    tracing::info!(intercept = %shared.config.name, "stopped accepting");
}

async fn handle(shared: &Intercepted, mut client: stream::Stream, cut: CancellationToken, tracker: &TaskTracker) {
    let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let name = &shared.config.name;
    let client_process = client.peer_cred().and_then(Process::from_cred);
    let mut upstream = tokio::select! {
        _ = cut.cancelled() => return,
        u = listener::connect_within(&shared.config.upstream, shared.connect_timeout) => match u {
            Ok(u) => u,
            Err(e) => {
                shared.metrics.upstream_connect_failures.inc();
                tracing::warn!(intercept = %name, conn = id, upstream = %shared.config.upstream, error = %e, "cannot connect upstream; closing client connection");
                return; // dropping `client` closes it at once
            }
        },
    };
    let server_process = match (&shared.config.upstream, upstream.peer_cred()) {
        (Endpoint::Unix(path), Some(cred)) => shared.servers.resolve(path, cred),
        _ => None,
    };
    tracing::debug!(
        intercept = %name, conn = id,
        client.pid = client_process.as_ref().map(|p| p.pid), client.uid = client_process.as_ref().map(|p| p.uid),
        client.gid = client_process.as_ref().map(|p| p.gid), client.exe = client_process.as_ref().and_then(|p| p.executable.as_deref()),
        server.pid = server_process.as_ref().map(|p| p.pid), server.uid = server_process.as_ref().map(|p| p.uid),
        server.gid = server_process.as_ref().map(|p| p.gid), server.exe = server_process.as_ref().and_then(|p| p.executable.as_deref()),
        "connection open"
    );
    // Raw capture is fed from the observer's side of the tap, never from the relay.
    let capture = shared.capture.as_ref().map(|c| c.connection(id));
    let mut tap = if shared.config.decode {
        let (tap, rx) = Tap::with_budget(
            shared.tap_queue,
            shared.tap_queue_bytes,
            Arc::clone(&shared.metrics),
            Arc::clone(&shared.decode_budget),
        );
        let conn = Arc::new(ConnMeta {
            id,
            service: Arc::clone(&shared.service),
            transport: shared.config.listen.transport(),
            listen: shared.config.listen.to_string(),
            upstream: shared.config.upstream.to_string(),
            client: client_process,
            server: server_process,
            capture_payloads: shared.config.capture_payloads,
        });
        // The observer runs beside the relay and may fall behind; the relay never waits for it.
        tracker.spawn(Arc::clone(&shared.observer).run_captured(conn, rx, Arc::clone(&shared.metrics), capture));
        tap
    } else if let Some(capture) = capture {
        // Not decoded, but captured: the tap feeds only the capture.
        let (tap, rx) = Tap::new(shared.tap_queue, shared.tap_queue_bytes, Arc::clone(&shared.metrics));
        tracker.spawn(crate::capture::follow(rx, capture));
        tap
    } else {
        Tap::off(Arc::clone(&shared.metrics))
    };
    let mut relay = copy::Relay::new(&mut client, &mut upstream, &mut tap, shared.buffer_size);
    if shared.config.propagate_context && shared.config.decode {
        // The one mode that changes bytes: a traceparent added to requests (README, Propagation).
        relay = relay.with_rewriter(rewrite::Rewriter::new(shared.mint));
    }
    let result = tokio::select! {
        r = &mut relay => Some(r),
        _ = cut.cancelled() => None,
    };
    let counts = relay.counts();
    tap.close();
    match result {
        Some(Ok(_)) => {
            tracing::debug!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], "connection closed")
        }
        Some(Err(e)) => {
            shared.metrics.relay_errors.inc();
            tracing::debug!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], error = %e, "connection ended by error");
        }
        None => {
            tracing::info!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], "connection cut at the end of the grace period")
        }
    }
}
