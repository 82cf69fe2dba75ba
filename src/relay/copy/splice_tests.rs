//! The relay over real sockets (unix and tcp), where directions nothing reads are spliced:
//! bytes exact both ways, half-close each way, the switch from the copy loop mid-connection,
//! exact counts, and the cases that must keep the copy loop (a walker or rewriter following).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use super::*;
use crate::metrics::InterceptMetrics;
use crate::relay::rewrite::Rewriter;
use crate::relay::stream::Stream;
use crate::relay::tap::TapReceiver;
use crate::wire::inject::Injection;

const BUF: usize = 64 * 1024;
const BULK: usize = 8 << 20;

fn mint() -> (Injection, String) {
    let i = Injection {
        trace_id: [1; 16],
        span_id: [2; 8],
    };
    (i, format!("00-{}-{}-01", "01".repeat(16), "02".repeat(8)))
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Unix,
    Tcp,
}

/// A connected pair: the relay's end and the application's end.
async fn pair(t: Transport) -> (Stream, Stream) {
    match t {
        Transport::Unix => {
            let (a, b) = UnixStream::pair().unwrap();
            (Stream::Unix(a), Stream::Unix(b))
        }
        Transport::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (c, a) = tokio::join!(TcpStream::connect(addr), l.accept());
            (Stream::Tcp(a.unwrap().0), Stream::Tcp(c.unwrap()))
        }
    }
}

/// `len` random bytes from `seed`, so a lost, doubled or reordered block shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Writes `data` in odd-sized pieces, then half-closes.
async fn send(s: &mut Stream, data: &[u8]) {
    for piece in data.chunks(300_001) {
        s.write_all(piece).await.unwrap();
    }
    s.shutdown().await.unwrap();
}

