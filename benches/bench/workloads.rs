//! The clients (and the bulk servers) of each workload. A client's cost is the same for every
//! target: the same code, the same buffers, on the same runtime; only the socket differs.
//! Each workload connects and warms up untimed, then calls `Meter::begin`, runs the timed
//! part, calls `Meter::end` while its connections are still open, and only then closes them.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::meter::Meter;

/// What one timed run did.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Calls, transfers or connections completed.
    pub ops: u64,
    /// Payload bytes moved (one direction), for the byte workloads.
    pub bytes: u64,
    pub elapsed: Duration,
    /// Per call (or per transfer, or per connection opened), nanoseconds.
    pub latencies_ns: Vec<u64>,
}

/// HTTP/2 windows of the benchmark's gRPC client: large enough that flow control is not what
/// limits a 256 MiB stream (grpc-go's own client grows to 16 MiB with BDP probing).
const H2_STREAM_WINDOW: u32 = 4 << 20;
const H2_CONN_WINDOW: u32 = 8 << 20;
const VERSION: &str = "http://localhost/containerd.services.version.v1.Version/Version";
const CONTENT_READ: &str = "http://localhost/containerd.services.content.v1.Content/Read";
/// containerd namespace the blob is ingested into and read from.
pub const NAMESPACE: &str = "bench";

/// Connects, retrying while the listener's backlog is full (socat listens with a backlog of 5).
async fn connect(sock: &Path) -> anyhow::Result<tokio::net::UnixStream> {
    let start = Instant::now();
    loop {
        match tokio::net::UnixStream::connect(sock).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connect {}", sock.display())),
        }
    }
}

/// A client's handle on one HTTP/2 connection.
pub type H2 = h2::client::SendRequest<Bytes>;

/// Connects and completes the HTTP/2 handshake; the returned task drives the connection.
pub async fn h2_connect(sock: &Path) -> anyhow::Result<(H2, tokio::task::JoinHandle<()>)> {
    let io = connect(sock).await?;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .handshake(io)
        .await
        .context("h2 handshake")?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, driver))
}

/// Sends one gRPC request (`message` already framed) and returns the response body's bytes
/// counted by `on_data`; fails unless HTTP 200 and grpc-status 0.
async fn grpc_call(
    send: &H2,
    uri: &str,
    message: Bytes,
    mut on_data: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let req = http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("containerd-namespace", NAMESPACE)
        .header("user-agent", "runtime-tap-bench/1.0")
        .body(())?;
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(req, false)?;
    stream.send_data(message, true)?;
    let response = response.await?;
    ensure!(response.status() == 200, "http status {}", response.status());
    let headers_status = response.headers().get("grpc-status").cloned();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        on_data(&chunk)?;
    }
    let trailers = body.trailers().await?;
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(headers_status);
    let code = status.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("none");
    if code != "0" {
        let msg = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        bail!("grpc-status {code}: {msg}");
    }
    Ok(())
}

/// One Version/Version call: an empty request, a non-empty response.
pub async fn version(send: &H2) -> anyhow::Result<()> {
    let mut n = 0;
    grpc_call(send, VERSION, Bytes::from_static(&[0; 5]), |d| {
        n += d.len();
        Ok(())
    })
    .await?;
    ensure!(n > 5, "empty Version response");
    Ok(())
}

