//! The relay's [`TapHook`] for one intercept: what consumes each connection's tap. Decoding
//! on, the observer (and the raw capture, if on) behind a bounded queue; decoding off, the
//! capture alone, or no tap at all. Who is on each end is looked up here, on a blocking
//! thread beside the relay, so the relay copies a connection's first byte before any /proc
//! lookup for it is done; the tap's queue holds the chunks meanwhile (bounded and counted).

use std::sync::Arc;

use crate::capture::Capture;
use crate::capture::flight::FlightRecorder;
use crate::config::{Endpoint, Intercept};
use crate::conn::ConnMeta;
use crate::metrics::InterceptMetrics;
use crate::observe::Observer;
use crate::observe::TapFollower;
use crate::relay::budget::DecodeBudget;
use crate::relay::peer::{Lookup, Peers};
use crate::relay::tap::{Tap, TapReceiver};
use crate::relay::{Opened, TapHook, Tapped};

/// One intercept's connections' taps.
pub struct ConnectionTaps {
    pub config: Intercept,
    /// The intercept's name as `service.name`, shared by its spans.
    pub service: Arc<str>,
    pub metrics: Arc<InterceptMetrics>,
    /// Depth of each connection's tap queue, in chunks (`relay.tap_queue`).
    pub tap_queue: usize,
    /// Bytes each connection's tap queue may hold (`relay.tap_queue_bytes`).
    pub tap_queue_bytes: usize,
    /// The process-wide decode memory budget the tap queues count against.
    pub decode_budget: Arc<DecodeBudget>,
    pub observer: Arc<Observer>,
    /// Raw capture of this intercept's connections (`capture_dir`), if on.
    pub capture: Option<Capture>,
    /// The intercept's flight recorder (`flight_recorder`), if on; `observer` dumps through it.
    pub flight: Option<FlightRecorder>,
    /// Finds the client and server processes, off the byte path.
    pub peers: Arc<Lookups>,
}

/// Runs process lookups on a blocking thread, one at a time: each is a few reads of /proc
/// (a holder search is serialized in the resolver anyway), and a burst of connections must
/// not grow a thread each (`tests/relay.rs` counts the proxy's threads).
pub struct Lookups {
    lookup: Arc<dyn Lookup>,
    one_at_a_time: tokio::sync::Semaphore,
}

impl Lookups {
    pub fn new(lookup: Arc<dyn Lookup>) -> Arc<Lookups> {
        Arc::new(Lookups {
            lookup,
            one_at_a_time: tokio::sync::Semaphore::new(1),
        })
    }

    /// The processes on both ends of `opened`, as far as /proc tells.
    async fn peers(&self, upstream: Endpoint, opened: Opened) -> Peers {
        let Ok(_turn) = self.one_at_a_time.acquire().await else {
            return Peers::default();
        };
        let lookup = Arc::clone(&self.lookup);
        tokio::task::spawn_blocking(move || lookup.peers(&upstream, opened.client, opened.server))
            .await
            .unwrap_or_default()
    }
}

impl TapHook for ConnectionTaps {
    fn open(&self, opened: Opened) -> Tapped {
        // Raw capture is fed from the consumer's side of the tap, never from the relay.
        let capture = self.capture.as_ref().map(|c| c.connection(opened.id));
        if self.config.decode {
            let (tap, rx) = Tap::with_budget(
                self.tap_queue,
                self.tap_queue_bytes,
                Arc::clone(&self.metrics),
                Arc::clone(&self.decode_budget),
            );
            // Raw capture and flight recorder follow the tap from the observer's task.
            let mut followers: Vec<Box<dyn TapFollower>> = Vec::new();
            if let Some(c) = capture {
                followers.push(Box::new(c));
            }
            if let Some(f) = &self.flight {
                followers.push(Box::new(f.connection(opened.id)));
            }
            let observe = self.observe(opened, rx, followers);
            Tapped {
                tap,
                follower: Some(Box::pin(observe)),
            }
        } else if let Some(capture) = capture {
            // Not decoded, but captured: the tap feeds only the capture.
            let (tap, rx) = Tap::new(self.tap_queue, self.tap_queue_bytes, Arc::clone(&self.metrics));
            Tapped {
                tap,
                follower: Some(Box::pin(crate::capture::follow(rx, capture))),
            }
        } else {
            Tapped::off(Arc::clone(&self.metrics))
        }
    }
}

impl ConnectionTaps {
    /// The observer of one connection, once its peers are known. Until then the tap's queue
    /// holds the chunks; a lookup slow enough to fill it costs that connection its decoding
    /// (counted), never a byte.
    fn observe(
        &self,
        opened: Opened,
        rx: TapReceiver,
        followers: Vec<Box<dyn TapFollower>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let lookups = Arc::clone(&self.peers);
        let upstream_endpoint = self.config.upstream.clone();
        let observer = Arc::clone(&self.observer);
        let metrics = Arc::clone(&self.metrics);
        let service = Arc::clone(&self.service);
        let (transport, listen, upstream) = (
            self.config.listen.transport(),
            self.config.listen.to_string(),
            self.config.upstream.to_string(),
        );
        let capture_payloads = self.config.capture_payloads;
        async move {
            let Peers { client, server } = lookups.peers(upstream_endpoint, opened).await;
            tracing::debug!(
                intercept = %service, conn = opened.id,
                client.pid = client.as_ref().map(|p| p.pid), client.exe = client.as_ref().and_then(|p| p.executable.as_deref()),
                server.pid = server.as_ref().map(|p| p.pid), server.exe = server.as_ref().and_then(|p| p.executable.as_deref()),
                "connection peers"
            );
            let conn = Arc::new(ConnMeta {
                id: opened.id,
                service,
                transport,
                listen,
                upstream,
                client,
                server,
                capture_payloads,
            });
            observer.run_captured(conn, rx, metrics, followers).await;
        }
    }
}
