//! The byte relay of one connection: both directions polled by one task, each chunk
//! offered to the tap as it is read (a refcount and a `try_send`) and written onward. Half-closes are propagated:
//! EOF from one side becomes shutdown(WR) towards the other, and the other direction
//! keeps flowing until it ends too.
//!
//! With propagation on (and only then) the client's chunks pass through the connection's
//! rewriter (`relay::rewrite`) before they are offered and written: the tap and the upstream
//! see the same, rewritten, bytes. Without it the path is unchanged.
//!
//! With decoding on, both directions also pass the connection's drain walker
//! (`wire::drain`), after the rewriter: it follows the bytes as forwarded and, once the
//! shutdown drain has begun ([`Relay::start_drain`]), adds the GOAWAY and PING frames or the
//! `Connection: close` it needs and removes what the client must not reach the daemon with.
//! The relay then ends on its own, without error, as soon as the walker says no call is left.
//!
//! A direction that streams bulk (a read filled its buffer) while nothing needs its bytes (the
//! tap is off or was let go, no rewriter still rewriting, no drain walker still following)
//! switches to splice(2) through a pipe (`relay::splice`): what was read into user space goes
//! out first, the pipe is emptied before EOF is passed on, and the byte counts stay exact.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::rewrite::{MAX_HOLD_TIME, Rewriter};
use super::settle::Watch;
use super::splice::{self, Pipe, Splice};
use super::tap::Tap;
use crate::wire::Direction;
use crate::wire::drain::Drain;
use crate::wire::inject::Injection;

/// Bytes moved each way, indexed by `Direction::index()`.
pub type ByteCounts = [u64; 2];