/// Runs `calls` Version calls from `concurrency` tasks over one HTTP/2 connection.
pub async fn version_batch(send: &H2, concurrency: usize, calls: u64) -> anyhow::Result<Vec<u64>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let send = send.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity((calls as usize / concurrency) + 1);
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let t = Instant::now();
                version(&send).await?;
                lat.push(t.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(calls as usize);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// (a) unary gRPC `Version/Version` against containerd, `concurrency` calls in flight on one
/// HTTP/2 connection.
pub async fn unary(
    sock: PathBuf,
    concurrency: usize,
    calls: u64,
    warmup: u64,
    meter: &mut Meter,
) -> anyhow::Result<Sample> {
    let (send, driver) = h2_connect(&sock).await?;
    version_batch(&send, concurrency, warmup).await.context("warm-up")?;
    meter.begin();
    let t0 = Instant::now();
    let lat = version_batch(&send, concurrency, calls).await;
    let elapsed = t0.elapsed();
    tokio::task::block_in_place(|| meter.end(calls + warmup));
    drop(send);
    driver.abort();
    let _ = driver.await;
    tokio::task::block_in_place(|| meter.closed());
    let lat = lat?;
    Ok(Sample {
        ops: lat.len() as u64,
        bytes: 0,
        elapsed,
        latencies_ns: lat,
    })
}

/// One `GET /_ping` on a keep-alive HTTP/1.1 connection; `buf` keeps what was read past it.
async fn ping(io: &mut tokio::net::UnixStream, buf: &mut BytesMut) -> anyhow::Result<()> {
    io.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: runtime-tap-bench/1.0\r\n\r\n")
        .await?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(buf)? {
            ensure!(resp.code == Some(200), "http status {:?}", resp.code);
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .context("no content-length in the /_ping response")?;
            while buf.len() < head + len {
                ensure!(io.read_buf(buf).await? > 0, "eof in body");
            }
            ensure!(&buf[head..head + len] == b"OK", "unexpected /_ping body");
            buf.advance(head + len);
            return Ok(());
        }
        ensure!(io.read_buf(buf).await? > 0, "eof in response head");
    }
}

