//! The observer of one connection: takes the tap's chunks in relay order, tells the protocol
//! from the first client bytes, and feeds the matching protocol session, which turns the
//! decoder's events into calls. It runs beside the relay and may fall behind it; it never
//! holds up a byte. When it falls far behind it sheds load in steps (DESIGN.md invariant 3):
//! first payloads, and only when the tap queue overflows the whole connection.

pub mod docker_ids;
pub mod grpc;
pub mod http;
pub mod session;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::conn::LongLived;
use crate::metrics::InterceptMetrics;
use crate::relay::tap::{TapEvent, TapReceiver};
use crate::schema::Schema;
use crate::trace::call::{CallSink, Clock, ConnMeta};
use crate::wire::Direction;
use crate::wire::inject::Injection;
use crate::wire::sniff::{Protocol, Sniffer};
use session::{Session, SessionCtx};

/// Shared by all connections of the process.
pub struct Observer {
    pub sink: Arc<dyn CallSink>,
    pub clock: Clock,
    pub schema: Schema,
    /// Docker container names and short ids seen, to resolve references to full ids.
    pub docker_ids: Arc<docker_ids::DockerIds>,
}

/// A consumer of a connection's tap besides its decoder (the raw capture, the flight
/// recorder), fed every event in relay order from the observer's task. It must never block:
/// what it cannot keep it drops and counts.
pub trait TapFollower: Send {
    fn event(&mut self, event: &TapEvent);
    /// Whether it still wants the bytes once nothing decodes the connection (opaque, or
    /// decoding given up). The raw capture does; the flight recorder, whose dumps are made
    /// for decoded calls, does not, so an opaque bulk stream costs it nothing.
    fn wants_undecoded(&self) -> bool {
        true
    }
}

/// The connection's protocol, once known.
enum State {
    /// Collecting the first client bytes (bounded by the sniffer's need), the chunks that
    /// carried them, and the identities propagation gave to requests in them.
    Sniffing(Sniffer, Vec<(Direction, Instant, Bytes)>, Vec<Injection>),
    Decoding(Box<dyn Session>),
    /// Opaque protocol, or decoding given up: only counted (by the relay), and without a
    /// capture the observer stops reading.
    Counting,
}

/// Chunks held back while the protocol is unknown (server bytes that arrive first, usually
/// none); past it the connection is treated as opaque.
const MAX_SNIFF_HELD: usize = 64;

impl Observer {
    /// Observe one connection until its tap closes.
    pub async fn run(self: Arc<Self>, conn: Arc<ConnMeta>, rx: TapReceiver, metrics: Arc<InterceptMetrics>) {
        self.run_captured(conn, rx, metrics, Vec::new()).await;
    }