/// Writes `data` and half-closes while reading what comes until EOF.
async fn both(s: Stream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let write = async {
        for piece in data.chunks(300_001) {
            w.write_all(piece).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    tokio::join!(read, write).0
}

async fn recv(s: &mut Stream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    got
}

struct Outcome {
    counts: ByteCounts,
    spliced: [u64; 2],
}

fn metered(m: &InterceptMetrics) -> ([u64; 2], [u64; 2]) {
    let d = [Direction::ClientToServer, Direction::ServerToClient];
    (d.map(|d| m.bytes(d)), d.map(|d| m.spliced(d)))
}

/// The order in which the two sides speak and half-close.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// The client sends and half-closes; the upstream answers after that EOF.
    ClientFirst,
    /// The upstream sends and half-closes; the client sends after that EOF.
    UpstreamFirst,
    /// Both send at once while reading.
    Both,
}

/// Relays `up` bytes client -> upstream and `down` back, over `t`, with `tap` and (optionally)
/// a drain walker and a rewriter; checks every byte and returns the counts.
async fn relay(t: Transport, order: Order, (up, down): (usize, usize), taps: Taps, walkers: bool) -> Outcome {
    let metrics = InterceptMetrics::new("t");
    let (mut tap, rx) = taps.make(&metrics);
    let (mut client_end, mut client_app) = pair(t).await;
    let (mut up_end, mut up_app) = pair(t).await;
    let mut relay = Relay::new(&mut client_end, &mut up_end, &mut tap, BUF);
    if walkers {
        relay = relay.with_rewriter(Rewriter::new(mint)).with_drain();
    }
    let (a, b) = (pattern(1, up), pattern(2, down));
    let client = async {
        taps.after_first(rx).await;
        match order {
            Order::ClientFirst => {
                send(&mut client_app, &a).await;
                recv(&mut client_app).await
            }
            Order::UpstreamFirst => {
                let got = recv(&mut client_app).await;
                send(&mut client_app, &a).await;
                got
            }
            Order::Both => both(client_app, &a).await,
        }
    };
    let upstream = async {
        match order {
            Order::ClientFirst => {
                let got = recv(&mut up_app).await;
                send(&mut up_app, &b).await;
                got
            }
            Order::UpstreamFirst => {
                send(&mut up_app, &b).await;
                recv(&mut up_app).await
            }
            Order::Both => both(up_app, &b).await,
        }
    };
    let (counts, at_client, at_upstream) = tokio::join!(&mut relay, client, upstream);
    drop(relay);
    let counts = counts.unwrap();
    assert!(
        at_upstream == a,
        "client bytes differ at the upstream ({t:?}, {order:?})"
    );
    assert!(at_client == b, "upstream bytes differ at the client ({t:?}, {order:?})");
    assert_eq!(counts, [up as u64, down as u64]);
    let (metered, spliced) = metered(&metrics);
    assert_eq!(metered, counts, "/metrics bytes are the relay's counts");
    Outcome { counts, spliced }
}

/// What taps the connection.
#[derive(Clone, Copy, Debug)]
enum Taps {
    /// Decoding off: nothing taps it from the start.
    Off,
    /// An observer that lets go (a give-up, or an opaque protocol sniffed) once the first client
    /// bytes are through: the relay switches from the copy loop to splice mid-connection.
    LetGoAfterFirstBytes,
}

impl Taps {
    fn make(self, m: &Arc<InterceptMetrics>) -> (Tap, Option<TapReceiver>) {
        match self {
            Taps::Off => (Tap::off(Arc::clone(m)), None),
            Taps::LetGoAfterFirstBytes => {
                let (tap, rx) = Tap::new(1 << 16, 1 << 30, Arc::clone(m));
                (tap, Some(rx))
            }
        }
    }

    /// Waits for the first chunk the observer gets, then drops it (the tap sees its queue
    /// closed at the next offer).
    async fn after_first(self, rx: Option<TapReceiver>) {
        let Some(mut rx) = rx else { return };
        // The first client chunk is only read once the client writes: start it writing.
        tokio::spawn(async move {
            let _ = rx.recv().await;
            drop(rx);
        });
    }
}

/// Every transport, order and tap: bulk both ways, exact, and (but for the first chunk or two
/// the copy loop reads before it knows the direction streams bulk) spliced.
#[tokio::test]
async fn bulk_is_spliced_both_ways_byte_exact_with_half_close_each_way() {
    for t in [Transport::Unix, Transport::Tcp] {
        for order in [Order::ClientFirst, Order::UpstreamFirst, Order::Both] {
            for taps in [Taps::Off, Taps::LetGoAfterFirstBytes] {
                let o = relay(t, order, (BULK, BULK + 12_345), taps, false).await;
                for d in 0..2 {
                    assert!(
                        o.spliced[d] > 0 && o.counts[d] - o.spliced[d] <= 4 * BULK_CAPACITY as u64,
                        "{t:?} {order:?} {taps:?}: direction {d}: spliced {:?} of {:?}",
                        o.spliced,
                        o.counts
                    );
                }
            }
        }
    }
}

/// Small exchanges stay in the copy loop (no pipe for a chatty or idle connection), and an
/// empty direction is exact too.
#[tokio::test]
async fn small_or_empty_directions_are_not_spliced_and_stay_exact() {
    for t in [Transport::Unix, Transport::Tcp] {
        let o = relay(t, Order::ClientFirst, (1000, 0), Taps::Off, false).await;
        assert_eq!(o.spliced, [0, 0]);
        let o = relay(t, Order::UpstreamFirst, (0, BULK), Taps::Off, false).await;
        assert_eq!(o.counts, [0, BULK as u64]);
        assert!(o.spliced[1] > 0 && o.spliced[0] == 0, "{:?}", o.spliced);
    }
}

/// An opaque connection with the drain walker and the propagation rewriter on (decoding on):
/// both pass opaque bytes through untouched, so the relay splices.
#[tokio::test]
async fn an_opaque_connection_with_walker_and_rewriter_is_spliced() {
    let o = relay(
        Transport::Unix,
        Order::Both,
        (BULK, BULK),
        Taps::LetGoAfterFirstBytes,
        true,
    )
    .await;
    assert!(o.spliced[0] > 0 && o.spliced[1] > 0, "{:?}", o.spliced);
}

/// An HTTP/1 upload the drain walker and the rewriter follow (they need every byte: the
/// shutdown drain's `Connection: close`, the traceparent of the next request) is never
/// spliced, even with the tap off, and its bytes are exact.
#[tokio::test]
async fn a_followed_http1_connection_keeps_the_copy_loop() {
    let metrics = InterceptMetrics::new("t");
    let mut tap = Tap::off(Arc::clone(&metrics));
    let (mut client_end, mut client_app) = pair(Transport::Unix).await;
    let (mut up_end, mut up_app) = pair(Transport::Unix).await;
    let mut relay = Relay::new(&mut client_end, &mut up_end, &mut tap, BUF)
        .with_rewriter(Rewriter::new(mint))
        .with_drain();
    let body = pattern(3, BULK);
    let mut req = format!(
        "PUT /blob HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    let client = async {
        send(&mut client_app, &req).await;
        recv(&mut client_app).await
    };
    let upstream = async {
        let got = recv(&mut up_app).await;
        send(&mut up_app, &resp).await;
        got
    };
    let (counts, at_client, at_upstream) = tokio::join!(&mut relay, client, upstream);
    drop(relay);
    assert_eq!(at_client, resp);
    // The rewriter added exactly one traceparent to the head; the body is exact.
    assert!(at_upstream.ends_with(&body) && at_upstream.len() > req.len());
    assert_eq!(counts.unwrap(), [req.len() as u64, resp.len() as u64]);
    assert_eq!(metered(&metrics).1, [0, 0], "nothing spliced");
}