/// Which side of the relay failed, for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("read from {side} failed: {source}")]
    Read { side: &'static str, source: io::Error },
    #[error("write to {side} failed: {source}")]
    Write { side: &'static str, source: io::Error },
}

/// One direction's state: a read buffer and the chunk not yet fully written onward.
struct Half {
    dir: Direction,
    buf: BytesMut,
    /// The last chunk read, and how much of it is written onward.
    pending: Bytes,
    written: usize,
    read_done: bool,
    shutdown_done: bool,
    bytes: u64,
    /// What a read buffer is allocated with: the configured size, grown (up to
    /// [`BULK_CAPACITY`]) while reads keep filling the whole buffer.
    capacity: usize,
    /// A read filled the buffer while nothing decoded: splice from here on when allowed.
    bulk: bool,
    /// The kernel refused splice on this direction (or no pipe could be made): copy loop.
    no_splice: bool,
    /// The splice pipe, made at the first splice.
    pipe: Option<Pipe>,
}

/// Largest read buffer a direction grows to while it streams bulk through a connection nothing
/// decodes (opaque, or decoding given up): 4 × 64 KiB quarters the syscalls per byte, and only
/// a connection that fills its buffer read after read gets it, so thousands of idle or chatty
/// connections stay at the default.
const BULK_CAPACITY: usize = 256 * 1024;

impl Half {
    fn new(dir: Direction, capacity: usize) -> Half {
        // No allocation until the first read: idle connections cost no buffer.
        Half {
            dir,
            buf: BytesMut::new(),
            pending: Bytes::new(),
            written: 0,
            read_done: false,
            shutdown_done: false,
            bytes: 0,
            capacity,
            bulk: false,
            no_splice: false,
            pipe: None,
        }
    }

    fn done(&self) -> bool {
        self.read_done && self.shutdown_done
    }

    /// Whether the next read may splice: bulk seen, both sockets spliceable, and nothing that
    /// needs the bytes (tap let go, rewriter passing bytes through, drain walker not following).
    fn may_splice<R: Splice, W: Splice>(
        &self,
        reader: &R,
        writer: &W,
        tap: &Tap,
        prop: Option<&Propagation>,
        drain: Option<&Drain>,
    ) -> bool {
        self.bulk
            && !self.no_splice
            && !tap.is_tapping()
            && prop.is_none_or(|p| p.rewriter.passing())
            && drain.is_none_or(Drain::passthrough)
            && reader.splice_fd().is_some()
            && writer.splice_fd().is_some()
    }

    /// One splice into the pipe (made now if this is the first): `Ok(true)` when it moved
    /// bytes or saw EOF, `Ok(false)` when splice is refused here (the copy loop takes over).
    fn poll_splice_in<R: Splice>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &R,
        tap: &mut Tap,
    ) -> Poll<Result<bool, RelayError>> {
        let (from, _) = sides(self.dir);
        if self.pipe.is_none() {
            match Pipe::new() {
                Ok(p) => self.pipe = Some(p),
                Err(e) => {
                    self.refuse_splice(from, &e, tap);
                    return Poll::Ready(Ok(false));
                }
            }
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        match ready!(pipe.poll_fill(cx, reader)) {
            Ok(0) => {
                self.read_done = true;
                tap.eof(self.dir);
            }
            Ok(n) => {
                self.bytes += n as u64;
                tap.count(self.dir, n);
            }
            Err(e) if splice::refused(&e) => {
                // Nothing moved: the copy loop reads the same bytes next.
                self.refuse_splice(from, &e, tap);
                return Poll::Ready(Ok(false));
            }
            Err(source) => return Poll::Ready(Err(RelayError::Read { side: from, source })),
        }
        Poll::Ready(Ok(true))
    }

    /// The kernel refused splice on `side` (or no pipe could be made): logged once, counted,
    /// and this direction stays on the copy loop.
    fn refuse_splice(&mut self, side: &'static str, e: &io::Error, tap: &mut Tap) {
        splice::note_refused(side, e);
        tap.splice_refused();
        self.no_splice = true;
    }

    /// Write out what the pipe holds. A writer that refuses splice gets the bytes through
    /// user space instead (they become the pending chunk, already counted and offered).
    fn poll_splice_out<W: Splice>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &W,
        tap: &mut Tap,
    ) -> Poll<Result<(), RelayError>> {
        let (_, to) = sides(self.dir);
        let Some(pipe) = self.pipe.as_mut().filter(|p| p.held() > 0) else {
            return Poll::Ready(Ok(()));
        };
        match ready!(pipe.poll_drain(cx, writer)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) if splice::refused(&e) => {
                let held = pipe.take_held();
                self.refuse_splice(to, &e, tap);
                self.pending = held.map_err(|source| RelayError::Write { side: to, source })?;
                self.written = 0;
                Poll::Ready(Ok(()))
            }
            Err(source) => Poll::Ready(Err(RelayError::Write { side: to, source })),
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        tap: &mut Tap,
        mut prop: Option<&mut Propagation>,
        mut drain: Option<&mut Drain>,
    ) -> Poll<Result<(), RelayError>>
    where
        R: AsyncRead + Splice + Unpin,
        W: AsyncWrite + Splice + Unpin,
    {
        let (from, to) = sides(self.dir);
        loop {
            // Spliced bytes are older than anything the copy loop reads next: out first.
            ready!(self.poll_splice_out(cx, &*writer, tap))?;
            // Write out what was read before reading more: the relay holds at most one
            // chunk per direction, so a slow reader back-pressures its writer.
            while self.written < self.pending.len() {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.pending[self.written..]))
                    .map_err(|source| RelayError::Write { side: to, source })?;
                if n == 0 {
                    return Poll::Ready(Err(RelayError::Write {
                        side: to,
                        source: io::ErrorKind::WriteZero.into(),
                    }));
                }
                self.written += n;
            }
            if self.read_done {
                if !self.shutdown_done {
                    // A peer that is already gone cannot take our FIN; that is not a relay error.
                    let _ = ready!(Pin::new(&mut *writer).poll_shutdown(cx));
                    self.shutdown_done = true;
                }
                return Poll::Ready(Ok(()));
            }
            if self.dir == Direction::ServerToClient
                && let Some(d) = drain.as_deref_mut()
                && let Some(ours) = d.due()
            {
                // The drain's frames, between two of the daemon's, before more is read.
                tap.goaways_sent(d.take_goaways());
                self.set_pending(ours, tap);
                continue;
            }
            if self.dir == Direction::ClientToServer
                && let Some(p) = prop.as_deref_mut()
                && let Some(held) = p.stalled(cx, tap)
            {
                // Bytes held back too long for a head that does not come: sent as they were.
                let held = walked(self.dir, held, drain.as_deref_mut(), tap);
                self.set_pending(held, tap);
                continue;
            }
            if self.may_splice(&*reader, &*writer, tap, prop.as_deref(), drain.as_deref()) {
                // Everything read into user space is written (above): the pipe takes over.
                if ready!(self.poll_splice_in(cx, &*reader, tap))? {
                    continue;
                }
            }
            if self.buf.capacity() < self.capacity / 4 {
                // Reclaims the old allocation when the tap has let go of it, else allocates.
                self.buf.reserve(self.capacity);
            }
            let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, &mut self.buf))
                .map_err(|source| RelayError::Read { side: from, source })?;
            if n == 0 {
                if self.dir == Direction::ClientToServer
                    && let Some(p) = prop.as_deref_mut()
                {
                    // A partial head held at the client's end goes out as it was.
                    let held = p.rewriter.release(None);
                    if !held.is_empty() {
                        // Read again after it is written: EOF again, with nothing held.
                        let held = walked(self.dir, held, drain.as_deref_mut(), tap);
                        self.set_pending(held, tap);
                        continue;
                    }
                }
                if let Some(d) = drain.as_deref_mut() {
                    // Bytes the drain held (a frame header, a response head) go out as they were.
                    let held = d.release(self.dir);
                    if !held.is_empty() {
                        // Read again after it is written: EOF again, with nothing held.
                        self.set_pending(held, tap);
                        continue;
                    }
                }
                self.read_done = true;
                tap.eof(self.dir);
            } else {
                self.bytes += n as u64;
                // Only while nothing decodes this connection: a decoder's queue and the
                // process-wide decode budget are sized in default chunks.
                if n >= self.capacity && !tap.is_tapping() {
                    self.capacity = (self.capacity * 2).min(BULK_CAPACITY);
                    self.bulk = true;
                }
                let chunk = self.buf.split().freeze();
                let chunk = match prop.as_deref_mut() {
                    None => chunk,
                    Some(p) => p.pass(self.dir, chunk, tap),
                };
                let chunk = walked(self.dir, chunk, drain.as_deref_mut(), tap);
                self.set_pending(chunk, tap);
            }
        }
    }
}

