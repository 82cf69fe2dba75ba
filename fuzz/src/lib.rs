//! Shared by the fuzz targets and the seed builder: the record format that turns fuzz bytes
//! into a connection's chunk sequence (and back, for seeds), and the decoder limits a
//! target picks from its first byte.
//!
//! Record format (one connection, both directions, in relay order): a header byte `h`, then
//! its bytes. `h & 0x80` is the direction (0 = client to server, 1 = server to client);
//! `n = h & 0x7f`: 0 is that direction's EOF (half-close), 1..=126 a chunk of `n` bytes, 127 a
//! chunk whose length is the next two bytes (big endian). A short last chunk takes what is
//! left. So the fuzzer chooses both the bytes and where the relay's reads split them.

use runtime_tap::wire::Direction;

/// One record: a chunk read on a direction, or that direction's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Data(Direction, &'a [u8]),
    Eof(Direction),
}

/// Parses the record format; never fails (a truncated record takes what is left).
pub fn records(mut input: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    while let Some((&h, rest)) = input.split_first() {
        input = rest;
        let dir = if h & 0x80 == 0 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        let n = match h & 0x7f {
            0 => {
                out.push(Record::Eof(dir));
                continue;
            }
            127 => {
                let Some((len, rest)) = input.split_first_chunk::<2>() else {
                    break;
                };
                input = rest;
                usize::from(u16::from_be_bytes(*len))
            }
            n => usize::from(n),
        };
        let (chunk, rest) = input.split_at(n.min(input.len()));
        input = rest;
        if !chunk.is_empty() {
            out.push(Record::Data(dir, chunk));
        }
    }
    out
}

/// Appends one chunk in the record format (split into several records above 64 KiB).
pub fn push_chunk(out: &mut Vec<u8>, dir: Direction, chunk: &[u8]) {
    let d = if dir == Direction::ServerToClient { 0x80 } else { 0 };
    for piece in chunk.chunks(usize::from(u16::MAX)) {
        if (1..=126).contains(&piece.len()) {
            out.push(d | piece.len() as u8);
        } else {
            out.push(d | 127);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(piece);
    }
}

/// Appends one direction's EOF in the record format.
pub fn push_eof(out: &mut Vec<u8>, dir: Direction) {
    out.push(if dir == Direction::ServerToClient { 0x80 } else { 0 });
}

/// The same records with adjacent chunks of one direction joined: what a relay with bigger
/// reads would have seen. A decoder's events must not depend on the difference.
pub fn coalesce(records: &[Record<'_>]) -> Vec<(Direction, Option<Vec<u8>>)> {
    let mut out: Vec<(Direction, Option<Vec<u8>>)> = Vec::new();
    for r in records {
        match r {
            Record::Data(dir, bytes) => match out.last_mut() {
                Some((d, Some(buf))) if d == dir => buf.extend_from_slice(bytes),
                _ => out.push((*dir, Some(bytes.to_vec()))),
            },
            Record::Eof(dir) => out.push((*dir, None)),
        }
    }
    out
}

/// The first byte of an input, and the rest.
pub fn split_first(input: &[u8]) -> (u8, &[u8]) {
    match input.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, &[]),
    }
}

/// gRPC decoder limits: the defaults (even selector) or small ones a short input can reach.
pub fn grpc_limits(selector: u8) -> runtime_tap::wire::grpc::Limits {
    use runtime_tap::wire::grpc::Limits;
    if selector & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_header_block: 512,
            max_streams: 4,
            max_message: 1024,
            max_decompressed: 2048,
            max_buffered_per_conn: 1536,
            max_hpack_table: 4096,
            max_header_list: 256,
        }
    }
}

/// The most a gRPC decoder may report as buffered under `limits`: message reservations, and
/// per direction one partial control frame (a HEADERS frame's block plus padding and
/// priority) and one pending header block (a `Vec` that may have doubled while growing).
pub fn grpc_buffer_bound(limits: &runtime_tap::wire::grpc::Limits) -> usize {
    let frame = limits.max_header_block + 1 + 255 + 5;
    limits.max_buffered_per_conn + 2 * (frame + 2 * limits.max_header_block)
}

/// HTTP/1.1 decoder limits: the defaults (even selector) or small ones.
pub fn h1_limits(selector: u8) -> runtime_tap::wire::h1::Limits {
    use runtime_tap::wire::h1::Limits;
    if selector & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head: 256,
            max_pipelined: 4,
            max_headers: 8,
            max_chunk_line: 32,
        }
    }
}

