//! The wiring of relay, tap hook and observer, end to end in one process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::*;
use crate::conn::{Cred, Process};
use crate::relay::peer::{Lookup, Peers};
use crate::trace::call::{Call, CallStart, StreamEvent};

/// A process lookup that blocks until the test lets it go, as a search of /proc on a busy
/// node (or a socket-activated upstream's holder search) can.
struct HeldLookup {
    release: Mutex<std::sync::mpsc::Receiver<()>>,
    done: AtomicBool,
}

impl Lookup for HeldLookup {
    fn peers(&self, _: &Endpoint, client: Option<Cred>, server: Option<Cred>) -> Peers {
        let _ = self.release.lock().unwrap().recv_timeout(Duration::from_secs(30));
        self.done.store(true, Ordering::SeqCst);
        let named = |cred: Option<Cred>, exe: &str| {
            cred.and_then(|c| c.pid).map(|pid| Process {
                pid,
                uid: 0,
                gid: 0,
                executable: Some(exe.into()),
            })
        };
        Peers {
            client: named(client, "held-client"),
            server: named(server, "held-server"),
        }
    }
}

/// Ended calls, sent on as they end.
struct Calls(mpsc::UnboundedSender<Call>);

impl CallSink for Calls {
    fn started(&self, _: &CallStart) {}
    fn ended(&self, call: Call) {
        let _ = self.0.send(call);
    }
    fn event(&self, _: StreamEvent) {}
}

const PING: &[u8] = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n";
const PONG: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";

/// An upstream that answers each connection's one request.
fn answer_pings(listener: UnixListener) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; PING.len()];
                if s.read_exact(&mut head).await.is_ok() {
                    let _ = s.write_all(PONG).await;
                }
            });
        }
    });
}

/// The first byte of a connection is relayed (and answered) while the /proc lookup of its
/// peers is still running; the peers it then finds still reach the connection's calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_is_relayed_before_the_peer_lookup_completes() {
    let dir = std::env::temp_dir().join(format!("rtap-first-byte-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (listen, upstream) = (dir.join("tap.sock"), dir.join("up.sock"));
    answer_pings(UnixListener::bind(&upstream).unwrap());
    let ic = Intercept::new(
        "dockerd",
        Endpoint::Unix(listen.clone()),
        Endpoint::Unix(upstream.clone()),
    );
    let metrics = InterceptMetrics::new("dockerd");
    let (release, held) = std::sync::mpsc::channel();
    let lookup = Arc::new(HeldLookup {
        release: Mutex::new(held),
        done: AtomicBool::new(false),
    });
    let (calls_tx, mut calls) = mpsc::unbounded_channel();
    let observer = Arc::new(Observer {
        sink: Arc::new(Calls(calls_tx)),
        clock: Clock::new(),
        schema: Schema::builtin(),
        docker_ids: Arc::default(),
    });
    let taps = Arc::new(ConnectionTaps {
        config: ic.clone(),
        service: Arc::from("dockerd"),
        metrics: Arc::clone(&metrics),
        tap_queue: 64,
        tap_queue_bytes: 1 << 20,
        decode_budget: DecodeBudget::new(1 << 24),
        observer,
        capture: None,
        flight: None,
        peers: taps::Lookups::new(lookup.clone()),
    });
    let shared = Arc::new(Intercepted {
        config: ic.clone(),
        metrics: Arc::clone(&metrics),
        buffer_size: 64 * 1024,
        connect_timeout: Duration::from_secs(5),
        taps,
        limit: ConnectionLimit::new(None, Arc::clone(&metrics)),
        mint: crate::trace::context::mint,
    });
    let listener = Listener::bind(&ic.listen).await.unwrap();
    let (shutdown, tracker) = (relay::Shutdown::default(), TaskTracker::new());
    let stop = shutdown.stop.clone();
    let serving = tokio::spawn(relay::serve(shared, listener, shutdown, tracker.clone()));

    let mut client = UnixStream::connect(&listen).await.unwrap();
    client.write_all(PING).await.unwrap();
    let mut answer = vec![0u8; PONG.len()];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut answer))
        .await
        .expect("the answer came back while the peer lookup was held")
        .unwrap();
    assert_eq!(answer, PONG);
    assert!(
        !lookup.done.load(Ordering::SeqCst),
        "the lookup had not finished when the bytes went both ways"
    );

    release.send(()).unwrap();
    drop(client);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("the call ends once its connection closes")
        .unwrap();
    assert_eq!(call.name, "GET /_ping");
    let me = std::process::id();
    let exe = |p: &Option<Process>| p.as_ref().map(|p| (p.pid, p.executable.clone().unwrap_or_default()));
    assert_eq!(exe(&call.conn.client), Some((me, "held-client".into())));
    assert_eq!(exe(&call.conn.server), Some((me, "held-server".into())));

    stop.cancel();
    serving.await.unwrap();
    tracker.close();
    tracker.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
