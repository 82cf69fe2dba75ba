//! The flight recorder (opt-in per intercept, `flight_recorder = "16MiB"`): the intercept's
//! most recent raw bytes, kept in memory, and written as a pcapng for one connection when a
//! call on it fails or is slow, so that the span of that call leads to the frames that carried
//! it (`runtime_tap.recording` names the file; packet comments name the span).
//!
//! Nothing here touches the relay: a connection's chunks come from its tap, in the observer's
//! task, which copies them into the intercept's ring under a short lock. The copy is on
//! purpose: a tap chunk may share the relay's read buffer, and holding it for minutes would
//! hold that whole buffer, so the ring's bound would not bound memory.
//!
//! The ring is bounded per intercept: past its size the oldest chunk of the intercept,
//! whichever connection it belongs to, is evicted whole. Each connection's first bytes
//! ([`PINNED_BYTES`]: the HTTP/2 preface, both SETTINGS and the first header blocks) are
//! kept as long as it lives, within a quarter of the ring, because an HTTP/2 dump that
//! starts mid-connection has lost the HPACK state later header blocks need. A dump whose
//! connection lost bytes to eviction says so in a comment on its first packet and on the
//! packet after the gap.
//!
//! Deciding to dump is the caller's (where a call ends, in `app`); here a dump takes the
//! connection's bytes at once (shared, no copy), and the intercept's writer thread writes the
//! file once the call's span has its trace id (the correlator decides it after the call
//! ends; see [`FlightRecorder::traced`]), or after [`TRACE_WAIT`] without it. Dumps are
//! limited per minute; what is skipped is counted by reason.
//!
//! Files follow the capture directory's rules (`super`): `<dir>/<intercept>-flight-<n>.pcapng`,
//! created 0600 in a directory created 0700, the newest `files` kept. Redaction does not
//! apply: the files hold the raw bytes, secrets included.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::pcapng::{self, MAX_SEGMENT, flags};
use super::{CLIENT_ISN, SERVER_ISN, Seg, client_ip, create_private, existing_files, file_head, micros, server_port};
use crate::metrics::{Counter, Family};
use crate::observe::TapFollower;
use crate::relay::tap::TapEvent;
use crate::trace::call::Clock;
use crate::trace::span::{SpanId, TraceId, hex};
use crate::wire::Direction;

/// Where dumps go when neither `capture_dir` nor `flight_recorder_dir` is set.
pub const DEFAULT_DIR: &str = "/var/lib/runtime-tap/flight-recorder";
/// Default number of dump files kept per intercept.
pub const DEFAULT_FILES: usize = 32;
/// Default number of dumps per minute per intercept.
pub const DEFAULT_PER_MINUTE: u32 = 10;
/// Smallest ring (`flight_recorder`): less would hold little more than the pinned starts.
pub const MIN_BYTES: usize = 64 * 1024;
/// Largest ring.
pub const MAX_BYTES: usize = 1 << 30;
/// A connection's first bytes kept while it lives (the HTTP/2 preface and SETTINGS are well
/// under 1 KiB; the rest holds the first header blocks, which set up most of HPACK's table).
pub const PINNED_BYTES: usize = 16 * 1024;
/// Dumps (and trace ids for them) queued for the writer at most.
pub const QUEUE_DUMPS: usize = 64;
/// How long a dump waits for its span's trace id: longer than the correlator holds a span
/// (`trace::correlate::MAX_EXPORT_DELAY`). A span that never comes (dropped by the export
/// queue) leaves the dump written without it.
pub const TRACE_WAIT: Duration = Duration::from_secs(15);

/// Where and how much one intercept records.
#[derive(Clone, Debug)]
pub struct FlightConfig {
    /// The intercept's name: file names and the interface name.
    pub name: String,
    pub dir: PathBuf,
    /// Ring size: the intercept's recent bytes kept, pinned starts included.
    pub bytes: usize,
    /// Files kept per intercept (at least 1).
    pub files: usize,
    /// Dumps per minute (at least 1).
    pub per_minute: u32,
}

