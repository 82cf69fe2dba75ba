//! gRPC over HTTP/2 (`GrpcDecoder::feed`/`eof`) on raw bytes: both directions, fuzz-chosen
//! read splits, default or small limits, payloads switched off and on mid-way (load shedding).
//! Properties: no panic; nothing after `GaveUp`; `buffered_bytes()` within the documented
//! bound after every chunk, and back to 0 once the connection ended; a message's data never
//! longer than its caps; events independent of how the reads were split (`feed` vs. the
//! zero-copy `feed_bytes` on coalesced reads).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runtime_tap::wire::Direction;
use runtime_tap::wire::grpc::{Anomaly, GrpcDecoder, GrpcEvent, Message};
use runtime_tap_fuzz::{Record, coalesce, grpc_buffer_bound, grpc_limits, records, split_first};

fn check_events(events: &[GrpcEvent], limits: &runtime_tap::wire::grpc::Limits) {
    let mut gave_up = false;
    for e in events {
        assert!(!gave_up, "event after GaveUp: {e:?}");
        match e {
            GrpcEvent::GaveUp(_) => gave_up = true,
            GrpcEvent::RequestMessage { message, .. } | GrpcEvent::ResponseMessage { message, .. } => {
                check_message(message, limits)
            }
            _ => {}
        }
    }
}

fn check_message(m: &Message, limits: &runtime_tap::wire::grpc::Limits) {
    assert!(m.data.is_none() || m.skipped.is_none(), "data and a skip reason: {m:?}");
    if let Some(d) = &m.data {
        if m.compressed {
            assert!(d.len() <= limits.max_decompressed, "decompressed over the cap: {m:?}");
        } else {
            assert_eq!(d.len() as u64, m.len, "data length differs from the prefix: {m:?}");
            assert!(d.len() <= limits.max_message);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let (selector, input) = split_first(input);
    let limits = grpc_limits(selector);
    let bound = grpc_buffer_bound(&limits);
    // Bit 1: shed payloads for the middle third of the records.
    let shed = selector & 2 != 0;
    let recs = records(input);

    let mut dec = GrpcDecoder::new(limits);
    let mut events = Vec::new();
    let third = recs.len() / 3;
    for (n, r) in recs.iter().enumerate() {
        if shed {
            dec.set_payloads(!(third..2 * third).contains(&n));
        }
        match *r {
            Record::Data(dir, bytes) => dec.feed(dir, bytes, &mut events),
            Record::Eof(dir) => dec.eof(dir, &mut events),
        }
        assert!(
            dec.buffered_bytes() <= bound,
            "buffered {} > {bound}",
            dec.buffered_bytes()
        );
        assert!(dec.open_streams() <= limits.max_streams);
    }
    dec.eof(Direction::ClientToServer, &mut events);
    dec.eof(Direction::ServerToClient, &mut events);
    check_events(&events, &limits);
    assert_eq!(dec.open_streams(), 0, "streams open after both EOFs");
    assert_eq!(dec.buffered_bytes(), 0, "bytes held after both EOFs");

    if shed {
        return;
    }
    let mut joined = GrpcDecoder::new(limits);
    let mut events2 = Vec::new();
    for (dir, bytes) in coalesce(&recs) {
        match bytes {
            Some(b) => joined.feed_bytes(dir, Bytes::from(b), &mut events2),
            None => joined.eof(dir, &mut events2),
        }
    }
    joined.eof(Direction::ClientToServer, &mut events2);
    joined.eof(Direction::ServerToClient, &mut events2);
    // DataAfterEof is reported per chunk, so it is the one split-dependent event.
    let keep = |e: &&GrpcEvent| !matches!(e, GrpcEvent::Anomaly(Anomaly::DataAfterEof));
    let a: Vec<&GrpcEvent> = events.iter().filter(keep).collect();
    let b: Vec<&GrpcEvent> = events2.iter().filter(keep).collect();
    runtime_tap_fuzz::assert_same_events(&a, &b);
});
