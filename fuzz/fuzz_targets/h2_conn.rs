//! HTTP/2 connection feed (`H2Conn::feed`/`eof`, both directions, fuzz-chosen read splits).
//! Properties: no panic; the handler contract holds (a stream opens with its request headers,
//! ends once, gets nothing after its direction ended or after a give-up); buffers stay under
//! the documented bounds; the events do not depend on how the reads were split.
#![no_main]

use std::collections::HashSet;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runtime_tap::wire::Direction;
use runtime_tap::wire::h2::conn::{H2Conn, H2Limits, Handler, HeaderRole, StreamId};
use runtime_tap::wire::h2::hpack::Headers;
use runtime_tap::wire::h2::{Anomaly, GiveUp, StreamEnd};
use runtime_tap_fuzz::{Record, coalesce, grpc_buffer_bound, grpc_limits, records, split_first};

#[derive(Default)]
struct St {
    opened: bool,
    done: [bool; 2],
}

#[derive(Debug, PartialEq)]
enum Ev {
    Headers(Direction, StreamId, HeaderRole, Vec<(String, String)>),
    Data(Direction, StreamId, Vec<u8>),
    EndOfDirection(Direction, StreamId),
    StreamEnd(StreamId, StreamEnd),
    Anomaly(Anomaly),
    GaveUp(GiveUp),
}

#[derive(Default)]
struct Check {
    log: Vec<Ev>,
    open: HashSet<StreamId>,
    gave_up: bool,
}

impl Check {
    fn alive(&self) {
        assert!(!self.gave_up, "handler called after gave_up");
    }
}

impl Handler for Check {
    type Stream = St;

    fn headers(&mut self, dir: Direction, id: StreamId, st: &mut St, role: HeaderRole, headers: Headers) {
        self.alive();
        if role == HeaderRole::Request {
            assert!(
                !st.opened && dir == Direction::ClientToServer,
                "request headers twice on {id}"
            );
            st.opened = true;
            assert!(self.open.insert(id), "stream {id} opened twice");
        } else {
            assert!(st.opened && self.open.contains(&id), "{role:?} on unopened stream {id}");
        }
        assert!(!st.done[dir.index()], "headers after end of direction on {id}");
        self.log.push(Ev::Headers(dir, id, role, headers.into_vec()));
    }

    fn data(&mut self, dir: Direction, id: StreamId, st: &mut St, data: &[u8], _owner: Option<&Bytes>) {
        self.alive();
        assert!(st.opened && self.open.contains(&id), "data on unopened stream {id}");
        assert!(!st.done[dir.index()], "data after end of direction on {id}");
        assert!(!data.is_empty(), "empty data piece");
        // Pieces are joined so that the log does not depend on read splits.
        match self.log.last_mut() {
            Some(Ev::Data(d, s, buf)) if *d == dir && *s == id => buf.extend_from_slice(data),
            _ => self.log.push(Ev::Data(dir, id, data.to_vec())),
        }
    }

    fn end_of_direction(&mut self, dir: Direction, id: StreamId, st: &mut St) {
        self.alive();
        assert!(st.opened && !st.done[dir.index()], "end of direction twice on {id}");
        st.done[dir.index()] = true;
        self.log.push(Ev::EndOfDirection(dir, id));
    }

    fn stream_end(&mut self, id: StreamId, st: St, end: StreamEnd) {
        self.alive();
        assert!(st.opened && self.open.remove(&id), "stream {id} ended but not open");
        if end == StreamEnd::Complete {
            assert!(st.done == [true, true], "complete stream {id} without both ends");
        }
        self.log.push(Ev::StreamEnd(id, end));
    }

    fn anomaly(&mut self, anomaly: Anomaly) {
        self.alive();
        self.log.push(Ev::Anomaly(anomaly));
    }

    fn gave_up(&mut self, reason: GiveUp) {
        self.alive();
        self.gave_up = true;
        self.open.clear();
        self.log.push(Ev::GaveUp(reason));
    }
}

fn limits(selector: u8) -> H2Limits {
    grpc_limits(selector).h2()
}

fuzz_target!(|input: &[u8]| {
    let (selector, input) = split_first(input);
    let limits = limits(selector);
    let bound = grpc_buffer_bound(&grpc_limits(selector));
    let recs = records(input);

    let mut conn: H2Conn<St> = H2Conn::new(limits);
    let mut check = Check::default();
    for r in &recs {
        match *r {
            Record::Data(dir, bytes) => conn.feed(dir, bytes, None, &mut check),
            Record::Eof(dir) => conn.eof(dir, &mut check),
        }
        assert!(
            conn.buffered_bytes() <= bound,
            "buffered {} > {bound}",
            conn.buffered_bytes()
        );
        assert!(conn.open_streams() <= limits.max_streams);
        assert_eq!(
            conn.open_streams(),
            check.open.len(),
            "stream table and handler disagree"
        );
    }
    conn.eof(Direction::ClientToServer, &mut check);
    conn.eof(Direction::ServerToClient, &mut check);
    assert_eq!(conn.open_streams(), 0, "streams left open after both EOFs");

    // The same bytes read in bigger pieces give the same events.
    let mut joined: H2Conn<St> = H2Conn::new(limits);
    let mut check2 = Check::default();
    for (dir, bytes) in coalesce(&recs) {
        match bytes {
            Some(b) => joined.feed(dir, &b, None, &mut check2),
            None => joined.eof(dir, &mut check2),
        }
    }
    joined.eof(Direction::ClientToServer, &mut check2);
    joined.eof(Direction::ServerToClient, &mut check2);
    // DataAfterEof is reported per chunk, so it is the one split-dependent event.
    let keep = |e: &&Ev| !matches!(e, Ev::Anomaly(Anomaly::DataAfterEof));
    let a: Vec<&Ev> = check.log.iter().filter(keep).collect();
    let b: Vec<&Ev> = check2.log.iter().filter(keep).collect();
    runtime_tap_fuzz::assert_same_events(&a, &b);
});