/// One chunk as the relay read it.
#[derive(Clone, Debug)]
struct Chunk {
    dir: Direction,
    at: Instant,
    /// Offset of its first byte in its direction's stream.
    offset: u64,
    /// Bytes seen in the other direction when it was read (the segment's acknowledgement).
    ack: u64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct ConnRing {
    pinned: Vec<Chunk>,
    pinned_bytes: usize,
    chunks: VecDeque<Chunk>,
    /// Number of `chunks[0]` among the connection's ring chunks (evicted ones count).
    first: u64,
    /// Bytes seen per direction (`Direction::index`).
    seen: [u64; 2],
    evicted: u64,
}

/// A connection's recorded bytes at the moment of a dump.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pinned: Vec<Chunk>,
    chunks: Vec<Chunk>,
    /// Bytes evicted between the pinned start and the first ring chunk.
    pub evicted: u64,
}

impl Snapshot {
    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.pinned.iter().chain(&self.chunks).map(|c| c.bytes.len()).sum()
    }
}

/// The recent bytes of one intercept's connections, bounded by bytes (see the module doc).
#[derive(Debug)]
pub struct Ring {
    limit: usize,
    pinned_limit: usize,
    conns: HashMap<u64, ConnRing>,
    /// Ring chunks in arrival order, intercept-wide: (connection, chunk number).
    order: VecDeque<(u64, u64)>,
    /// Entries of `order` whose connection has ended.
    stale: usize,
    bytes: usize,
    pinned: usize,
}

impl Ring {
    pub fn new(limit: usize) -> Ring {
        Ring {
            limit,
            pinned_limit: limit / 4,
            conns: HashMap::new(),
            order: VecDeque::new(),
            stale: 0,
            bytes: 0,
            pinned: 0,
        }
    }

    /// Bytes held now, pinned starts included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Start recording connection `conn`.
    pub fn open(&mut self, conn: u64) {
        self.conns.entry(conn).or_default();
    }

    /// A chunk of connection `conn` read in direction `dir` at `at`.
    pub fn push(&mut self, conn: u64, dir: Direction, at: Instant, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (d, o) = (dir.index(), dir.reverse().index());
        let mut rest = bytes;
        // Only the connection's start is pinned: once a chunk went to the ring, none is.
        if c.first == 0 && c.chunks.is_empty() {
            let pin = PINNED_BYTES
                .saturating_sub(c.pinned_bytes)
                .min(self.pinned_limit.saturating_sub(self.pinned))
                .min(rest.len());
            if pin > 0 {
                let (head, tail) = rest.split_at(pin);
                c.pinned.push(Chunk {
                    dir,
                    at,
                    offset: c.seen[d],
                    ack: c.seen[o],
                    bytes: Bytes::copy_from_slice(head),
                });
                c.seen[d] += pin as u64;
                c.pinned_bytes += pin;
                self.pinned += pin;
                self.bytes += pin;
                rest = tail;
            }
        }
        if !rest.is_empty() {
            let number = c.first + c.chunks.len() as u64;
            c.chunks.push_back(Chunk {
                dir,
                at,
                offset: c.seen[d],
                ack: c.seen[o],
                bytes: Bytes::copy_from_slice(rest),
            });
            c.seen[d] += rest.len() as u64;
            self.bytes += rest.len();
            self.order.push_back((conn, number));
        }
        self.evict();
    }

    /// Evict the intercept's oldest ring chunks until it fits (pinned starts stay).
    fn evict(&mut self) {
        while self.bytes > self.limit {
            let Some((conn, number)) = self.order.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(&conn) else {
                self.stale = self.stale.saturating_sub(1);
                continue;
            };
            if c.first != number {
                continue;
            }
            if let Some(chunk) = c.chunks.pop_front() {
                c.first += 1;
                c.evicted += chunk.bytes.len() as u64;
                self.bytes -= chunk.bytes.len();
            }
        }
    }

