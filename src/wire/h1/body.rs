//! Message bodies: Content-Length, chunked and read-until-close framing. Body bytes are
//! never copied or kept: the decoder reports ranges of its input; only chunk-size lines
//! are looked at byte by byte, and only a trailer section is buffered (bounded).

use bytes::BytesMut;

use super::head::{self, EndScan, Framing, Headers};

/// What one call to [`BodyDecoder::step`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The whole input was framing (or nothing); more bytes are needed.
    NeedMore,
    /// `input[start..end]` is body data (never empty); the caller goes on at `end`.
    /// `last`: the body is complete right after it.
    Data { start: usize, end: usize, last: bool },
    /// The body ended after `consumed` bytes of input.
    End {
        consumed: usize,
        /// Trailer fields of a chunked body, if any.
        trailers: Option<Headers>,
        /// A trailer section was present but did not parse; it was dropped.
        bad_trailers: bool,
    },
}

/// Framing that cannot be followed: the stream is out of sync for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Not a valid chunk-size line or chunk terminator, or a size beyond u64.
    BadChunk,
    /// Chunk-size line (with extensions) longer than the limit.
    ChunkLineTooLong,
    /// Trailer section longer than the head limit.
    TrailersTooLarge,
}

/// Position inside a chunk-size line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    /// Hex digits.
    Digits,
    /// Blanks after the digits.
    Blank,
    /// Inside chunk extensions (`;name=value`), skipped.
    Ext,
    /// After CR, expecting LF.
    Cr,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length {
        remaining: u64,
    },
    Close,
    Size {
        value: u64,
        digits: usize,
        part: SizePart,
        line: usize,
    },
    Data {
        remaining: u64,
    },
    /// After chunk data, expecting CRLF (or a bare LF).
    DataEnd {
        cr: bool,
    },
    Trailers {
        scan: EndScan,
    },
    Done,
}

/// Limits the body decoder needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub max_trailers: usize,
    pub max_headers: usize,
    pub max_chunk_line: usize,
}

/// Incremental decoder of one message body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDecoder {
    state: State,
    /// Body bytes (de-chunked) reported so far.
    len: u64,
}

const SIZE_START: State = State::Size {
    value: 0,
    digits: 0,
    part: SizePart::Digits,
    line: 0,
};