impl Half {
    /// `chunk` is what goes onward next.
    /// Everything read has been written onward.
    fn flushed(&self) -> bool {
        self.written >= self.pending.len() && self.pipe.as_ref().is_none_or(|p| p.held() == 0)
    }

    fn set_pending(&mut self, chunk: Bytes, tap: &mut Tap) {
        self.pending = chunk;
        self.written = 0;
        if !self.pending.is_empty() {
            // Offered as soon as it is read (a refcount, no copy, never a wait), so the
            // observer sees the two directions in causal order: a response can only
            // follow request bytes that were read, and now offered, before it.
            tap.offer(self.dir, self.pending.clone());
        }
    }
}

/// Propagation state of a connection: its rewriter and the clock on held bytes.
struct Propagation {
    rewriter: Rewriter,
    injected: Vec<Injection>,
    /// Armed while the rewriter holds bytes back.
    hold_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Propagation {
    /// Run a chunk through the rewriter: client chunks come back rewritten (injections
    /// announced to the tap first), server chunks are only read.
    fn pass(&mut self, dir: Direction, chunk: Bytes, tap: &mut Tap) -> Bytes {
        let out = match dir {
            Direction::ClientToServer => {
                let out = self.rewriter.client_bytes(chunk, &mut self.injected);
                for i in self.injected.drain(..) {
                    tap.injected(i);
                }
                if !out.is_empty() || self.rewriter.held() == 0 {
                    // Progress: the clock on held bytes starts again.
                    self.hold_deadline = None;
                }
                out
            }
            Direction::ServerToClient => {
                self.rewriter.server_bytes(&chunk);
                chunk
            }
        };
        if let Some(reason) = self.rewriter.take_give_up() {
            tap.rewrite_gave_up(reason);
        }
        out
    }

    /// Held bytes to send now when they have waited `MAX_HOLD_TIME` (rewriting then stops);
    /// otherwise arms or clears the deadline.
    fn stalled(&mut self, cx: &mut Context<'_>, tap: &mut Tap) -> Option<Bytes> {
        if self.rewriter.held() == 0 {
            self.hold_deadline = None;
            return None;
        }
        let deadline = self
            .hold_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(MAX_HOLD_TIME)));
        if deadline.as_mut().poll(cx).is_pending() {
            return None;
        }
        self.hold_deadline = None;
        let held = self.rewriter.release(Some("held_too_long"));
        if let Some(reason) = self.rewriter.take_give_up() {
            tap.rewrite_gave_up(reason);
        }
        Some(held)
    }
}

