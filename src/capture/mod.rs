//! Raw capture for offline analysis (opt-in per intercept, `capture_dir`): every connection's
//! bytes, as the relay read them, written as pcapng with synthesized Ethernet/IPv4/TCP framing
//! so that Wireshark's and tshark's HTTP, HTTP/2 and gRPC dissectors read unix-socket traffic.
//!
//! Nothing here can slow the relay: a connection's chunks come from its tap (the observer's
//! side of the relay), each is turned into segments in the observer task and offered to the
//! intercept's writer thread through a bounded queue (by segments and by bytes) with
//! `try_send`. What does not fit is dropped and counted; the sequence numbers still advance
//! past it, so Wireshark shows a gap ("previous segment not captured") rather than wrong bytes.
//!
//! Framing: each connection has its own client address, 10.x.y.z from the connection id (see
//! [`client_ip`]), always on port [`CLIENT_PORT`]; the daemon is 10.0.0.1, on port 80 when the
//! connection's first client bytes are an HTTP/1 request (Wireshark's default HTTP port, so no
//! "Decode As" is needed) and on [`OTHER_PORT`] otherwise (tshark 4.0 needs
//! `-d tcp.port==50051,http2` for HTTP/2; ttrpc and other protocols stay TCP). Fixed ports
//! with no dissector of their own keep Wireshark from trying some other protocol registered
//! on a per-connection port.
//! A connection's first chunk is preceded by a SYN, SYN-ACK, ACK handshake; each half-close is
//! a FIN; the end of the relay closes what is still open.
//!
//! Files: `<dir>/<intercept>-<n>.pcapng`, created 0600 (the directory 0700 if created), each
//! starting with its own section and interface blocks. When a file reaches `max_bytes` the
//! next is started, and only the newest `files` of the intercept are kept (older ones,
//! including those of earlier runs, are deleted). A connection that spans a rotation continues
//! mid-stream in the next file, without a handshake: the HTTP/1 dissector resynchronises on
//! the next request, HTTP/2 header blocks cannot be decoded there (their HPACK table is in the
//! previous file).
//!
//! Redaction does not apply: the files hold the raw bytes, secrets included.

pub mod flight;
pub mod pcapng;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::metrics::{Family, FmtMetrics};
use crate::relay::tap::{TapEvent, TapReceiver};
use crate::trace::call::Clock;
use crate::wire::Direction;
use crate::wire::h2::frame::PREFACE;
use crate::wire::sniff::{self, Protocol};
use pcapng::{Endpoint, MAX_SEGMENT, Segment, flags};

/// Default size at which a capture file is closed and the next one started.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of capture files kept per intercept.
pub const DEFAULT_FILES: usize = 4;
/// Segments the writer queue of an intercept holds at most.
pub const QUEUE_SEGMENTS: usize = 16 * 1024;
/// Payload bytes the writer queue of an intercept holds at most.
pub const QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// Server port of connections whose first client bytes are an HTTP/1 request.
pub const HTTP1_PORT: u16 = 80;
/// Server port of every other connection (HTTP/2, ttrpc, opaque).
pub const OTHER_PORT: u16 = 50051;
/// Client port of every connection (the address tells connections apart).
pub const CLIENT_PORT: u16 = 50052;
/// The daemon's address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_ISN: u32 = 1_000_000;
const SERVER_ISN: u32 = 2_000_000;

/// Where and how much one intercept captures.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// The intercept's name: file names and the interface name.
    pub name: String,
    pub dir: PathBuf,
    /// A file is rotated once it holds at least this many bytes.
    pub max_bytes: u64,
    /// Files kept per intercept (at least 1).
    pub files: usize,
}

/// Counters of one intercept's capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Segments written to files.
    pub segments: u64,
    /// Segments dropped: the queue was full, or writing failed.
    pub dropped_segments: u64,
    /// Payload bytes in the dropped segments.
    pub dropped_bytes: u64,
    /// Files opened (the first included).
    pub files_opened: u64,
}

#[derive(Default)]
struct Counters {
    segments: AtomicU64,
    dropped_segments: AtomicU64,
    dropped_bytes: AtomicU64,
    files_opened: AtomicU64,
}

