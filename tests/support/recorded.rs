//! Byte-level checks for the relay's byte-exactness tests: a recording pump between a
//! protocol library and a socket (what one end really sent and received, every byte, until
//! EOF), and the structural undo of a propagated `traceparent` (HTTP/2 header blocks decoded
//! with `loona-hpack`, an HPACK decoder independent of the project's).

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;

/// Every byte one end wrote to its socket and read from it.
#[derive(Default)]
pub struct Recorded {
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
}

/// Connect a protocol library to `sock` through a pipe, recording both ways: returns the
/// library's end. The recording ends when both ways have seen EOF (the library closing its
/// end half-closes the socket; the socket's EOF half-closes the library's end), so what was
/// received is everything the far end sent, even after the library lost interest.
pub fn pump(sock: UnixStream) -> (DuplexStream, tokio::task::JoinHandle<Recorded>) {
    let (app, mine) = tokio::io::duplex(64 * 1024);
    let handle = tokio::spawn(async move {
        let (mut sock_r, mut sock_w) = sock.into_split();
        let (mut mine_r, mut mine_w) = tokio::io::split(mine);
        let out = async move {
            let mut sent = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = mine_r.read(&mut buf).await {
                if n == 0 || sock_w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                sent.extend_from_slice(&buf[..n]);
            }
            let _ = sock_w.shutdown().await;
            sent
        };
        let back = async move {
            let mut received = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut open = true;
            while let Ok(n) = sock_r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
                // The library may be gone; the socket is still read to its end.
                open = open && mine_w.write_all(&buf[..n]).await.is_ok();
            }
            let _ = mine_w.shutdown().await;
            received
        };
        let (sent, received) = tokio::join!(out, back);
        Recorded { sent, received }
    });
    (app, handle)
}

/// Connect to a unix socket (the intercept's), retrying briefly.
pub async fn connect(path: &Path) -> UnixStream {
    for _ in 0..500 {
        if let Ok(s) = UnixStream::connect(path).await {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("connect {}", path.display());
}

/// One HTTP/2 frame header.
#[derive(Clone, Copy, Debug)]
struct Frame {
    len: usize,
    kind: u8,
    flags: u8,
}

fn frame_at(b: &[u8], at: usize) -> Option<Frame> {
    let h = b.get(at..at + 9)?;
    Some(Frame {
        len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
        kind: h[3],
        flags: h[4],
    })
}

/// The HPACK fragments of the client header blocks of an HTTP/2 client stream, in order.
pub fn header_blocks(stream: &[u8]) -> Vec<Vec<u8>> {
    assert!(stream.starts_with(PREFACE), "an HTTP/2 client stream");
    let mut at = PREFACE.len();
    let mut blocks = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    while let Some(f) = frame_at(stream, at) {
        let payload = &stream[at + 9..at + 9 + f.len];
        at += 9 + f.len;
        let frag = match f.kind {
            HEADERS => {
                let mut p = payload;
                let mut pad = 0;
                if f.flags & PADDED != 0 {
                    pad = usize::from(p[0]);
                    p = &p[1..];
                }
                if f.flags & PRIORITY != 0 {
                    p = &p[5..];
                }
                &p[..p.len() - pad]
            }
            CONTINUATION => payload,
            _ => continue,
        };
        let mut b = pending.take().unwrap_or_default();
        b.extend_from_slice(frag);
        if f.flags & END_HEADERS != 0 {
            blocks.push(b);
        } else {
            pending = Some(b);
        }
    }
    blocks
}

/// Each block's header list, decoded in order by one HPACK decoder (one side's table).
pub fn header_lists(stream: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut d = loona_hpack::Decoder::new();
    header_blocks(stream)
        .iter()
        .map(|b| {
            let mut list = Vec::new();
            d.decode_with_cb(b, |n, v| {
                list.push((
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .expect("header block decodes");
            list
        })
        .collect()
}

/// HPACK literal without indexing, new name, raw strings: how the rewriter adds a field.
pub fn literal_field(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut f = vec![0x00, name.len() as u8];
    f.extend_from_slice(name.as_bytes());
    f.push(value.len() as u8);
    f.extend_from_slice(value.as_bytes());
    f
}

/// An HTTP/2 client stream with each of `fields` taken out of the frame that ends its
/// header block (that frame's length given back), in order. Panics when a field is not at
/// the end of a block (before its padding): the rewriter put it elsewhere.
pub fn undo_h2(stream: &[u8], fields: &[Vec<u8>]) -> Vec<u8> {
    let mut out = stream[..PREFACE.len()].to_vec();
    let mut at = PREFACE.len();
    let mut next = fields.iter().peekable();
    while let Some(f) = frame_at(stream, at) {
        let payload = &stream[at + 9..(at + 9 + f.len).min(stream.len())];
        let whole = &stream[at..at + 9 + payload.len()];
        at += 9 + payload.len();
        let ends_block = matches!(f.kind, HEADERS | CONTINUATION) && f.flags & END_HEADERS != 0;
        if let Some(field) = next.peek().filter(|_| ends_block) {
            let pad = if f.kind == HEADERS && f.flags & PADDED != 0 {
                usize::from(payload[0])
            } else {
                0
            };
            let cut = payload.len() - pad;
            assert_eq!(
                &payload[cut - field.len()..cut],
                &field[..],
                "the added field ends its header block"
            );
            let len = f.len - field.len();
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
            out.extend_from_slice(&whole[3..9]);
            out.extend_from_slice(&payload[..cut - field.len()]);
            out.extend_from_slice(&payload[cut..]);
            next.next();
            continue;
        }
        out.extend_from_slice(whole);
    }
    out.extend_from_slice(&stream[at..]);
    assert!(next.next().is_none(), "every added field found");
    out
}

/// An HTTP/1 client stream with each of `lines` (whole header lines, CRLF included) taken
/// out, each right after a request line.
pub fn undo_h1(stream: &[u8], lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = stream;
    for line in lines {
        let at = rest
            .windows(line.len())
            .position(|w| w == line.as_bytes())
            .expect("added line present");
        let request_line_start = rest[..at - 1].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let request_line = String::from_utf8_lossy(&rest[request_line_start..at]);
        assert!(
            request_line.ends_with(" HTTP/1.1\r\n"),
            "added line right after the request line, not after {request_line:?}"
        );
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + line.len()..];
    }
    out.extend_from_slice(rest);
    out
}