    /// Connection `conn` ended: its bytes are let go.
    pub fn close(&mut self, conn: u64) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let ring: usize = c.chunks.iter().map(|x| x.bytes.len()).sum();
        self.bytes -= ring + c.pinned_bytes;
        self.pinned -= c.pinned_bytes;
        self.stale += c.chunks.len();
        // Ended connections' entries wait in `order` for eviction to reach them; on a quiet
        // intercept that may never happen, so they are swept once they are most of it.
        if self.stale > 1024 && self.stale * 2 > self.order.len() {
            let conns = &self.conns;
            self.order.retain(|(c, _)| conns.contains_key(c));
            self.stale = 0;
        }
    }

    /// Whether connection `conn` has recorded anything.
    pub fn has_bytes(&self, conn: u64) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.pinned_bytes > 0 || !c.chunks.is_empty())
    }

    /// What connection `conn` has recorded, sharing the bytes.
    pub fn snapshot(&self, conn: u64) -> Option<Snapshot> {
        let c = self.conns.get(&conn)?;
        Some(Snapshot {
            pinned: c.pinned.clone(),
            chunks: c.chunks.iter().cloned().collect(),
            evicted: c.evicted,
        })
    }
}

/// At most `per_minute` admissions in any 60 s.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: usize,
    recent: VecDeque<Instant>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute: per_minute.max(1) as usize,
            recent: VecDeque::new(),
        }
    }

    /// Whether one more is allowed at `now` (and if so, it is counted).
    pub fn admit(&mut self, now: Instant) -> bool {
        const MINUTE: Duration = Duration::from_secs(60);
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Why a dump was not written (the `reason` label of the skipped dumps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Past `flight_recorder_per_minute`.
    RateLimited,
    /// The writer's queue was full, or the dumps waiting for it already held the ring's size.
    QueueFull,
    /// The connection had nothing recorded.
    NoBytes,
    /// The file could not be written.
    WriteFailed,
}

impl Skip {
    pub const ALL: [Skip; 4] = [Skip::RateLimited, Skip::QueueFull, Skip::NoBytes, Skip::WriteFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::RateLimited => "rate_limited",
            Skip::QueueFull => "queue_full",
            Skip::NoBytes => "no_bytes",
            Skip::WriteFailed => "write_failed",
        }
    }
}

/// The call a dump is for, as its span will show it.
#[derive(Clone, Debug)]
pub struct DumpCall {
    /// The connection id (`ConnMeta::id`).
    pub conn: u64,
    pub span_id: SpanId,
    /// The span's name (full gRPC method, or `METHOD /route`).
    pub name: String,
    /// Why it is dumped: `error` or `slow`, with the status (`rpc NOT_FOUND`, `http 500`).
    pub reason: String,
    pub start: SystemTime,
    pub end: SystemTime,
}

struct Dump {
    call: DumpCall,
    file: String,
    snapshot: Snapshot,
    deadline: Instant,
}

enum Msg {
    Dump(Box<Dump>),
    /// The trace id the span of a dump was exported with.
    Traced(SpanId, TraceId),
    Flush(mpsc::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    dumps: Counter,
    skipped: [Counter; Skip::ALL.len()],
}

impl Counters {
    fn skip(&self, why: Skip) {
        self.skipped[why as usize].inc();
    }
}

struct Inner {
    config: FlightConfig,
    ring: Mutex<Ring>,
    limit: Mutex<RateLimit>,
    tx: SyncSender<Msg>,
    next_file: AtomicU64,
    /// Payload bytes held by dumps queued for the writer.
    queued: AtomicUsize,
    counters: Counters,
}

impl Inner {
    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One intercept's flight recorder: shared by its connections, cheap to clone.
#[derive(Clone)]
pub struct FlightRecorder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlightRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightRecorder")
            .field("name", &self.inner.config.name)
            .finish()
    }
}