/// (b) Docker `GET /_ping` over one keep-alive HTTP/1.1 connection, one at a time.
pub async fn docker_ping(sock: PathBuf, calls: u64, warmup: u64, meter: &mut Meter) -> anyhow::Result<Sample> {
    let mut io = connect(&sock).await?;
    let mut buf = BytesMut::with_capacity(4096);
    for _ in 0..warmup {
        ping(&mut io, &mut buf).await.context("warm-up")?;
    }
    meter.begin();
    let mut lat = Vec::with_capacity(calls as usize);
    let t0 = Instant::now();
    let mut result = Ok(());
    for _ in 0..calls {
        let t = Instant::now();
        if let Err(e) = ping(&mut io, &mut buf).await {
            result = Err(e);
            break;
        }
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = t0.elapsed();
    tokio::task::block_in_place(|| meter.end(calls + warmup));
    drop(io);
    tokio::task::block_in_place(|| meter.closed());
    result?;
    Ok(Sample {
        ops: calls,
        bytes: 0,
        elapsed,
        latencies_ns: lat,
    })
}

/// Block size of the bulk client and servers.
const BLOCK: usize = 256 * 1024;

/// The bytes the bulk client sends, repeated: pseudo-random (xorshift), so no relay can
/// mistake them for HTTP and no layer can compress them.
fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_all_pattern(w: &mut std::os::unix::net::UnixStream, pat: &[u8], total: u64) -> std::io::Result<()> {
    let mut left = total;
    while left > 0 {
        let n = left.min(pat.len() as u64) as usize;
        w.write_all(&pat[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// One transfer to the sink: write `total` bytes, half-close, read the sink's 8-byte count.
/// Timed from before connect to the count, so it ends when the sink has every byte.
fn sink_transfer(sock: &Path, pat: &[u8], total: u64) -> anyhow::Result<(Duration, std::os::unix::net::UnixStream)> {
    let t0 = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
    write_all_pattern(&mut s, pat, total)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).context("read the sink's count")?;
    let elapsed = t0.elapsed();
    let got = u64::from_be_bytes(ack);
    ensure!(got == total, "sink got {got} bytes of {total}");
    Ok((elapsed, s))
}

/// One transfer through the echo server: a writer thread sends `total` bytes and half-closes
/// while this thread reads them back, checks them, and waits for the echo's EOF.
fn echo_transfer(
    sock: &Path,
    pat: &Arc<Vec<u8>>,
    total: u64,
) -> anyhow::Result<(Duration, std::os::unix::net::UnixStream)> {
    let t0 = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
    let mut w = s.try_clone()?;
    let p = pat.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        write_all_pattern(&mut w, &p, total)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut buf = vec![0u8; BLOCK];
    let mut got: u64 = 0;
    let mut bad = false;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Compare with the pattern at the same offset (the pattern repeats every BLOCK).
        let mut off = (got % BLOCK as u64) as usize;
        let mut i = 0;
        while i < n {
            let m = (n - i).min(BLOCK - off);
            bad |= buf[i..i + m] != pat[off..off + m];
            i += m;
            off = 0;
        }
        got += n as u64;
    }
    let elapsed = t0.elapsed();
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    ensure!(got == total, "echo returned {got} bytes of {total}");
    ensure!(!bad, "echo returned different bytes");
    Ok((elapsed, s))
}

/// (c) bulk bytes through an opaque connection, to the sink (`echo` false) or through the
/// echo server. Blocking; runs on its own threads, off the async runtime.
pub fn bulk(sock: &Path, echo: bool, total: u64, meter: &mut Meter) -> anyhow::Result<Sample> {
    let pat = Arc::new(pattern());
    // Warm-up: 1 MiB on a connection of its own.
    if echo {
        echo_transfer(sock, &pat, 1 << 20).context("warm-up")?;
    } else {
        sink_transfer(sock, &pat, 1 << 20).context("warm-up")?;
    }
    meter.begin();
    let r = if echo {
        echo_transfer(sock, &pat, total)
    } else {
        sink_transfer(sock, &pat, total)
    };
    meter.end(0);
    let (elapsed, conn) = match r {
        Ok(x) => x,
        Err(e) => {
            meter.closed();
            return Err(e);
        }
    };
    drop(conn);
    meter.closed();
    Ok(Sample {
        ops: 1,
        bytes: total,
        elapsed,
        latencies_ns: vec![elapsed.as_nanos() as u64],
    })
}

/// The request of `Content/Read` for the whole blob: `ReadContentRequest{digest}` (offset 0,
/// size 0 = to the end), or its first `size` bytes.
fn read_request(digest: &str, size: u64) -> Bytes {
    let mut m = Vec::new();
    m.push(0x0a);
    put_varint(&mut m, digest.len() as u64);
    m.extend_from_slice(digest.as_bytes());
    if size > 0 {
        m.push(0x18);
        put_varint(&mut m, size);
    }
    let mut f = Vec::with_capacity(m.len() + 5);
    f.push(0);
    f.extend_from_slice(&(m.len() as u32).to_be_bytes());
    f.extend_from_slice(&m);
    Bytes::from(f)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Walks gRPC message framing across chunks without buffering messages: counts messages and
/// their bytes.
#[derive(Default)]
struct Frames {
    head: Vec<u8>,
    left: u64,
    messages: u64,
    message_bytes: u64,
}

impl Frames {
    fn feed(&mut self, mut d: &[u8]) {
        while !d.is_empty() {
            if self.left > 0 {
                let n = (d.len() as u64).min(self.left);
                self.left -= n;
                d = &d[n as usize..];
                continue;
            }
            let need = 5 - self.head.len();
            let n = need.min(d.len());
            self.head.extend_from_slice(&d[..n]);
            d = &d[n..];
            if self.head.len() == 5 {
                self.left = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]) as u64;
                self.messages += 1;
                self.message_bytes += self.left;
                self.head.clear();
            }
        }
    }
}

async fn read_blob(send: &H2, digest: &str, size: u64, expect: u64) -> anyhow::Result<()> {
    let mut f = Frames::default();
    grpc_call(send, CONTENT_READ, read_request(digest, size), |d| {
        f.feed(d);
        Ok(())
    })
    .await?;
    ensure!(f.left == 0 && f.head.is_empty(), "stream ended inside a message");
    // Each ReadContentResponse is {offset varint, data bytes}: a few bytes over its data.
    ensure!(
        f.message_bytes >= expect && f.message_bytes <= expect + 24 * f.messages,
        "read {} message bytes in {} messages for a {expect}-byte blob",
        f.message_bytes,
        f.messages
    );
    Ok(())
}

/// (d) containerd `Content/Read` of the whole blob: one server-streaming call.
pub async fn content_read(sock: PathBuf, digest: String, size: u64, meter: &mut Meter) -> anyhow::Result<Sample> {
    let (send, driver) = h2_connect(&sock).await?;
    // Warm-up: the first MiB.
    read_blob(&send, &digest, 1 << 20, 1 << 20).await.context("warm-up")?;
    meter.begin();
    let t0 = Instant::now();
    let r = read_blob(&send, &digest, 0, size).await;
    let elapsed = t0.elapsed();
    tokio::task::block_in_place(|| meter.end(2));
    drop(send);
    driver.abort();
    let _ = driver.await;
    tokio::task::block_in_place(|| meter.closed());
    r?;
    Ok(Sample {
        ops: 1,
        bytes: size,
        elapsed,
        latencies_ns: vec![elapsed.as_nanos() as u64],
    })
}

/// How many connections the idle workload opens at a time.
const IDLE_OPEN_CONCURRENCY: usize = 8;

/// (e) `conns` idle connections to containerd: each opened with an HTTP/2 handshake and one
/// Version call (so the whole path, decoder state included, exists), all held for `hold`;
/// the meter's end (RSS with every connection held) is read at the end of the hold.
pub async fn idle(sock: PathBuf, conns: usize, hold: Duration, meter: &mut Meter) -> anyhow::Result<Sample> {
    meter.begin();
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(IDLE_OPEN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let sem = sem.clone();
        let sock = sock.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let t = Instant::now();
            let (send, driver) = h2_connect(&sock).await?;
            version(&send).await?;
            anyhow::Ok((send, driver, t.elapsed().as_nanos() as u64))
        }));
    }
    let mut held = Vec::with_capacity(conns);
    let mut lat = Vec::with_capacity(conns);
    let mut err = None;
    for t in tasks {
        match t.await? {
            Ok((send, driver, l)) => {
                held.push((send, driver));
                lat.push(l);
            }
            Err(e) => err = err.or(Some(e)),
        }
    }
    let elapsed = t0.elapsed();
    if err.is_none() {
        tokio::time::sleep(hold).await;
    }
    tokio::task::block_in_place(|| meter.end(conns as u64));
    for (send, driver) in held {
        drop(send);
        driver.abort();
        let _ = driver.await;
    }
    tokio::task::block_in_place(|| meter.closed());
    if let Some(e) = err {
        return Err(e);
    }
    Ok(Sample {
        ops: conns as u64,
        bytes: 0,
        elapsed,
        latencies_ns: lat,
    })
}

