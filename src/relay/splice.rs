//! Zero-copy bulk: a direction that nothing reads (no observer, no rewriter, no drain walker
//! that still follows) moves its bytes socket -> pipe -> socket with splice(2), as HAProxy does
//! on TCP, instead of through a user-space buffer. The relay (`copy`) decides when; this file
//! owns the pipe and the two syscalls, driven by tokio's readiness of the sockets. Rule it
//! keeps: a byte in the pipe goes out before anything read later and before EOF is passed on,
//! and a splice the kernel refuses leaves every byte where the copy loop can take it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::{DuplexStream, Interest};

use super::stream::Stream;

/// The pipe size asked for with F_SETPIPE_SZ: one splice moves at most this much. 1 MiB is
/// the default `/proc/sys/fs/pipe-max-size`, so an unprivileged process gets it too; the
/// kernel allocates the pages only while bytes sit in the pipe. Measured against 256 KiB and
/// the default 64 KiB in README "Performance".
pub const PIPE_SIZE: usize = 1 << 20;

/// A refused splice (EINVAL and the like: a socket type the kernel cannot splice) is logged
/// once per process; each is counted per intercept (`runtime_tap_splice_refused_total`).
static REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

/// A socket splice can move bytes to or from: its descriptor and tokio's readiness of it.
/// Test doubles (in-memory duplex streams) have no descriptor and always take the copy loop.
pub trait Splice {
    /// The socket's descriptor; `None` when this stream cannot be spliced.
    fn splice_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Ready for `interest` (registers the waker when not).
    fn poll_splice_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>>;
    /// Runs `f` (one non-blocking syscall on the descriptor); a `WouldBlock` clears tokio's
    /// readiness so that the next [`poll_splice_ready`](Self::poll_splice_ready) waits.
    fn try_splice_io(&self, interest: Interest, f: &mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>;
}

impl Splice for Stream {
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        })
    }

    fn poll_splice_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        match (self, interest == Interest::READABLE) {
            (Stream::Unix(s), true) => s.poll_read_ready(cx),
            (Stream::Unix(s), false) => s.poll_write_ready(cx),
            (Stream::Tcp(s), true) => s.poll_read_ready(cx),
            (Stream::Tcp(s), false) => s.poll_write_ready(cx),
        }
    }

    fn try_splice_io(&self, interest: Interest, f: &mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_io(interest, f),
            Stream::Tcp(s) => s.try_io(interest, f),
        }
    }
}

impl Splice for DuplexStream {
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn poll_splice_ready(&self, _: &mut Context<'_>, _: Interest) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    fn try_splice_io(&self, _: Interest, _: &mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// One direction's pipe, created when the direction first splices.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet written onward.
    held: usize,
    /// What one splice into the pipe asks for: the pipe's real size.
    size: usize,
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

impl Pipe {
    /// A non-blocking pipe of [`PIPE_SIZE`] (or what the kernel grants).
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = i32::try_from(PIPE_SIZE).unwrap_or(i32::MAX);
        // Refused past pipe-max-size or the user's pipe quota: the default size still works.
        let size = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
            .map_or(64 * 1024, |n| usize::try_from(n).unwrap_or(64 * 1024));
        Ok(Pipe {
            read,
            write,
            held: 0,
            size,
        })
    }

    /// Bytes in the pipe, not yet written onward.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Splice from `from` into the (empty) pipe: `Ok(n)` bytes moved, `Ok(0)` at EOF.
    /// Call only while [`held`](Self::held) is 0: a full pipe would also say EAGAIN, and the
    /// wait would then be for a socket that is already readable.
    pub fn poll_fill<S: Splice + ?Sized>(&mut self, cx: &mut Context<'_>, from: &S) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.held, 0);
        let Some(fd) = from.splice_fd() else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        let (write, size) = (&self.write, self.size);
        loop {
            ready!(from.poll_splice_ready(cx, Interest::READABLE))?;
            let mut once = || splice(fd, None, write, None, size, FLAGS).map_err(io::Error::from);
            match from.try_splice_io(Interest::READABLE, &mut once) {
                Ok(n) => {
                    self.held = n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Splice what the pipe holds to `to`, until it is empty.
    pub fn poll_drain<S: Splice + ?Sized>(&mut self, cx: &mut Context<'_>, to: &S) -> Poll<io::Result<()>> {
        let Some(fd) = to.splice_fd() else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        while self.held > 0 {
            ready!(to.poll_splice_ready(cx, Interest::WRITABLE))?;
            let (read, held) = (&self.read, self.held);
            let mut once = || splice(read, None, fd, None, held, FLAGS).map_err(io::Error::from);
            match to.try_splice_io(Interest::WRITABLE, &mut once) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.held -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// What the pipe holds, read into user space (the writer refused splice: the copy loop
    /// writes these bytes next, so none is lost or reordered).
    pub fn take_held(&mut self) -> io::Result<Bytes> {
        let mut out = BytesMut::zeroed(self.held);
        let mut at = 0;
        while at < out.len() {
            match nix::unistd::read(&self.read, &mut out[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.truncate(at);
        self.held = 0;
        Ok(out.freeze())
    }
}

/// Whether a splice error means "this kernel or socket type cannot splice" (take the copy
/// loop) rather than a failed read or write.
pub fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error().map(Errno::from_raw),
            Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
        )
}

/// Log a refusal, the first in the process only (the caller counts each).
pub fn note_refused(side: &str, e: &io::Error) {
    if !REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::info!(side, error = %e, "splice refused; this direction and any like it use the copy loop (logged once)");
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    use super::*;

    /// A writer that refuses splice gets the pipe's bytes through user space: all of them, in
    /// order, and the pipe is empty after.
    #[tokio::test]
    async fn bytes_in_the_pipe_can_be_taken_back_into_user_space() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        b.write_all(&data).await.unwrap();
        let from = Stream::Unix(a);
        let mut pipe = Pipe::new().unwrap();
        let mut got = Vec::new();
        while got.len() < data.len() {
            let n = poll_fn(|cx| pipe.poll_fill(cx, &from)).await.unwrap();
            assert_eq!(pipe.held(), n);
            got.extend_from_slice(&pipe.take_held().unwrap());
            assert_eq!(pipe.held(), 0);
        }
        assert!(got == data);
        drop(b);
        assert_eq!(poll_fn(|cx| pipe.poll_fill(cx, &from)).await.unwrap(), 0, "EOF");
    }

    #[test]
    fn the_pipe_gets_the_size_asked_for_or_the_default() {
        let size = Pipe::new().unwrap().size;
        assert!(size == PIPE_SIZE || size == 64 * 1024, "{size}");
    }

    #[test]
    fn refusals_are_told_from_failures() {
        assert!(refused(&io::Error::from_raw_os_error(libc_einval())));
        assert!(refused(&io::ErrorKind::Unsupported.into()));
        assert!(!refused(&io::ErrorKind::BrokenPipe.into()));
        assert!(!refused(&io::ErrorKind::ConnectionReset.into()));
    }

    fn libc_einval() -> i32 {
        Errno::EINVAL as i32
    }
}