    /// As `run`, also handing every event to the connection's followers (raw capture,
    /// flight recorder) before the decoder sees it, so that a call ending on this event finds
    /// its bytes recorded.
    pub async fn run_captured(
        self: Arc<Self>,
        conn: Arc<ConnMeta>,
        mut rx: TapReceiver,
        metrics: Arc<InterceptMetrics>,
        mut followers: Vec<Box<dyn TapFollower>>,
    ) {
        // Shedding thresholds, as a fraction of the tap queue (events or bytes).
        const HIGH_WATER: f64 = 0.75;
        const LOW_WATER: f64 = 0.25;
        let mut shedding = false;
        let mut state = State::Sniffing(Sniffer::default(), Vec::new(), Vec::new());
        // The decoder's buffered bytes reserved against the process-wide budget.
        let budget = Arc::clone(rx.budget());
        let mut reserved = 0;
        let long_lived = rx.long_lived();
        while let Some(event) = rx.recv().await {
            for f in &mut followers {
                f.event(&event);
            }
            // Step 1 of shedding: payloads off past the high-water mark of this connection's
            // queue or of the process-wide budget, back on when both drained.
            let backlog = rx.fill().max(budget.fill());
            if let State::Decoding(session) = &mut state {
                if !shedding && backlog >= HIGH_WATER {
                    shedding = true;
                    metrics.payload_sheds.inc();
                    session.payloads(false);
                } else if shedding && backlog <= LOW_WATER {
                    shedding = false;
                    session.payloads(true);
                }
            }
            state = self.next(state, event, &conn, &metrics, &long_lived);
            // Step 2 at the process-wide limit: a decoder that needs more than the budget has
            // left gives up (counted); its calls end incomplete, bytes keep flowing.
            state = match state {
                State::Decoding(mut s) => {
                    let wanted = s.buffered_bytes();
                    if budget.resize(reserved, wanted) {
                        reserved = wanted;
                        State::Decoding(s)
                    } else {
                        metrics.tap_give_ups.decode_memory.inc();
                        tracing::debug!(intercept = %conn.service, conn = conn.id, wanted, "decode memory limit reached; decoding of this connection given up");
                        s.closed(Instant::now());
                        State::Counting
                    }
                }
                other => other,
            };
            if !matches!(state, State::Decoding(_)) {
                budget.release(std::mem::take(&mut reserved));
            }
            // Nothing left to decode (opaque, or decoding given up) and no follower wanting the
            // bytes: stop taking them. Dropping the queue tells the relay, which then stops
            // offering chunks (its byte counts go on), so an opaque bulk stream costs no more
            // than with decoding off.
            if matches!(state, State::Counting) {
                followers.retain(|f| f.wants_undecoded());
                if followers.is_empty() {
                    break;
                }
            }
        }
        budget.release(reserved);
        // The queue closed without `Closed`: the tap overflowed and gave up on this connection
        // (counted there). Open calls end now, incomplete, so each is still accounted for.
        if let State::Decoding(mut s) = state {
            s.closed(Instant::now());
        }
    }

    /// The connection's state after one tap event.
    fn next(
        &self,
        state: State,
        event: TapEvent,
        conn: &Arc<ConnMeta>,
        metrics: &InterceptMetrics,
        long_lived: &LongLived,
    ) -> State {
        match (state, event) {
            (State::Sniffing(sniffer, early, mut injected), TapEvent::Injected(i)) => {
                if injected.len() < MAX_SNIFF_HELD {
                    injected.push(i);
                }
                State::Sniffing(sniffer, early, injected)
            }
            (State::Sniffing(mut sniffer, mut early, injected), TapEvent::Data { dir, at, bytes }) => {
                let client = if dir == Direction::ClientToServer {
                    &bytes[..]
                } else {
                    &[]
                };
                let verdict = sniffer.feed(client);
                early.push((dir, at, bytes));
                match verdict {
                    None if early.len() < MAX_SNIFF_HELD => State::Sniffing(sniffer, early, injected),
                    verdict => {
                        let protocol = verdict.unwrap_or(Protocol::Opaque);
                        self.start(conn, metrics, protocol, (early, injected), long_lived)
                    }
                }
            }
            // Ended before the protocol was known: opaque, nothing to decode.
            (State::Sniffing(_, early, injected), TapEvent::Eof { .. } | TapEvent::Closed { .. }) => {
                self.start(conn, metrics, Protocol::Opaque, (early, injected), long_lived)
            }
            (State::Decoding(mut s), TapEvent::Data { dir, at, bytes }) => {
                s.data(dir, at, bytes);
                self.after_feed(s, metrics)
            }
            (State::Decoding(mut s), TapEvent::Injected(i)) => {
                s.injected(i);
                State::Decoding(s)
            }
            (State::Decoding(mut s), TapEvent::Eof { dir, at }) => {
                s.eof(dir, at);
                self.after_feed(s, metrics)
            }
            (State::Decoding(mut s), TapEvent::Closed { at }) => {
                s.closed(at);
                s.take_skipped(&mut |reason, n| metrics.payloads_skipped(reason, n));
                State::Counting
            }
            (state, _) => state,
        }
    }