impl BodyDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => SIZE_START,
            Framing::Close => State::Close,
        };
        BodyDecoder { state, len: 0 }
    }

    /// De-chunked body bytes reported so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// True for a body that ends when the sender closes.
    pub(crate) fn is_close_delimited(&self) -> bool {
        matches!(self.state, State::Close)
    }

    fn take(&mut self, remaining: u64, avail: usize) -> (usize, u64) {
        let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
        // n <= avail, and n as u64 <= remaining.
        let left = remaining.saturating_sub(n as u64);
        self.len = self.len.saturating_add(n as u64);
        (n, left)
    }

    /// Advances over `input`. `buf` holds a partial trailer section between calls (it is
    /// empty otherwise). Framing bytes (chunk-size lines, chunk terminators) are walked one at
    /// a time; body data and trailers end the step.
    pub(crate) fn step(&mut self, input: &[u8], buf: &mut BytesMut, limits: &BodyLimits) -> Result<Step, BodyError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Done => {
                    return Ok(Step::End {
                        consumed: i,
                        trailers: None,
                        bad_trailers: false,
                    });
                }
                State::Close => return Ok(self.close_data(input, i)),
                State::Length { remaining } => return Ok(self.length_data(input, i, remaining)),
                State::Data { remaining } => return Ok(self.chunk_data(input, i, remaining)),
                State::Trailers { scan } => return self.trailers(input, i, scan, buf, limits),
                State::DataEnd { cr } => {
                    let Some(&b) = input.get(i) else {
                        return Ok(Step::NeedMore);
                    };
                    i += 1;
                    self.state = match (cr, b) {
                        (false, b'\r') => State::DataEnd { cr: true },
                        (_, b'\n') => SIZE_START,
                        _ => return Err(BodyError::BadChunk),
                    };
                }
                State::Size {
                    value,
                    digits,
                    part,
                    line,
                } => {
                    let Some(&b) = input.get(i) else {
                        return Ok(Step::NeedMore);
                    };
                    i += 1;
                    self.state = size_byte(value, digits, part, line, b, limits.max_chunk_line)?;
                }
            }
        }
    }

    /// A read-until-close body: everything from `i` on is data.
    fn close_data(&mut self, input: &[u8], i: usize) -> Step {
        if i >= input.len() {
            return Step::NeedMore;
        }
        self.len = self.len.saturating_add((input.len() - i) as u64);
        Step::Data {
            start: i,
            end: input.len(),
            last: false,
        }
    }

    /// A Content-Length body with `remaining` bytes to come.
    fn length_data(&mut self, input: &[u8], i: usize, remaining: u64) -> Step {
        if i >= input.len() {
            return Step::NeedMore;
        }
        let (n, left) = self.take(remaining, input.len() - i);
        self.state = if left == 0 {
            State::Done
        } else {
            State::Length { remaining: left }
        };
        Step::Data {
            start: i,
            end: i + n,
            last: left == 0,
        }
    }

    /// Inside a chunk with `remaining` bytes to come; its terminator follows.
    fn chunk_data(&mut self, input: &[u8], i: usize, remaining: u64) -> Step {
        if i >= input.len() {
            return Step::NeedMore;
        }
        let (n, left) = self.take(remaining, input.len() - i);
        self.state = if left == 0 {
            State::DataEnd { cr: false }
        } else {
            State::Data { remaining: left }
        };
        Step::Data {
            start: i,
            end: i + n,
            last: false,
        }
    }

    /// The trailer section after the last chunk, from `input[i..]`: buffered in `buf` (bounded
    /// by `max_trailers`) until its empty line, then parsed.
    fn trailers(
        &mut self,
        input: &[u8],
        i: usize,
        mut scan: EndScan,
        buf: &mut BytesMut,
        limits: &BodyLimits,
    ) -> Result<Step, BodyError> {
        let rest = &input[i..];
        let room = limits.max_trailers.saturating_sub(buf.len());
        let window = &rest[..rest.len().min(room)];
        let Some(n) = scan.scan(window) else {
            if window.len() < rest.len() {
                return Err(BodyError::TrailersTooLarge);
            }
            buf.extend_from_slice(rest);
            self.state = State::Trailers { scan };
            return Ok(Step::NeedMore);
        };
        self.state = State::Done;
        let parsed = if buf.is_empty() {
            parse_trailer_block(&rest[..n], limits.max_headers)
        } else {
            buf.extend_from_slice(&rest[..n]);
            let p = parse_trailer_block(buf, limits.max_headers);
            buf.clear();
            p
        };
        Ok(Step::End {
            consumed: i + n,
            bad_trailers: parsed.is_err(),
            trailers: parsed.unwrap_or(None),
        })
    }
}

/// The state after byte `b` of a chunk-size line (`1a;ext=v\r\n`) whose first `line` bytes,
/// `digits` hex digits of `value`, were read.
fn size_byte(
    value: u64,
    digits: usize,
    part: SizePart,
    line: usize,
    b: u8,
    max_line: usize,
) -> Result<State, BodyError> {
    let line = line.saturating_add(1);
    if line > max_line {
        return Err(BodyError::ChunkLineTooLong);
    }
    let (value, digits, part) = match (part, b) {
        (_, b'\n') if part != SizePart::Digits || digits > 0 => {
            return Ok(if value == 0 {
                State::Trailers {
                    scan: EndScan::at_line_start(),
                }
            } else {
                State::Data { remaining: value }
            });
        }
        (SizePart::Digits, _) if b.is_ascii_hexdigit() => {
            let d = u64::from(hex_value(b));
            let v = value
                .checked_mul(16)
                .and_then(|v| v.checked_add(d))
                .ok_or(BodyError::BadChunk)?;
            (v, digits.saturating_add(1), SizePart::Digits)
        }
        (SizePart::Digits | SizePart::Blank, b' ' | b'\t') if digits > 0 => (value, digits, SizePart::Blank),
        (SizePart::Digits | SizePart::Blank, b';') if digits > 0 => (value, digits, SizePart::Ext),
        (SizePart::Ext, b'\r') => (value, digits, SizePart::Cr),
        (SizePart::Ext, _) => (value, digits, SizePart::Ext),
        (SizePart::Digits | SizePart::Blank, b'\r') if digits > 0 => (value, digits, SizePart::Cr),
        _ => return Err(BodyError::BadChunk),
    };
    Ok(State::Size {
        value,
        digits,
        part,
        line,
    })
}

/// A complete trailer section (ending with the empty line): None when empty.
fn parse_trailer_block(block: &[u8], max_headers: usize) -> Result<Option<Headers>, ()> {
    if block == b"\r\n" || block == b"\n" {
        return Ok(None);
    }
    match head::parse_trailers(block, max_headers) {
        Ok(h) if h.is_empty() => Ok(None),
        Ok(h) => Ok(Some(h)),
        Err(_) => Err(()),
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}