/// The bulk servers, run in a process of their own (`--serve-bulk SINK ECHO`): a thread per
/// connection, 256 KiB blocks. The sink reads to EOF and answers with the byte count (8 bytes,
/// big endian); the echo writes back what it reads and half-closes at EOF. Exits when its stdin
/// closes (the benchmark ended, however it ended).
pub fn serve_bulk(sink: &Path, echo: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(sink);
    let _ = std::fs::remove_file(echo);
    let sink_l = std::os::unix::net::UnixListener::bind(sink)?;
    let echo_l = std::os::unix::net::UnixListener::bind(echo)?;
    std::thread::spawn(move || {
        for s in sink_l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; BLOCK];
                let mut n: u64 = 0;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => n += k as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    std::thread::spawn(move || {
        for s in echo_l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; BLOCK];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            if s.write_all(&buf[..k]).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let mut sink_stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink_stdin);
    let _ = std::fs::remove_file(sink);
    let _ = std::fs::remove_file(echo);
    Ok(())
}

/// Runs the client task of a once-only workload (accounting, growth) on `rt`, bounded by
/// `limit`: a task that panicked or ran past the limit is an error like the run's own.
pub fn run_bounded<T, F>(rt: &tokio::runtime::Runtime, limit: Duration, task: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    rt.block_on(async move {
        match tokio::time::timeout(limit, tokio::spawn(task)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow::anyhow!("client task: {e}")),
            Err(_) => Err(anyhow::anyhow!("run timed out after {} s", limit.as_secs())),
        }
    })
}
