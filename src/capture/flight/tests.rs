use std::os::unix::fs::PermissionsExt;

use super::*;

const C: Direction = Direction::ClientToServer;
const S: Direction = Direction::ServerToClient;

fn chunk(n: usize, byte: u8) -> Vec<u8> {
    vec![byte; n]
}

/// The ring never holds more than its size; what goes is the intercept's oldest chunk,
/// whichever connection holds it, whole; each connection's start stays.
#[test]
fn ring_evicts_the_oldest_whole_chunks_and_keeps_each_start() {
    let limit = 128 * 1024;
    let mut ring = Ring::new(limit);
    let t = Instant::now();
    ring.open(1);
    ring.open(2);
    // Each connection's first 4 KiB: pinned.
    ring.push(1, C, t, &chunk(4096, b'a'));
    ring.push(2, C, t, &chunk(4096, b'b'));
    for i in 0..200u64 {
        let conn = 1 + i % 2;
        ring.push(conn, if i % 3 == 0 { S } else { C }, t, &chunk(1000 + i as usize, b'x'));
        assert!(ring.bytes() <= limit, "after chunk {i}: {} bytes", ring.bytes());
    }
    let one = ring.snapshot(1).unwrap();
    let two = ring.snapshot(2).unwrap();
    assert!(
        ring.bytes() > limit - 1200,
        "evicts no more than it must: {}",
        ring.bytes()
    );
    assert_eq!(one.bytes() + two.bytes(), ring.bytes());
    // The starts are intact: all of the first 4 KiB, and 12 KiB more of the next chunks
    // made each connection's 16 KiB pinned.
    for (snap, byte) in [(&one, b'a'), (&two, b'b')] {
        assert_eq!(&snap.pinned[0].bytes[..], &chunk(4096, byte)[..]);
        assert_eq!(snap.pinned.iter().map(|c| c.bytes.len()).sum::<usize>(), PINNED_BYTES);
        assert!(snap.evicted > 0);
    }
    // The ring chunks left are the newest, whole (sizes 1000 + i), in order, and continuous
    // in their stream after the gap.
    let sizes: Vec<usize> = one.chunks.iter().map(|c| c.bytes.len()).collect();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    assert!(sizes.iter().all(|s| (1000..1200).contains(s)), "{sizes:?}");
    assert_eq!(*sizes.last().unwrap(), 1000 + 198);
    let total_one: u64 = 4096 + (0..200u64).filter(|i| i % 2 == 0).map(|i| 1000 + i).sum::<u64>();
    assert_eq!(one.bytes() as u64 + one.evicted, total_one);
    // An ended connection's bytes are let go at once.
    ring.close(1);
    assert_eq!(ring.bytes(), two.bytes());
    assert!(ring.snapshot(1).is_none());
    ring.close(2);
    assert_eq!(ring.bytes(), 0);
}

/// Pinned starts are bounded too: a quarter of the ring, so many connections cannot fill it
/// with starts.
#[test]
fn pinned_starts_take_at_most_a_quarter_of_the_ring() {
    let limit = 64 * 1024;
    let mut ring = Ring::new(limit);
    let t = Instant::now();
    for conn in 0..20 {
        ring.open(conn);
        ring.push(conn, C, t, &chunk(PINNED_BYTES, b'p'));
    }
    let pinned: usize = (0..20).map(|c| ring.snapshot(c).unwrap().pinned_bytes()).sum();
    assert_eq!(pinned, limit / 4);
    assert!(ring.bytes() <= limit);
}

impl Snapshot {
    fn pinned_bytes(&self) -> usize {
        self.pinned.iter().map(|c| c.bytes.len()).sum()
    }
}

