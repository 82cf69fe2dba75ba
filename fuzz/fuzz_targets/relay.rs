//! The relay (`relay::copy::Relay`) over in-memory duplex streams on a current-thread runtime,
//! with a tap on a real observer queue consumed by a real `Observer` (sniffing, gRPC or HTTP
//! session, schema), or a tap the fuzzer lets overflow. The client writes the c2s records, the
//! upstream the s2c records, each as separate writes at the record boundaries, each side
//! half-closing at its first EOF record (or at the end).
//! Properties: the upstream receives exactly the client's bytes and the client exactly the
//! upstream's, whatever the splits, pipe sizes, relay buffer size or tap depth; the relay
//! reports those counts; and the observer ends every call it started.
//! Input: selector byte (bits 0-1 pipe size, 2-3 relay buffer size, 4-5 tap depth, 6 tap off),
//! then the record format. Keep inputs small (-max_len): each run builds a runtime.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use runtime_tap::metrics::InterceptMetrics;
use runtime_tap::observe::Observer;
use runtime_tap::observe::docker_ids::DockerIds;
use runtime_tap::relay::copy::Relay;
use runtime_tap::relay::tap::Tap;
use runtime_tap::schema::Schema;
use runtime_tap::trace::call::Clock;
use runtime_tap::wire::Direction;
use runtime_tap_fuzz::session::{Ledger, conn};
use runtime_tap_fuzz::{Record, records, split_first};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Writes `chunks` one write each, half-closes, and meanwhile reads everything the other way.
async fn peer(stream: DuplexStream, chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let write = async move {
        for c in chunks {
            wr.write_all(&c).await.expect("write into the relay");
        }
        wr.shutdown().await.expect("half-close towards the relay");
    };
    let read = async move {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.expect("read from the relay");
        got
    };
    tokio::join!(write, read).1
}

fn side(recs: &[Record<'_>], dir: Direction) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in recs {
        match *r {
            Record::Data(d, b) if d == dir => out.push(b.to_vec()),
            Record::Eof(d) if d == dir => break,
            _ => {}
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let (selector, input) = split_first(input);
    let pipe = [1, 7, 64, 64 * 1024][usize::from(selector & 3)];
    let buffer = [1, 16, 512, 16 * 1024][usize::from((selector >> 2) & 3)];
    let depth = [1, 2, 8, 256][usize::from((selector >> 4) & 3)];
    let tap_on = selector & 0x40 == 0;
    let recs = records(input);
    let c2s = side(&recs, Direction::ClientToServer);
    let s2c = side(&recs, Direction::ServerToClient);
    let want_up: Vec<u8> = c2s.concat();
    let want_client: Vec<u8> = s2c.concat();

    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let ledger = Arc::new(Ledger::default());
    let (got_up, got_client, result) = rt.block_on(async {
        let (client_app, mut client_proxy) = tokio::io::duplex(pipe);
        let (mut up_proxy, up_app) = tokio::io::duplex(pipe);
        let metrics = InterceptMetrics::new("fuzz");
        let (mut tap, rx) = if tap_on {
            let (tap, rx) = Tap::new(depth, 8 << 20, Arc::clone(&metrics));
            (tap, Some(rx))
        } else {
            (Tap::off(Arc::clone(&metrics)), None)
        };
        let observer = Arc::new(Observer {
            sink: ledger.clone(),
            clock: Clock::new(),
            schema: Schema::builtin(),
            docker_ids: Arc::new(DockerIds::new()),
        });
        let observe = async {
            if let Some(rx) = rx {
                observer.run(conn(false), rx, Arc::clone(&metrics)).await;
            }
        };
        let relay = async {
            let r = Relay::new(&mut client_proxy, &mut up_proxy, &mut tap, buffer).await;
            tap.close();
            // The relay owner closes both sockets when it is done.
            drop(client_proxy);
            drop(up_proxy);
            r
        };
        let (got_client, got_up, result, ()) = tokio::join!(peer(client_app, c2s), peer(up_app, s2c), relay, observe);
        (got_up, got_client, result)
    });
    let counts = result.expect("relay failed between two well-behaved peers");
    assert!(
        got_up == want_up,
        "upstream got {} bytes, client sent {}",
        got_up.len(),
        want_up.len()
    );
    assert!(
        got_client == want_client,
        "client got {} bytes, upstream sent {}",
        got_client.len(),
        want_client.len()
    );
    assert_eq!(counts, [want_up.len() as u64, want_client.len() as u64]);
    drop(rt);
    // Every call the observer started has ended.
    ledger.assert_settled();
});