/// `chunk` as the drain walker forwards it (every byte that goes onward passes it, so that
/// it keeps in step; rewritten bytes included, after the rewriter).
fn walked(dir: Direction, chunk: Bytes, drain: Option<&mut Drain>, tap: &mut Tap) -> Bytes {
    let Some(d) = drain else { return chunk };
    let out = match dir {
        Direction::ClientToServer => d.client_bytes(chunk),
        Direction::ServerToClient => d.server_bytes(chunk),
    };
    tap.goaways_sent(d.take_goaways());
    out
}

fn sides(dir: Direction) -> (&'static str, &'static str) {
    match dir {
        Direction::ClientToServer => ("client", "upstream"),
        Direction::ServerToClient => ("upstream", "client"),
    }
}

/// Relays between `client` and `upstream` until both directions have ended or one side fails.
/// Resolves to the byte counts; on error the counts so far are in `Relay::counts`.
pub struct Relay<'a, C, U> {
    client: &'a mut C,
    upstream: &'a mut U,
    tap: &'a mut Tap,
    c2s: Half,
    s2c: Half,
    prop: Option<Propagation>,
    drain: Option<Drain>,
    /// Ended by the drain (no call left), not by the peers.
    drained: bool,
    /// While the shutdown settles: told, at each turn, whether this connection is busy.
    settle: Option<Watch>,
}

impl<'a, C, U> Relay<'a, C, U>
where
    C: AsyncRead + AsyncWrite + Splice + Unpin,
    U: AsyncRead + AsyncWrite + Splice + Unpin,
{
    pub fn new(client: &'a mut C, upstream: &'a mut U, tap: &'a mut Tap, buffer_size: usize) -> Self {
        Relay {
            client,
            upstream,
            tap,
            c2s: Half::new(Direction::ClientToServer, buffer_size),
            s2c: Half::new(Direction::ServerToClient, buffer_size),
            prop: None,
            drain: None,
            drained: false,
            settle: None,
        }
    }

    /// The shutdown settles (`relay::settle`): report whether this connection is busy now and
    /// after every turn from here on. A connection without a drain walker (decoding off) is
    /// never busy: nothing can be known of it, and it has the grace period anyway.
    pub fn settle(&mut self, watch: Option<Watch>) {
        self.settle = watch;
        self.report_busy();
    }

    fn report_busy(&mut self) {
        if let Some(w) = &mut self.settle {
            w.report(self.drain.as_ref().is_some_and(Drain::busy));
        }
    }

    /// Follow the connection for the shutdown drain (decoding on).
    pub fn with_drain(mut self) -> Self {
        self.drain = Some(Drain::new());
        self
    }

    /// Begin the shutdown drain: the relay ends as soon as no call is left on the connection.
    /// Without a drain walker (decoding off) nothing changes: the grace period applies.
    pub fn start_drain(&mut self) {
        if let Some(d) = &mut self.drain {
            d.start();
        }
    }

    /// Whether the relay ended because the drain found no call left.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Where the drain stands, for logs.
    pub fn drain_state(&self) -> String {
        self.drain
            .as_ref()
            .map_or_else(|| "not followed (decoding off)".into(), Drain::describe)
    }

    /// Whether this connection waits for the grace period whatever happens (opaque,
    /// switched protocols, no drain walker).
    pub fn left_to_grace(&self) -> bool {
        self.drain.as_ref().is_none_or(Drain::left_to_grace)
    }

    /// Client bytes go through `rewriter` (propagation on): the one mode that changes bytes.
    pub fn with_rewriter(mut self, rewriter: Rewriter) -> Self {
        self.prop = Some(Propagation {
            rewriter,
            injected: Vec::new(),
            hold_deadline: None,
        });
        self
    }

    /// Bytes relayed so far each way.
    pub fn counts(&self) -> ByteCounts {
        [self.c2s.bytes, self.s2c.bytes]
    }
}

