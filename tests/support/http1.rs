//! A minimal HTTP/1.1 client over one keep-alive unix-socket connection, as the docker CLI
//! talks to dockerd: requests one after another on the same connection, responses framed by
//! Content-Length or chunked encoding.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Response heads larger than this are a broken peer, not a response.
const MAX_HEAD: usize = 64 * 1024;

pub struct KeepAlive {
    conn: BufReader<UnixStream>,
}

/// One response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl KeepAlive {
    pub async fn connect(socket: &Path) -> std::io::Result<KeepAlive> {
        Ok(KeepAlive {
            conn: BufReader::new(UnixStream::connect(socket).await?),
        })
    }

    /// `GET path` on this connection; errors when the connection fails or the answer is not
    /// HTTP/1.1 framed as this client understands.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Response> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: runtime-tap-soak/1.0\r\n\r\n");
        self.conn.get_mut().write_all(req.as_bytes()).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> std::io::Result<Response> {
        let mut head = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            if self.conn.read_until(b'\n', &mut line).await? == 0 {
                return Err(bad("connection closed before the response head ended"));
            }
            head.extend_from_slice(&line);
            if head.len() > MAX_HEAD {
                return Err(bad("response head too large"));
            }
            if line == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else { continue };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(v.parse::<usize>().map_err(|_| bad("bad content-length"))?);
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        let body = if chunked {
            self.read_chunked().await?
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            self.conn.read_exact(&mut body).await?;
            body
        };
        Ok(Response { status, body })
    }

    async fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers (none expected) up to the empty line.
                loop {
                    line.clear();
                    if self.conn.read_line(&mut line).await? == 0 || line == "\r\n" {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            self.conn.read_exact(&mut body[start..]).await?;
            body.truncate(start + size);
        }
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}