impl FlightRecorder {
    /// Create the directory if needed (0700), learn the files earlier runs left (they count
    /// towards the files kept) and start the intercept's writer thread. `clock` turns the
    /// tap's instants into the packets' wall-clock timestamps.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn start(mut config: FlightConfig, clock: Clock) -> io::Result<FlightRecorder> {
        config.files = config.files.max(1);
        let existing = existing_files(&config.dir, &config.name, "-flight-")?;
        // A file that cannot be created fails the start, as capture's first file does.
        let probe = config.dir.join(format!(".{}-flight-probe", config.name));
        drop(create_private(&probe)?);
        let _ = std::fs::remove_file(&probe);
        let next = existing.last().map_or(0, |(n, _)| n + 1);
        let (tx, rx) = mpsc::sync_channel(QUEUE_DUMPS);
        let inner = Arc::new(Inner {
            ring: Mutex::new(Ring::new(config.bytes)),
            limit: Mutex::new(RateLimit::new(config.per_minute)),
            tx,
            next_file: AtomicU64::new(next),
            queued: AtomicUsize::new(0),
            counters: Counters::default(),
            config,
        });
        let writer = Writer {
            inner: Arc::clone(&inner),
            clock,
            kept: existing.into_iter().map(|(_, p)| p).collect(),
            ip_id: 0,
        };
        std::thread::Builder::new()
            .name(format!("flight-{}", inner.config.name))
            .spawn(move || writer.run(rx))?;
        Ok(FlightRecorder { inner })
    }

    /// The intercept's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The recorder of one connection (`id` unique in the process); its bytes are let go
    /// when it is dropped.
    pub fn connection(&self, id: u64) -> FlightConn {
        self.inner.ring().open(id);
        FlightConn {
            inner: Arc::clone(&self.inner),
            id,
        }
    }

    /// Dump the bytes of `call`'s connection: the file's name (in the recorder's directory)
    /// once the dump is queued, else why not (counted). The file is written by the writer
    /// thread once [`traced`](Self::traced) gives the span's trace id. Never blocks.
    pub fn dump(&self, call: DumpCall) -> Result<String, Skip> {
        let skipped = |why| {
            self.inner.counters.skip(why);
            Err(why)
        };
        // The rate is checked before the snapshot, which clones the connection's chunk list
        // under the ring's lock: a burst of failures past the rate costs no more than a count.
        if !self.inner.ring().has_bytes(call.conn) {
            return skipped(Skip::NoBytes);
        }
        let admitted = self
            .inner
            .limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(Instant::now());
        if !admitted {
            return skipped(Skip::RateLimited);
        }
        let Some(snapshot) = self.inner.ring().snapshot(call.conn).filter(|s| s.bytes() > 0) else {
            return skipped(Skip::NoBytes);
        };
        // Dumps waiting for their trace id keep chunks the ring may have evicted since: at
        // most the ring's size again.
        let len = snapshot.bytes();
        if self.inner.queued.fetch_add(len, Ordering::Relaxed) + len > self.inner.config.bytes {
            self.inner.queued.fetch_sub(len, Ordering::Relaxed);
            return skipped(Skip::QueueFull);
        }
        let n = self.inner.next_file.fetch_add(1, Ordering::Relaxed);
        let file = format!("{}-flight-{n}.pcapng", self.inner.config.name);
        let dump = Dump {
            call,
            file: file.clone(),
            snapshot,
            deadline: Instant::now() + TRACE_WAIT,
        };
        if self.inner.tx.try_send(Msg::Dump(Box::new(dump))).is_err() {
            self.inner.queued.fetch_sub(len, Ordering::Relaxed);
            return skipped(Skip::QueueFull);
        }
        Ok(file)
    }

    /// The span `span_id`, which names a dump of this recorder, was exported in trace
    /// `trace_id`: its file can be written. Never blocks (a full queue leaves the dump to be
    /// written without the trace id when its wait ends).
    pub fn traced(&self, span_id: SpanId, trace_id: TraceId) {
        let _ = self.inner.tx.try_send(Msg::Traced(span_id, trace_id));
    }

    /// Write every queued dump now (those still waiting for a trace id without it) and wait
    /// at most `timeout` for the writer. Blocking: call it off the runtime, after the spans
    /// were flushed.
    pub fn flush(&self, timeout: Duration) -> bool {
        super::flush_writer(&self.inner.tx, Msg::Flush, timeout)
    }

    /// Dumps written so far.
    pub fn dumps(&self) -> u64 {
        self.inner.counters.dumps.get()
    }

    /// Dumps skipped for `why` so far.
    pub fn skipped(&self, why: Skip) -> u64 {
        self.inner.counters.skipped[why as usize].get()
    }
}

/// The flight recorder of one connection, a follower of its tap.
pub struct FlightConn {
    inner: Arc<Inner>,
    id: u64,
}