#[test]
fn rate_limit_admits_per_minute() {
    let mut r = RateLimit::new(3);
    let t = Instant::now();
    assert!(r.admit(t));
    assert!(r.admit(t + Duration::from_secs(10)));
    assert!(r.admit(t + Duration::from_secs(20)));
    assert!(!r.admit(t + Duration::from_secs(30)));
    assert!(!r.admit(t + Duration::from_secs(59)));
    // The first one is a minute old: one more.
    assert!(r.admit(t + Duration::from_secs(60)));
    assert!(!r.admit(t + Duration::from_secs(61)));
    assert!(r.admit(t + Duration::from_secs(121)));
}

fn temp_dir(label: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtap-flight-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn call(conn: u64, span: u8) -> DumpCall {
    let now = SystemTime::now();
    DumpCall {
        conn,
        span_id: [span; 8],
        name: "runtime.v1.ImageService/PullImage".into(),
        reason: "error: rpc UNKNOWN".into(),
        start: now - Duration::from_secs(1),
        end: now,
    }
}

/// A dump waits for its trace id, is written 0600 in a 0700 directory with the span in its
/// comments; dumps past the rate are counted, not written; the newest files are kept.
#[test]
fn dumps_are_written_with_the_span_limited_and_rotated() {
    let dir = temp_dir("dump").join("sub");
    let r = FlightRecorder::start(
        FlightConfig {
            name: "containerd".into(),
            dir: dir.clone(),
            bytes: MIN_BYTES,
            files: 2,
            per_minute: 3,
        },
        Clock::new(),
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let mut conn = r.connection(7);
    assert_eq!(r.dump(call(7, 1)), Err(Skip::NoBytes));
    let at = Instant::now();
    for (dir_, bytes) in [
        (C, &b"GET /v1.41/x HTTP/1.1\r\n\r\n"[..]),
        (S, &b"HTTP/1.1 500 Oops\r\n\r\n"[..]),
    ] {
        conn.event(&TapEvent::Data {
            dir: dir_,
            at,
            bytes: Bytes::copy_from_slice(bytes),
        });
    }
    let files: Vec<String> = (1..=3).map(|s| r.dump(call(7, s)).unwrap()).collect();
    assert_eq!(files[0], "containerd-flight-0.pcapng");
    assert_eq!(r.dump(call(7, 4)), Err(Skip::RateLimited));
    assert_eq!(r.skipped(Skip::RateLimited), 1);
    assert_eq!(r.skipped(Skip::NoBytes), 1);
    r.traced([1; 8], [0xab; 16]);
    // The other two are written without a trace id at the flush.
    assert!(r.flush(Duration::from_secs(5)));
    assert_eq!(r.dumps(), 3);
    // Two kept: the first written (the traced one) was deleted.
    let mut kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let file = dir.join(&kept[0]);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("call end: runtime.v1.ImageService/PullImage"), "{text}");
    assert!(text.contains("span_id=0202020202020202") || text.contains("span_id=0303030303030303"));
    assert!(text.contains("trace_id=unknown"));
    drop(conn);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The traced dump names its trace, on the first and the last packet.
#[test]
fn a_traced_dump_names_its_trace() {
    let dir = temp_dir("traced");
    let r = FlightRecorder::start(
        FlightConfig {
            name: "dockerd".into(),
            dir: dir.clone(),
            bytes: MIN_BYTES,
            files: 4,
            per_minute: 10,
        },
        Clock::new(),
    )
    .unwrap();
    let mut conn = r.connection(9);
    conn.event(&TapEvent::Data {
        dir: C,
        at: Instant::now(),
        bytes: Bytes::from_static(b"POST /v1.41/containers/x/start HTTP/1.1\r\n\r\n"),
    });
    let file = r.dump(call(9, 5)).unwrap();
    r.traced([5; 8], [0xcd; 16]);
    assert!(r.flush(Duration::from_secs(5)));
    let text = String::from_utf8_lossy(&std::fs::read(dir.join(&file)).unwrap()).into_owned();
    let want = format!("trace_id={} span_id={}", "cd".repeat(16), "05".repeat(8));
    assert_eq!(
        text.matches(&want).count(),
        3,
        "first packet, call start, call end: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