impl<C, U> Future for Relay<'_, C, U>
where
    C: AsyncRead + AsyncWrite + Splice + Unpin,
    U: AsyncRead + AsyncWrite + Splice + Unpin,
{
    type Output = Result<ByteCounts, RelayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.c2s.done()
            && let Poll::Ready(Err(e)) = this.c2s.poll(
                cx,
                this.client,
                this.upstream,
                this.tap,
                this.prop.as_mut(),
                this.drain.as_mut(),
            )
        {
            return Poll::Ready(Err(e));
        }
        if !this.s2c.done()
            && let Poll::Ready(Err(e)) = this.s2c.poll(
                cx,
                this.upstream,
                this.client,
                this.tap,
                this.prop.as_mut(),
                this.drain.as_mut(),
            )
        {
            return Poll::Ready(Err(e));
        }
        this.report_busy();
        if this.c2s.done() && this.s2c.done() {
            Poll::Ready(Ok(this.counts()))
        } else if this.c2s.flushed()
            && this.s2c.flushed()
            && let Some(d) = &this.drain
            && d.finished(&|s| this.tap.long_lived().contains(s))
        {
            // Draining and no call left: dropping the sockets closes both sides.
            this.drained = true;
            Poll::Ready(Ok(this.counts()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;
    use crate::metrics::InterceptMetrics;

    const DEFAULT: usize = 64 * 1024;

    /// Sends `total` bytes from the client in `chunk`-sized writes, each answered by the
    /// upstream with one byte (a bulk upload when chunks are large, calls when small), and
    /// returns the client-to-upstream read buffer size the relay ended with.
    async fn relay_upload(total: usize, chunk: usize, decoded: bool) -> usize {
        let (mut client_app, mut client_end) = duplex(1 << 20);
        let (mut up_end, mut up_app) = duplex(1 << 20);
        // A decoding observer that keeps up (its queue is never full), or none.
        let (mut tap, _observer) = if decoded {
            let (tap, rx) = Tap::new(1 << 16, 1 << 30, InterceptMetrics::new("t"));
            (tap, Some(rx))
        } else {
            (Tap::off(InterceptMetrics::new("t")), None)
        };
        let mut relay = Relay::new(&mut client_end, &mut up_end, &mut tap, DEFAULT);
        let client = async move {
            let block = vec![7u8; chunk];
            let mut ack = [0u8; 1];
            for _ in 0..total / chunk {
                client_app.write_all(&block).await.unwrap();
                client_app.read_exact(&mut ack).await.unwrap();
            }
            client_app.shutdown().await.unwrap();
            let _ = client_app.read_to_end(&mut Vec::new()).await;
        };
        let upstream = async move {
            let mut buf = vec![0u8; chunk];
            for _ in 0..total / chunk {
                up_app.read_exact(&mut buf).await.unwrap();
                up_app.write_all(&[1]).await.unwrap();
            }
            up_app.shutdown().await.unwrap();
        };
        let (counts, (), ()) = tokio::join!(&mut relay, client, upstream);
        assert_eq!(counts.unwrap()[0], total as u64);
        relay.c2s.capacity
    }

    #[tokio::test]
    async fn a_direction_streaming_bulk_grows_its_buffer_to_the_bulk_size_and_no_further() {
        assert_eq!(relay_upload(16 << 20, 1 << 20, false).await, BULK_CAPACITY);
    }

    #[tokio::test]
    async fn a_decoded_direction_keeps_the_configured_buffer_whatever_it_streams() {
        assert_eq!(relay_upload(16 << 20, 1 << 20, true).await, DEFAULT);
    }

    #[tokio::test]
    async fn a_direction_carrying_small_messages_keeps_the_configured_buffer() {
        assert_eq!(relay_upload(1 << 20, 512, false).await, DEFAULT);
    }
}

#[cfg(test)]
mod splice_tests;