impl TapFollower for FlightConn {
    fn event(&mut self, event: &TapEvent) {
        if let TapEvent::Data { dir, at, bytes } = event
            && !bytes.is_empty()
        {
            self.inner.ring().push(self.id, *dir, *at, bytes);
        }
    }

    fn wants_undecoded(&self) -> bool {
        false
    }
}

impl Drop for FlightConn {
    fn drop(&mut self) {
        self.inner.ring().close(self.id);
    }
}

/// The writer thread's state.
struct Writer {
    inner: Arc<Inner>,
    clock: Clock,
    /// Files of this intercept in the directory, oldest first.
    kept: VecDeque<PathBuf>,
    ip_id: u16,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut waiting: Vec<Box<Dump>> = Vec::new();
        loop {
            let now = Instant::now();
            let wait = waiting
                .iter()
                .map(|d| d.deadline.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok(Msg::Dump(d)) => waiting.push(d),
                Ok(Msg::Traced(span, trace)) => {
                    if let Some(i) = waiting.iter().position(|d| d.call.span_id == span) {
                        let d = waiting.swap_remove(i);
                        self.write(&d, Some(trace));
                    }
                }
                Ok(Msg::Flush(ack)) => {
                    for d in waiting.drain(..) {
                        self.write(&d, None);
                    }
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let (due, later) = waiting.drain(..).partition(|d| d.deadline <= now);
                    waiting = later;
                    for d in due {
                        self.write(&d, None);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for d in waiting {
            self.write(&d, None);
        }
    }

    fn write(&mut self, dump: &Dump, trace: Option<TraceId>) {
        self.inner.queued.fetch_sub(dump.snapshot.bytes(), Ordering::Relaxed);
        let path = self.inner.config.dir.join(&dump.file);
        match self.write_file(&path, dump, trace) {
            Ok(()) => {
                self.inner.counters.dumps.inc();
                tracing::info!(intercept = %self.inner.config.name, file = %path.display(), call = %dump.call.name, reason = %dump.call.reason, "flight recorder dump written");
                self.kept.push_back(path);
                while self.kept.len() > self.inner.config.files {
                    if let Some(old) = self.kept.pop_front() {
                        let _ = std::fs::remove_file(&old);
                    }
                }
            }
            Err(e) => {
                self.inner.counters.skip(Skip::WriteFailed);
                let _ = std::fs::remove_file(&path);
                tracing::warn!(intercept = %self.inner.config.name, file = %path.display(), error = %e, "flight recorder dump not written");
            }
        }
    }

    fn write_file(&mut self, path: &std::path::Path, dump: &Dump, trace: Option<TraceId>) -> io::Result<()> {
        let mut out = BufWriter::new(create_private(path)?);
        out.write_all(&file_head(
            &self.inner.config.name,
            "runtime-tap flight recorder: synthetic TCP/IPv4 framing of one unix socket connection",
        ))?;
        for (seg, comment) in segments(dump, &self.inner.config.name, trace, &self.clock) {
            self.ip_id = self.ip_id.wrapping_add(1);
            let frame = super::frame(&seg, self.ip_id);
            out.write_all(&pcapng::packet_with_comment(micros(seg.at), &frame, &comment))?;
        }
        out.flush()
    }
}

/// The span a dump names, as its comments give it.
fn span_text(call: &DumpCall, trace: Option<TraceId>) -> String {
    let trace = trace.map_or_else(|| "unknown (span not exported in time)".to_string(), |t| hex(&t));
    format!(
        "{} ({}) trace_id={trace} span_id={}",
        call.name,
        call.reason,
        hex(&call.span_id)
    )
}

/// The dump's packets, in order, each with its comment (empty for none): a handshake, then
/// the pinned start and the ring's chunks as segments with their sequence numbers in the
/// connection (a gap where bytes were evicted). Comments: on the first packet what the file
/// is, on the packet after a gap what was lost, on the first client packet of the call its
/// start, on the last packet its end; each names the span.
fn segments(dump: &Dump, intercept: &str, trace: Option<TraceId>, clock: &Clock) -> Vec<(Seg, String)> {
    let snap = &dump.snapshot;
    let chunks: Vec<&Chunk> = snap.pinned.iter().chain(&snap.chunks).collect();
    let Some(first) = chunks.first() else {
        return Vec::new();
    };
    let span = span_text(&dump.call, trace);
    let isn = |d: Direction| match d {
        Direction::ClientToServer => CLIENT_ISN,
        Direction::ServerToClient => SERVER_ISN,
    };
    let seg = |dir, at, flags, seq, ack, payload| Seg {
        at: clock.wall(at),
        client_ip: client_ip(dump.call.conn),
        server_port: server_port(first.dir, &first.bytes),
        dir,
        flags,
        seq,
        ack,
        payload,
    };
    let (c, s) = (Direction::ClientToServer, Direction::ServerToClient);
    let mut header = format!(
        "runtime-tap flight recorder: connection {} of intercept {}, dumped for {span}",
        dump.call.conn, intercept
    );
    if snap.evicted > 0 {
        header.push_str(&format!(
            "; {} bytes after the first {} were evicted from the ring (HTTP/2 header blocks after the gap may not decode: their HPACK state is lost)",
            snap.evicted,
            snap.pinned.iter().map(|c| c.bytes.len()).sum::<usize>()
        ));
    }
    let mut out = vec![
        (seg(c, first.at, flags::SYN, CLIENT_ISN, 0, Bytes::new()), header),
        (
            seg(
                s,
                first.at,
                flags::SYN | flags::ACK,
                SERVER_ISN,
                CLIENT_ISN + 1,
                Bytes::new(),
            ),
            String::new(),
        ),
        (
            seg(c, first.at, flags::ACK, CLIENT_ISN + 1, SERVER_ISN + 1, Bytes::new()),
            String::new(),
        ),
    ];
    let mut call_started = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut offset = 0;
        while offset < chunk.bytes.len() {
            let end = (offset + MAX_SEGMENT).min(chunk.bytes.len());
            let seq = isn(chunk.dir)
                .wrapping_add(1)
                .wrapping_add((chunk.offset + offset as u64) as u32);
            let ack = isn(chunk.dir.reverse()).wrapping_add(1).wrapping_add(chunk.ack as u32);
            let mut comment = Vec::new();
            if offset == 0 && i == snap.pinned.len() && snap.evicted > 0 {
                comment.push(format!(
                    "{} bytes of this connection were evicted before this packet",
                    snap.evicted
                ));
            }
            if !call_started && chunk.dir == c && clock.wall(chunk.at) >= dump.call.start {
                call_started = true;
                comment.push(format!("call start: {span}"));
            }
            out.push((
                seg(
                    chunk.dir,
                    chunk.at,
                    flags::ACK | flags::PSH,
                    seq,
                    ack,
                    chunk.bytes.slice(offset..end),
                ),
                comment.join("; "),
            ));
            offset = end;
        }
    }
    if let Some((_, comment)) = out.last_mut() {
        let end = format!("call end: {span}");
        if comment.is_empty() {
            *comment = end;
        } else {
            comment.push_str("; ");
            comment.push_str(&end);
        }
    }
    out
}

/// The flight recorders' families of /metrics.
pub fn fmt_metrics(recorders: &[FlightRecorder], out: &mut String) {
    if recorders.is_empty() {
        return;
    }
    let held = Family::gauge(
        "runtime_tap_flight_recorder_bytes",
        "Bytes the flight recorder's ring holds now (flight_recorder bounds it).",
    );
    held.header(out);
    for r in recorders {
        held.sample(out, &[("intercept", &r.name())], r.inner.ring().bytes());
    }
    let dumps = Family::counter(
        "runtime_tap_flight_recorder_dumps_total",
        "Flight recorder dumps written: a connection's recent bytes, for a call that failed or was slow.",
    );
    dumps.header(out);
    for r in recorders {
        dumps.sample(out, &[("intercept", &r.name())], r.dumps());
    }
    let skipped = Family::counter(
        "runtime_tap_flight_recorder_dumps_skipped_total",
        "Flight recorder dumps not written, by reason (rate_limited: past flight_recorder_per_minute).",
    );
    skipped.header(out);
    for r in recorders {
        for why in Skip::ALL {
            skipped.sample(
                out,
                &[("intercept", &r.name()), ("reason", &why.as_str())],
                r.skipped(why),
            );
        }
    }
}

#[cfg(test)]
mod tests;