impl Counters {
    fn drop_one(&self, bytes: usize) {
        self.dropped_segments.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One segment for the writer.
struct Seg {
    at: SystemTime,
    client_ip: Ipv4Addr,
    server_port: u16,
    dir: Direction,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: Bytes,
}

enum Msg {
    Seg(Seg),
    /// Write out everything queued before, then answer.
    Flush(mpsc::Sender<()>),
}

struct Inner {
    name: String,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    clock: Clock,
    warned: AtomicBool,
}

/// What the senders share with the writer thread (which holds no sender, so it ends when
/// the last connection and the intercept let go of the capture).
#[derive(Default)]
struct Shared {
    /// Payload bytes queued and not yet taken by the writer.
    queued: AtomicUsize,
    counters: Counters,
}

/// One intercept's capture: shared by its connections, cheap to clone.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("name", &self.inner.name).finish()
    }
}

impl Capture {
    /// Create the directory if needed, open the first file (so a directory that cannot be
    /// written fails the start) and start the intercept's writer thread. `clock` turns the
    /// tap's instants into the packets' wall-clock timestamps.
    ///
    /// # Errors
    /// When the directory cannot be created or read, or the first file cannot be created.
    pub fn start(config: CaptureConfig, clock: Clock) -> io::Result<Capture> {
        let writer = FileWriter::open(config)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_SEGMENTS);
        let shared = Arc::new(Shared::default());
        shared.counters.files_opened.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            name: writer.config.name.clone(),
            tx,
            shared: Arc::clone(&shared),
            clock,
            warned: AtomicBool::new(false),
        });
        std::thread::Builder::new()
            .name(format!("capture-{}", writer.config.name))
            .spawn(move || writer.run(rx, &shared))?;
        Ok(Capture { inner })
    }

    /// The capture of one connection (`id` unique in the process).
    pub fn connection(&self, id: u64) -> CaptureConn {
        CaptureConn {
            inner: Arc::clone(&self.inner),
            client_ip: client_ip(id),
            server_port: 0,
            started: false,
            closed: false,
            next: [CLIENT_ISN, SERVER_ISN],
            fin: [false, false],
        }
    }

    /// The intercept's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        let c = &self.inner.shared.counters;
        CaptureStats {
            segments: c.segments.load(Ordering::Relaxed),
            dropped_segments: c.dropped_segments.load(Ordering::Relaxed),
            dropped_bytes: c.dropped_bytes.load(Ordering::Relaxed),
            files_opened: c.files_opened.load(Ordering::Relaxed),
        }
    }

    /// Write out everything offered so far and flush the file; waits at most `timeout`.
    /// Returns whether the writer confirmed in time. Blocking: call it off the runtime.
    pub fn flush(&self, timeout: Duration) -> bool {
        flush_writer(&self.inner.tx, Msg::Flush, timeout)
    }
}

