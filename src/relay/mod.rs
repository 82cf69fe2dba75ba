//! The relay layer: listeners, the accept loop of each intercept, and each connection's
//! byte relay with its tap. Vocabulary as in pingora: the client is downstream, the daemon's
//! socket is upstream. Rule it keeps: the relay knows nothing of observers, traces or
//! captures; each connection's tap comes from the intercept's [`TapHook`] (wired in `app`),
//! and nothing between accept and the first copied byte waits on decoding or reads /proc.

pub mod accept;
pub mod activation;
pub mod budget;
pub mod copy;
pub mod limit;
pub mod listener;
pub mod ownership;
pub mod peer;
pub mod rewrite;
pub mod settle;
pub mod splice;
pub mod stream;
pub mod tap;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Intercept;
use crate::conn::Cred;
use crate::metrics::InterceptMetrics;
use listener::Listener;
use tap::Tap;

/// Connection ids, unique in the process, for logs.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// What one intercept's connections share.
pub struct Intercepted {
    pub config: Intercept,
    pub metrics: Arc<InterceptMetrics>,
    pub buffer_size: usize,
    /// How long a connect to the upstream may take (`relay.connect_timeout_secs`).
    pub connect_timeout: std::time::Duration,
    /// Gives each connection its tap (`app` wires the observer and the capture into it).
    pub taps: Arc<dyn TapHook>,
    /// `max_connections`: open connections against the optional limit.
    pub limit: Arc<limit::ConnectionLimit>,
    /// Names each request propagation adds a `traceparent` to (used when `propagate_context`).
    pub mint: rewrite::MintFn,
}

/// What the relay knows of a new connection when it asks for its tap: only what costs no
/// more than a syscall (SO_PEERCRED of both sockets). Nothing here has read /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Unique in the process, for logs (and the capture's addresses).
    pub id: u64,
    /// SO_PEERCRED of the accepted client socket (unix listeners only).
    pub client: Option<Cred>,
    /// SO_PEERCRED of the upstream connection (unix upstreams only).
    pub server: Option<Cred>,
}

/// The task that consumes a connection's tap; the relay runs it beside the copy, tracked
/// like the connection so that shutdown waits for it.
pub type Follower = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A connection's tap, and what consumes it (none for [`Tap::off`]).
pub struct Tapped {
    pub tap: Tap,
    pub follower: Option<Follower>,
}

impl Tapped {
    /// No tap: the relay only counts bytes.
    pub fn off(metrics: Arc<InterceptMetrics>) -> Tapped {
        Tapped {
            tap: Tap::off(metrics),
            follower: None,
        }
    }
}

/// The one thing the relay asks of the layers above it: a tap for each new connection.
pub trait TapHook: Send + Sync {
    /// Called on the accept path, after the upstream is connected and before the first byte
    /// is copied, so it must not block: work the tap's consumer needs (looking processes up
    /// in /proc, decoding) belongs in the returned follower, which runs beside the copy.
    fn open(&self, conn: Opened) -> Tapped;
}

/// How the connections of every intercept stop at shutdown, in order.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Stops the accept loops.
    pub stop: CancellationToken,
    /// Each connection starts reporting whether it is busy (not HTTP/2, something under way)
    /// to `settled`, changing no byte yet.
    pub settle: CancellationToken,
    pub settled: Arc<settle::Settle>,
    /// Begins the drain: each connection closes as soon as no call is left on it
    /// (`wire::drain`); those it cannot follow wait for `cut`.
    pub drain: CancellationToken,
    /// Closes what is still open (end of the grace period).
    pub cut: CancellationToken,
}

/// Accept connections on `listener` until `shutdown.stop` is cancelled; each connection runs
/// in `tracker` until it ends, drains, or `shutdown.cut` is cancelled.
pub async fn serve(shared: Arc<Intercepted>, listener: Listener, shutdown: Shutdown, tracker: TaskTracker) {
    let stop = shutdown.stop.clone();
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
                let watch = shutdown.settled.opened();
                let shutdown = shutdown.clone();
                let conn_tracker = tracker.clone();
                tracker.spawn(async move {
                    shared.metrics.active.inc();
                    handle(&shared, client, &shutdown, watch, &conn_tracker).await;
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

async fn handle(
    shared: &Intercepted,
    mut client: stream::Stream,
    shutdown: &Shutdown,
    watch: settle::Watch,
    tracker: &TaskTracker,
) {
    let mut watch = Some(watch);
    let cut = &shutdown.cut;
    let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let name = &shared.config.name;
    let client_cred = client.peer_cred();
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
    let opened = Opened {
        id,
        client: client_cred,
        server: upstream.peer_cred(),
    };
    // Executables and a socket-activated upstream's real server are looked up by the tap's
    // follower, beside the copy: here only the credentials the sockets carry.
    let (c, s) = (opened.client.as_ref(), opened.server.as_ref());
    tracing::debug!(
        intercept = %name, conn = id,
        client.pid = c.and_then(|p| p.pid), client.uid = c.map(|p| p.uid), client.gid = c.map(|p| p.gid),
        server.pid = s.and_then(|p| p.pid), server.uid = s.map(|p| p.uid), server.gid = s.map(|p| p.gid),
        upstream = %shared.config.upstream,
        "connection open"
    );
    let Tapped { mut tap, follower } = shared.taps.open(opened);
    if let Some(follower) = follower {
        // The follower runs beside the relay and may fall behind; the relay never waits for it.
        tracker.spawn(follower);
    }
    let mut relay = copy::Relay::new(&mut client, &mut upstream, &mut tap, shared.buffer_size);
    if shared.config.propagate_context && shared.config.decode {
        // The one mode that changes bytes: a traceparent added to requests (README, Propagation).
        relay = relay.with_rewriter(rewrite::Rewriter::new(shared.mint));
    }
    if shared.config.decode {
        // The drain needs to know calls and frame boundaries; without decoding it cannot,
        // and the connection keeps the grace period as before.
        relay = relay.with_drain();
    }
    let mut draining = false;
    let result = loop {
        tokio::select! {
            r = &mut relay => break Some(r),
            _ = cut.cancelled() => break None,
            _ = shutdown.settle.cancelled(), if watch.is_some() => relay.settle(watch.take()),
            _ = shutdown.drain.cancelled(), if !draining => {
                draining = true;
                relay.start_drain();
                if relay.left_to_grace() {
                    tracing::debug!(intercept = %name, conn = id, "draining: connection not followed (opaque, switched protocols or decoding off); it has the grace period");
                }
            }
        }
    };
    let (counts, drained) = (relay.counts(), relay.drained());
    // Only the drain's log lines name its state (a formatted string: not for every close).
    let state = if draining || result.is_none() {
        relay.drain_state()
    } else {
        String::new()
    };
    tap.close();
    match result {
        Some(Ok(_)) if drained => {
            tracing::debug!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], "connection drained: no call left")
        }
        Some(Ok(_)) => {
            tracing::debug!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], "connection closed")
        }
        Some(Err(e)) if draining => {
            // A client told to go away (GOAWAY) often closes first: the end the drain asked for.
            tracing::debug!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], error = %e, drain = %state, "connection ended while draining");
        }
        Some(Err(e)) => {
            shared.metrics.relay_errors.inc();
            tracing::debug!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], error = %e, "connection ended by error");
        }
        None => {
            tracing::info!(intercept = %name, conn = id, c2s = counts[0], s2c = counts[1], drain = %state, "connection cut at the end of the grace period")
        }
    }
}