    /// Start the session the sniffer chose and replay the chunks that came before into it.
    fn start(
        &self,
        conn: &Arc<ConnMeta>,
        metrics: &InterceptMetrics,
        protocol: Protocol,
        (early, injected): (Vec<(Direction, Instant, Bytes)>, Vec<Injection>),
        long_lived: &LongLived,
    ) -> State {
        metrics.sniffed(protocol).inc();
        tracing::debug!(intercept = %conn.service, conn = conn.id, protocol = protocol.as_str(), "protocol sniffed");
        let ctx = SessionCtx {
            conn: Arc::clone(conn),
            sink: Arc::clone(&self.sink),
            clock: self.clock,
            long_lived: long_lived.clone(),
        };
        let Some(mut session) = self.session(protocol, ctx) else {
            return State::Counting;
        };
        for i in injected {
            session.injected(i);
        }
        for (dir, at, bytes) in early {
            session.data(dir, at, bytes);
        }
        self.after_feed(session, metrics)
    }

    fn session(&self, protocol: Protocol, ctx: SessionCtx) -> Option<Box<dyn Session>> {
        match protocol {
            Protocol::Http2 => Some(Box::new(grpc::GrpcSession::new(ctx, self.schema.clone()))),
            Protocol::Http1 => Some(Box::new(http::HttpSession::new(ctx, Arc::clone(&self.docker_ids)))),
            Protocol::Opaque => None,
        }
    }