/// Queue `flush(ack)` to a writer thread, waiting for room until `timeout`, then wait for its
/// ack in what is left of it: whether the writer caught up in time (the capture's and the
/// flight recorder's writers alike).
fn flush_writer<M>(tx: &SyncSender<M>, flush: impl FnOnce(mpsc::Sender<()>) -> M, timeout: Duration) -> bool {
    let (ack_tx, ack_rx) = mpsc::channel();
    let deadline = Instant::now() + timeout;
    let mut msg = flush(ack_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
    ack_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

/// The raw capture's and the flight recorder's families of /metrics, for the intercepts that
/// have them (capture drops were only in the shutdown log before).
#[derive(Clone, Debug, Default)]
pub struct RawMetrics {
    pub captures: Vec<Capture>,
    pub recorders: Vec<flight::FlightRecorder>,
}

/// Reads one counter of [`CaptureStats`].
type StatOf = fn(&CaptureStats) -> u64;

impl FmtMetrics for RawMetrics {
    fn fmt_metrics(&self, out: &mut String) {
        if !self.captures.is_empty() {
            let families: [(Family, StatOf); 3] = [
                (
                    Family::counter(
                        "runtime_tap_capture_segments_total",
                        "Segments written to capture files (capture_dir).",
                    ),
                    |s| s.segments,
                ),
                (
                    Family::counter(
                        "runtime_tap_capture_dropped_segments_total",
                        "Segments left out of capture files: the writer's queue was full or writing failed (the file shows a gap).",
                    ),
                    |s| s.dropped_segments,
                ),
                (
                    Family::counter(
                        "runtime_tap_capture_dropped_bytes_total",
                        "Payload bytes in the segments left out of capture files.",
                    ),
                    |s| s.dropped_bytes,
                ),
            ];
            for (family, value) in families {
                family.header(out);
                for c in &self.captures {
                    family.sample(out, &[("intercept", &c.name())], value(&c.stats()));
                }
            }
        }
        flight::fmt_metrics(&self.recorders, out);
    }
}

/// Feed a connection's tap to its capture only: the intercept does not decode, but captures.
pub async fn follow(mut rx: TapReceiver, mut conn: CaptureConn) {
    while let Some(event) = rx.recv().await {
        conn.event(&event);
    }
}

/// The capture of one connection: turns its tap events, in relay order, into TCP segments
/// with consistent sequence numbers and offers them to the writer. Never blocks.
pub struct CaptureConn {
    inner: Arc<Inner>,
    client_ip: Ipv4Addr,
    /// Chosen at the first chunk.
    server_port: u16,
    started: bool,
    closed: bool,
    /// Next sequence number per direction (index: `Direction::index`).
    next: [u32; 2],
    fin: [bool; 2],
}

impl CaptureConn {
    /// One event of the connection's tap.
    pub fn event(&mut self, event: &TapEvent) {
        match event {
            TapEvent::Data { dir, at, bytes } => self.data(*dir, *at, bytes),
            TapEvent::Eof { dir, at } => self.half_close(*dir, *at),
            TapEvent::Closed { at } => self.close(*at),
            TapEvent::Injected(_) => {}
        }
    }

    /// A chunk read in direction `dir` at `at`.
    pub fn data(&mut self, dir: Direction, at: Instant, bytes: &Bytes) {
        if self.closed || bytes.is_empty() || self.fin[dir.index()] {
            return;
        }
        if !self.started {
            self.handshake(dir, at, bytes);
        }
        let mut offset = 0;
        while offset < bytes.len() {
            let end = (offset + MAX_SEGMENT).min(bytes.len());
            let payload = bytes.slice(offset..end);
            let seq = self.next[dir.index()];
            self.next[dir.index()] = seq.wrapping_add(payload.len() as u32);
            self.send(dir, at, flags::ACK | flags::PSH, seq, payload);
            offset = end;
        }
    }

    /// Direction `dir` half-closed.
    pub fn half_close(&mut self, dir: Direction, at: Instant) {
        if !self.started || self.closed || self.fin[dir.index()] {
            return;
        }
        self.fin[dir.index()] = true;
        let seq = self.next[dir.index()];
        self.next[dir.index()] = seq.wrapping_add(1);
        self.send(dir, at, flags::FIN | flags::ACK, seq, Bytes::new());
    }

    /// The relay of the connection ended: what is still open is closed.
    pub fn close(&mut self, at: Instant) {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            self.half_close(dir, at);
        }
        self.closed = true;
    }

    fn handshake(&mut self, dir: Direction, at: Instant, first: &[u8]) {
        self.started = true;
        self.server_port = server_port(dir, first);
        let (c, s) = (Direction::ClientToServer, Direction::ServerToClient);
        self.send(c, at, flags::SYN, CLIENT_ISN, Bytes::new());
        self.next = [CLIENT_ISN.wrapping_add(1), SERVER_ISN.wrapping_add(1)];
        self.send(s, at, flags::SYN | flags::ACK, SERVER_ISN, Bytes::new());
        self.send(c, at, flags::ACK, self.next[0], Bytes::new());
    }

    fn send(&self, dir: Direction, at: Instant, flags: u8, seq: u32, payload: Bytes) {
        let inner = &*self.inner;
        let len = payload.len();
        if inner.shared.queued.load(Ordering::Relaxed) + len > QUEUE_BYTES {
            self.dropped(len);
            return;
        }
        let seg = Seg {
            at: inner.clock.wall(at),
            client_ip: self.client_ip,
            server_port: self.server_port,
            dir,
            flags,
            seq,
            ack: self.next[dir.reverse().index()],
            payload,
        };
        inner.shared.queued.fetch_add(len, Ordering::Relaxed);
        if inner.tx.try_send(Msg::Seg(seg)).is_err() {
            inner.shared.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped(len);
        }
    }

    fn dropped(&self, len: usize) {
        let inner = &*self.inner;
        inner.shared.counters.drop_one(len);
        if !inner.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(intercept = %inner.name, "capture queue full: segments dropped (counted; the capture shows gaps)");
        }
    }
}