/// Drives a protocol session the way the observer does, over the record format, and checks
/// the call accounting: every call started ends exactly once (at the latest when the session
/// is closed or dropped), never before it started, and nothing is reported twice.
///
/// The selector byte: bit 0 payload capture on, bit 1 load shedding (payloads off) for the
/// middle third, bit 2 drop the session without `closed` (the tap-overflow path).
pub mod session {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use runtime_tap::observe::session::{Session, SessionCtx};
    use runtime_tap::trace::call::{Call, CallSink, CallStart, Clock, ConnMeta, StreamEvent};
    use runtime_tap::trace::span::SpanId;

    use super::{Record, records, split_first};

    /// Counts what the session hands over.
    #[derive(Default)]
    pub struct Ledger {
        inner: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        open: HashSet<SpanId>,
        ended: HashSet<SpanId>,
        started: usize,
    }

    impl CallSink for Ledger {
        fn started(&self, call: &CallStart) {
            let mut s = self.inner.lock().unwrap();
            s.started += 1;
            assert!(
                !s.ended.contains(&call.span_id) && s.open.insert(call.span_id),
                "call {} started twice",
                call.name
            );
        }
        fn ended(&self, call: Call) {
            let mut s = self.inner.lock().unwrap();
            assert!(s.open.remove(&call.span_id), "call {} ended but not open", call.name);
            assert!(s.ended.insert(call.span_id));
            assert!(call.start <= call.end, "call {} ends before it starts", call.name);
        }
        fn event(&self, _event: StreamEvent) {}
    }

    impl Ledger {
        /// Asserts that every call started has ended.
        pub fn assert_settled(&self) {
            let s = self.inner.lock().unwrap();
            assert!(s.open.is_empty(), "{} calls never ended", s.open.len());
            assert_eq!(s.started, s.ended.len());
        }
    }

    pub fn conn(capture: bool) -> Arc<ConnMeta> {
        Arc::new(ConnMeta {
            id: 1,
            service: Arc::from("fuzz"),
            transport: "unix",
            listen: "unix:///fuzz/tap.sock".into(),
            upstream: "unix:///fuzz/up.sock".into(),
            client: None,
            server: None,
            capture_payloads: capture,
        })
    }

    /// Runs `input` (selector byte + records) through the session `make` builds.
    pub fn run(input: &[u8], make: impl FnOnce(SessionCtx) -> Box<dyn Session>) {
        let (selector, input) = split_first(input);
        let ledger = Arc::new(Ledger::default());
        let ctx = SessionCtx {
            conn: conn(selector & 1 != 0),
            sink: ledger.clone(),
            clock: Clock::new(),
            long_lived: Default::default(),
        };
        let mut session = make(ctx);
        let recs = records(input);
        let third = recs.len() / 3;
        let mut at = Instant::now();
        for (n, r) in recs.iter().enumerate() {
            at += Duration::from_micros(7);
            if selector & 2 != 0 {
                session.payloads(!(third..2 * third).contains(&n));
            }
            match *r {
                Record::Data(dir, bytes) => session.data(dir, at, Bytes::copy_from_slice(bytes)),
                Record::Eof(dir) => session.eof(dir, at),
            }
            // The observer stops feeding a session whose decoder gave up.
            if session.gave_up().is_some() {
                break;
            }
        }
        if selector & 4 == 0 {
            session.closed(at + Duration::from_micros(7));
        }
        drop(session);
        ledger.assert_settled();
    }
}

/// Every method of the schema's pool as a gRPC path (`/pkg.Service/Method`), sorted: the
/// numbering the protobuf target and its seeds share.
pub fn method_paths(schema: &runtime_tap::schema::Schema) -> Vec<String> {
    let mut paths = Vec::new();
    for s in schema.pool().services() {
        for m in s.methods() {
            paths.push(format!("/{}/{}", s.full_name(), m.name()));
        }
    }
    paths.sort();
    paths
}

/// Asserts two event logs (split reads vs. coalesced reads) are equal, showing the first
/// difference.
pub fn assert_same_events<T: PartialEq + std::fmt::Debug>(split: &[T], joined: &[T]) {
    if split == joined {
        return;
    }
    let at = split.iter().zip(joined).take_while(|(a, b)| a == b).count();
    panic!(
        "events depend on read splits: first difference at event {at} of {}/{}\nsplit reads:  {:?}\njoined reads: {:?}\n(previous: {:?})\nall split: {split:?}\nall joined: {joined:?}",
        split.len(),
        joined.len(),
        split.get(at),
        joined.get(at),
        at.checked_sub(1).and_then(|i| split.get(i)),
    );
}