    /// After feeding: a session whose decoder gave up is dropped to counting (reason counted).
    fn after_feed(&self, mut session: Box<dyn Session>, metrics: &InterceptMetrics) -> State {
        session.take_skipped(&mut |reason, n| metrics.payloads_skipped(reason, n));
        match session.gave_up() {
            None => State::Decoding(session),
            Some(reason) => {
                metrics.decoder_give_up(reason);
                State::Counting
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::relay::tap::Tap;
    use crate::trace::call::{Call, CallStart, StreamEvent};

    struct Ignore;

    /// Collects ended calls.
    #[derive(Default)]
    struct Ended(std::sync::Mutex<Vec<Call>>);

    impl CallSink for Ended {
        fn started(&self, _: &CallStart) {}
        fn ended(&self, call: Call) {
            self.0.lock().unwrap().push(call);
        }
        fn event(&self, _: StreamEvent) {}
    }

    impl CallSink for Ignore {
        fn started(&self, _: &CallStart) {}
        fn ended(&self, _: Call) {}
        fn event(&self, _: StreamEvent) {}
    }

    /// An opaque stream's observer stops once the sniffer has decided, without waiting for
    /// the connection to end, and the relay's tap then stops offering it chunks; the bytes
    /// are still counted.
    #[tokio::test]
    async fn an_opaque_connection_is_no_longer_tapped_once_sniffed() {
        let metrics = InterceptMetrics::new("bulk");
        let (mut tap, rx) = Tap::new(64, 1 << 20, Arc::clone(&metrics));
        let observer = Arc::new(Observer {
            sink: Arc::new(Ignore),
            clock: Clock::new(),
            schema: Schema::builtin(),
            docker_ids: Arc::default(),
        });
        let conn = test_conn(1, "bulk");
        let task = tokio::spawn(observer.run_captured(conn, rx, Arc::clone(&metrics), Vec::new()));
        let first = Bytes::from_static(b"\x00\x01\x02 not a protocol we know");
        let first_len = first.len() as u64;
        tap.offer(Direction::ClientToServer, first);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the observer stops before the connection ends")
            .expect("observer task");
        tap.offer(Direction::ClientToServer, Bytes::from(vec![7u8; 4096]));
        assert!(!tap.is_tapping());
        assert_eq!(metrics.bytes(Direction::ClientToServer), first_len + 4096);
    }

    /// A follower that counts what it is given and says whether it wants undecoded bytes.
    struct Counting(Arc<std::sync::atomic::AtomicUsize>, bool);

    impl TapFollower for Counting {
        fn event(&mut self, _: &TapEvent) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn wants_undecoded(&self) -> bool {
            self.1
        }
    }

    /// An opaque connection keeps being read for a follower that wants its bytes (the raw
    /// capture) and no longer for one that does not (the flight recorder).
    #[tokio::test]
    async fn followers_that_want_no_undecoded_bytes_let_an_opaque_connection_go() {
        for wants in [false, true] {
            let metrics = InterceptMetrics::new("bulk");
            let (mut tap, rx) = Tap::new(64, 1 << 20, Arc::clone(&metrics));
            let observer = Arc::new(Observer {
                sink: Arc::new(Ignore),
                clock: Clock::new(),
                schema: Schema::builtin(),
                docker_ids: Arc::default(),
            });
            let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let follower: Box<dyn TapFollower> = Box::new(Counting(Arc::clone(&seen), wants));
            let task = tokio::spawn(observer.run_captured(test_conn(3, "bulk"), rx, metrics, vec![follower]));
            tap.offer(Direction::ClientToServer, Bytes::from_static(b"\x00\x01 opaque"));
            let ended = tokio::time::timeout(Duration::from_millis(500), task).await.is_ok();
            assert_eq!(ended, !wants, "wants_undecoded = {wants}");
            assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1);
            tap.offer(Direction::ClientToServer, Bytes::from_static(b"more"));
            assert_eq!(tap.is_tapping(), wants);
        }
    }

    /// A unix connection with no known peers.
    fn test_conn(id: u64, service: &str) -> Arc<ConnMeta> {
        Arc::new(ConnMeta {
            id,
            service: Arc::from(service),
            transport: "unix",
            listen: "unix:///tap.sock".into(),
            upstream: "unix:///up.sock".into(),
            client: None,
            server: None,
            capture_payloads: false,
        })
    }

    /// Garbage after a valid HTTP/1.1 exchange: the decoder gives up, the give-up is counted
    /// with its reason on the intercept's metrics, the exchange before it is a complete call,
    /// and every byte still counts as relayed (the observer never touches the byte path).
    #[tokio::test]
    async fn http_garbage_mid_connection_gives_up_counted() {
        let metrics = InterceptMetrics::new("dockerd");
        let (mut tap, rx) = Tap::new(64, 1 << 20, Arc::clone(&metrics));
        let sink = Arc::new(Ended::default());
        let observer = Arc::new(Observer {
            sink: sink.clone(),
            clock: Clock::new(),
            schema: Schema::builtin(),
            docker_ids: Arc::default(),
        });
        let conn = test_conn(2, "dockerd");
        let task = tokio::spawn(observer.run_captured(conn, rx, Arc::clone(&metrics), Vec::new()));
        let chunks = [
            (
                Direction::ClientToServer,
                &b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n"[..],
            ),
            (
                Direction::ServerToClient,
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"[..],
            ),
            (
                Direction::ClientToServer,
                &b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"[..],
            ),
        ];
        let mut sent = [0u64; 2];
        for (dir, bytes) in chunks {
            tap.offer(dir, Bytes::from_static(bytes));
            sent[dir.index()] += bytes.len() as u64;
        }
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the observer stops once decoding is given up")
            .expect("observer task");
        assert_eq!(metrics.decoder_give_ups(), [("malformed_head", 1)]);
        let ended = sink.0.lock().unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].name, "GET /version");
        assert!(!ended[0].incomplete);
        // Bytes keep flowing and counting after the give-up.
        tap.offer(Direction::ClientToServer, Bytes::from_static(b"more garbage"));
        assert_eq!(metrics.bytes(Direction::ClientToServer), sent[0] + 12);
        assert_eq!(metrics.bytes(Direction::ServerToClient), sent[1]);
    }
}
