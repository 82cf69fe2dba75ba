//! Message heads: finding where a head (or a trailer section) ends, bounded, and parsing it
//! with httparse into owned values. Nothing here keeps bytes beyond one head.

pub use crate::wire::headers::Headers;

/// The fields httparse found, as owned [`Headers`].
fn headers_from_httparse(fields: &[httparse::Header<'_>]) -> Headers {
    let mut headers = Headers::with_capacity(fields.len(), fields.iter().map(|h| h.name.len() + h.value.len()).sum());
    for h in fields {
        headers.push(h.name, &String::from_utf8_lossy(h.value));
    }
    headers
}

/// Incremental search for the empty line that ends a head or trailer section.
///
/// Carries its state across chunks, so every byte is looked at once whatever the cuts.
/// Accepts CRLF and bare LF line ends, as the peers' parsers do.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EndScan {
    /// 0: inside a line; 1: at the start of a line; 2: at the start of a line after CR.
    state: u8,
}

impl EndScan {
    /// A scan for a section that may be empty (trailers): starts at a line start.
    pub(crate) fn at_line_start() -> Self {
        EndScan { state: 1 }
    }

    /// Looks for the end of the section in `data`; returns how many bytes of `data` belong
    /// to the section (terminator included) when it ends there.
    pub(crate) fn scan(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < data.len() {
            if self.state == 0 {
                // Inside a line: only a LF matters.
                match data[i..].iter().position(|&b| b == b'\n') {
                    Some(off) => {
                        i += off + 1;
                        self.state = 1;
                        continue;
                    }
                    None => return None,
                }
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (_, b'\n') => {
                    *self = EndScan::default();
                    return Some(i);
                }
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }
}

/// A parsed request line and fields.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: u8,
    pub headers: Headers,
}

/// A parsed status line and fields.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
}

/// Why a complete head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// More fields than the limit allows.
    TooManyHeaders,
    /// Not an HTTP/1.x head.
    Malformed,
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            _ => HeadError::Malformed,
        }
    }
}

/// Fields parsed with a stack array; only heads with more fall back to the heap.
const STACK_FIELDS: usize = 32;

/// Runs `parse` with room for at most `max` fields, on the stack when that is enough.
fn with_fields<'b, T>(
    max: usize,
    mut parse: impl FnMut(&mut [httparse::Header<'b>]) -> Result<httparse::Status<T>, httparse::Error>,
) -> Result<T, HeadError> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_FIELDS];
    let status = match parse(&mut stack[..max.min(STACK_FIELDS)]) {
        Err(httparse::Error::TooManyHeaders) if max > STACK_FIELDS => {
            let mut heap = vec![httparse::EMPTY_HEADER; max];
            parse(&mut heap)?
        }
        other => other?,
    };
    match status {
        httparse::Status::Complete(v) => Ok(v),
        // Callers pass a block that ends with the empty line.
        httparse::Status::Partial => Err(HeadError::Malformed),
    }
}

fn map_status<T, U>(s: httparse::Status<T>, f: impl FnOnce(T) -> U) -> httparse::Status<U> {
    match s {
        httparse::Status::Complete(v) => httparse::Status::Complete(f(v)),
        httparse::Status::Partial => httparse::Status::Partial,
    }
}

/// Parses a complete request head (`block` ends with the empty line).
pub(crate) fn parse_request(block: &[u8], max_headers: usize) -> Result<RequestHead, HeadError> {
    with_fields(max_headers, |fields| {
        let mut req = httparse::Request::new(fields);
        Ok(map_status(req.parse(block)?, |_| RequestHead {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            version: req.version.unwrap_or(1),
            headers: headers_from_httparse(req.headers),
        }))
    })
}

/// Parses a complete response head (`block` ends with the empty line).
pub(crate) fn parse_response(block: &[u8], max_headers: usize) -> Result<ResponseHead, HeadError> {
    with_fields(max_headers, |fields| {
        let mut resp = httparse::Response::new(fields);
        Ok(map_status(resp.parse(block)?, |_| ResponseHead {
            status: resp.code.unwrap_or_default(),
            headers: headers_from_httparse(resp.headers),
        }))
    })
}

/// Parses a complete trailer section (`block` ends with the empty line).
pub(crate) fn parse_trailers(block: &[u8], max_headers: usize) -> Result<Headers, HeadError> {
    with_fields(max_headers, |fields| {
        Ok(map_status(httparse::parse_headers(block, fields)?, |(_, parsed)| {
            headers_from_httparse(parsed)
        }))
    })
}

/// How a message body is delimited (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (`Content-Length`, or 0 for no body).
    Length(u64),
    /// `Transfer-Encoding: ... chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

/// What the framing fields of a head say, before the message kind is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingFields {
    /// Neither `Transfer-Encoding` nor `Content-Length`.
    None,
    /// A valid `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` whose last coding is chunked; `with_length` when a
    /// `Content-Length` was also present (ignored, per RFC 9112 section 6.3).
    Chunked { with_length: bool },
    /// `Transfer-Encoding` whose last coding is not chunked.
    OtherCoding,
}

/// Invalid framing fields: the message cannot be delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadContentLength;

/// Reads `Transfer-Encoding` and `Content-Length`.
pub(crate) fn framing_fields(headers: &Headers) -> Result<FramingFields, BadContentLength> {
    let mut last_coding: Option<&str> = None;
    for v in headers.get_all("transfer-encoding") {
        for coding in v.split(',') {
            let coding = coding.trim();
            if !coding.is_empty() {
                last_coding = Some(coding);
            }
        }
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all("content-length") {
        // A list of identical values is tolerated (RFC 9110 section 8.6).
        for item in v.split(',') {
            let n = parse_decimal(item.trim()).ok_or(BadContentLength)?;
            match length {
                Some(prev) if prev != n => return Err(BadContentLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(match (last_coding, length) {
        (Some(c), _) if c.eq_ignore_ascii_case("chunked") => FramingFields::Chunked {
            with_length: length.is_some(),
        },
        (Some(_), _) => FramingFields::OtherCoding,
        (None, Some(n)) => FramingFields::Length(n),
        (None, None) => FramingFields::None,
    })
}

/// A non-empty run of ASCII digits as u64, None on anything else or overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// True for a request that docker may answer by hijacking the connection:
/// `POST /containers/{id}/attach` or `POST /exec/{id}/start` (any version prefix).
pub(crate) fn is_docker_hijack_path(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or_default();
    let mut segs = path.rsplit('/');
    match (segs.next(), segs.next(), segs.next()) {
        (Some("attach"), Some(id), Some("containers")) => !id.is_empty(),
        (Some("start"), Some(id), Some("exec")) => !id.is_empty(),
        _ => false,
    }
}

/// True for a docker stream content type (`application/vnd.docker.raw-stream` or
/// `application/vnd.docker.multiplexed-stream`, parameters ignored).
pub(crate) fn is_docker_stream_type(headers: &Headers) -> bool {
    headers.get("content-type").is_some_and(|v| {
        let media = v.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case("application/vnd.docker.raw-stream")
            || media.eq_ignore_ascii_case("application/vnd.docker.multiplexed-stream")
    })
}