impl crate::observe::TapFollower for CaptureConn {
    fn event(&mut self, event: &TapEvent) {
        CaptureConn::event(self, event);
    }
}

impl Drop for CaptureConn {
    fn drop(&mut self) {
        // The tap gave up (or the observer ended) before the relay did: close it here.
        if self.started && !self.closed {
            self.close(Instant::now());
        }
    }
}

/// The daemon's port in the framing of a connection whose first chunk is `first`, read in
/// direction `dir`: HTTP/1 requests get Wireshark's HTTP port.
fn server_port(dir: Direction, first: &[u8]) -> u16 {
    let http1 = dir == Direction::ClientToServer
        && match sniff::sniff(first) {
            Some(Protocol::Http1) => true,
            None => !PREFACE.starts_with(first),
            Some(Protocol::Http2 | Protocol::Opaque) => false,
        };
    if http1 { HTTP1_PORT } else { OTHER_PORT }
}

/// The Ethernet frame of one synthetic segment.
fn frame(seg: &Seg, ip_id: u16) -> Vec<u8> {
    let client = Endpoint {
        mac: CLIENT_MAC,
        ip: seg.client_ip,
        port: CLIENT_PORT,
    };
    let server = Endpoint {
        mac: SERVER_MAC,
        ip: SERVER_IP,
        port: seg.server_port,
    };
    let (src, dst) = match seg.dir {
        Direction::ClientToServer => (client, server),
        Direction::ServerToClient => (server, client),
    };
    pcapng::tcp_frame(
        &Segment {
            src,
            dst,
            seq: seg.seq,
            ack: seg.ack,
            flags: seg.flags,
            ip_id,
        },
        &seg.payload,
    )
}

/// Microseconds since the Unix epoch, a packet block's timestamp.
fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// Create `dir` (0700) if it is missing, then the numbers of the files `<name><infix><n>.pcapng`
/// already in it, oldest first, with their paths.
fn existing_files(dir: &Path, name: &str, infix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut existing = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = numbered(name, infix, &entry.file_name().to_string_lossy()) {
            existing.push((n, entry.path()));
        }
    }
    existing.sort();
    Ok(existing)
}

/// A new file, 0600, never one that exists.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A file's first blocks: its section and the one interface, named after the intercept.
fn file_head(name: &str, description: &str) -> Vec<u8> {
    [
        pcapng::section_header(concat!("runtime-tap ", env!("CARGO_PKG_VERSION"))),
        pcapng::interface(name, description),
    ]
    .concat()
}

/// The writer thread's state: the current file and the ones kept.
struct FileWriter {
    config: CaptureConfig,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file.
    written: u64,
    /// Files of this intercept in the directory, oldest first, the current one last.
    kept: VecDeque<PathBuf>,
    next_index: u64,
    ip_id: u16,
}

impl FileWriter {
    fn open(mut config: CaptureConfig) -> io::Result<FileWriter> {
        config.files = config.files.max(1);
        let existing = existing_files(&config.dir, &config.name, "-")?;
        let next_index = existing.last().map_or(0, |(n, _)| n + 1);
        let mut w = FileWriter {
            config,
            file: None,
            written: 0,
            kept: existing.into_iter().map(|(_, p)| p).collect(),
            next_index,
            ip_id: 0,
        };
        w.next_file()?;
        Ok(w)
    }

    /// Close the current file, start the next, delete the oldest beyond the count kept.
    fn next_file(&mut self) -> io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        let (file, path) = loop {
            let path = self
                .config
                .dir
                .join(format!("{}-{}.pcapng", self.config.name, self.next_index));
            self.next_index += 1;
            match create_private(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let mut file = BufWriter::with_capacity(256 * 1024, file);
        let head = file_head(
            &self.config.name,
            "runtime-tap synthetic TCP/IPv4 framing of a unix socket's connections",
        );
        file.write_all(&head)?;
        self.written = head.len() as u64;
        self.file = Some(file);
        self.kept.push_back(path);
        while self.kept.len() > self.config.files {
            if let Some(old) = self.kept.pop_front() {
                let _ = std::fs::remove_file(&old);
            }
        }
        Ok(())
    }

    fn run(mut self, rx: Receiver<Msg>, inner: &Shared) {
        let mut failed = false;
        while let Ok(first) = rx.recv() {
            let mut msg = Some(first);
            while let Some(m) = msg.take() {
                match m {
                    Msg::Seg(seg) => {
                        inner.queued.fetch_sub(seg.payload.len(), Ordering::Relaxed);
                        if failed {
                            inner.counters.drop_one(seg.payload.len());
                        } else if let Err(e) = self.write(&seg, inner) {
                            failed = true;
                            inner.counters.drop_one(seg.payload.len());
                            tracing::error!(intercept = %self.config.name, error = %e, "capture stopped: cannot write the capture file");
                        }
                    }
                    Msg::Flush(ack) => {
                        if let Some(f) = self.file.as_mut() {
                            let _ = f.flush();
                        }
                        let _ = ack.send(());
                    }
                }
                msg = rx.try_recv().ok();
            }
            // The queue is empty: what was written is on disk for readers of the file.
            if let Some(f) = self.file.as_mut()
                && let Err(e) = f.flush()
                && !failed
            {
                failed = true;
                tracing::error!(intercept = %self.config.name, error = %e, "capture stopped: cannot write the capture file");
            }
        }
        if let Some(mut f) = self.file.take() {
            let _ = f.flush();
        }
    }

    fn write(&mut self, seg: &Seg, inner: &Shared) -> io::Result<()> {
        self.ip_id = self.ip_id.wrapping_add(1);
        let block = pcapng::packet(micros(seg.at), &frame(seg, self.ip_id));
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("no capture file open"));
        };
        file.write_all(&block)?;
        self.written += block.len() as u64;
        inner.counters.segments.fetch_add(1, Ordering::Relaxed);
        if self.written >= self.config.max_bytes {
            self.next_file()?;
            inner.counters.files_opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The client address of connection `id` in captures: 10.1.0.0 + id, wrapping within
/// 10.1.0.0–10.254.255.255 (16 million connections before one repeats).
pub fn client_ip(id: u64) -> Ipv4Addr {
    const SPAN: u64 = 254 << 16;
    let n = id % SPAN;
    Ipv4Addr::new(10, (1 + (n >> 16)) as u8, (n >> 8) as u8, n as u8)
}

/// `n` if `file` is `<name>-<n>.pcapng`.
fn file_index(name: &str, file: &str) -> Option<u64> {
    numbered(name, "-", file)
}

/// `n` if `file` is `<name><infix><n>.pcapng`.
fn numbered(name: &str, infix: &str, file: &str) -> Option<u64> {
    file.strip_prefix(name)?
        .strip_prefix(infix)?
        .strip_suffix(".pcapng")?
        .parse()
        .ok()
}

/// The capture files of intercept `name` in `dir`, oldest first.
pub fn files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| file_index(name, &e.file_name().to_string_lossy()).map(|n| (n, e.path())))
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_index("dockerd", "dockerd-12.pcapng"), Some(12));
        assert_eq!(file_index("dockerd", "dockerd-x.pcapng"), None);
        assert_eq!(file_index("docker", "dockerd-1.pcapng"), None);
    }

    #[test]
    fn client_addresses() {
        assert_eq!(client_ip(0), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(client_ip(258), Ipv4Addr::new(10, 1, 1, 2));
        assert_eq!(client_ip((254 << 16) - 1), Ipv4Addr::new(10, 254, 255, 255));
        assert_eq!(client_ip(254 << 16), Ipv4Addr::new(10, 1, 0, 0));
    }
}
