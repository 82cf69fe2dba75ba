//! HPACK decoding (RFC 7541) for one direction of a connection, wrapping `loona-hpack`.
//! Each direction has its own dynamic table; its size bound comes from the OTHER
//! direction's SETTINGS_HEADER_TABLE_SIZE and from our own memory cap. Every header block of
//! the connection must pass through here, in order, or the table goes out of sync.

use std::fmt;

pub use crate::wire::headers::Headers;

use loona_hpack::decoder::DecoderError;

use crate::wire::h2::frame::DEFAULT_HEADER_TABLE_SIZE;
use crate::wire::h2::huffman;

/// RFC 7541 §4.1 per-entry overhead, also used to size header lists (RFC 9113 §6.5.2): by
/// the decoder and by the traceparent rewriter, which must count as the peer does.
pub const ENTRY_OVERHEAD: usize = 32;
/// Scratch capacity kept between blocks; larger scratch buffers are released after use.
const SCRATCH_KEEP: usize = 4096;

/// Why a header block could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HpackError {
    /// Malformed block or a reference outside the table: state is lost.
    #[error("invalid hpack block")]
    Invalid,
    /// A dynamic table size update the protocol allows but our memory cap does not.
    #[error("hpack table size update above the configured cap")]
    TableTooLarge,
}

/// A decoded block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The fields kept (all of them unless `truncated`).
    pub headers: Headers,
    /// The list exceeded the size cap; fields past it were decoded but dropped.
    pub truncated: bool,
}

/// The fields a decoder keeps of each block. The table takes every field either way: only
/// what is handed over changes.
#[derive(Clone, Copy, Debug, Default)]
pub enum Keep {
    /// Every field (tests, fuzzing, the traceparent rewriter).
    #[default]
    All,
    /// `:status` (the connection tells 1xx responses by it) and the fields named in either
    /// list, compared ASCII case-insensitively.
    ///
    /// Why: a gRPC call's three blocks carry about two dozen fields, and the observer reads
    /// eight. Copying the rest into the list and searching past them cost 6,200 of the
    /// 41,000 instructions of a call on unary-c32 under callgrind (`benches/instructions`).
    Named(&'static [&'static str], &'static [&'static str]),
}

impl Keep {
    fn wants(self, name: &[u8]) -> bool {
        match self {
            Keep::All => true,
            Keep::Named(a, b) => {
                name == b":status" || a.iter().chain(b).any(|n| n.as_bytes().eq_ignore_ascii_case(name))
            }
        }
    }
}

/// The HPACK decoder of one direction.
pub struct HpackDecoder {
    inner: loona_hpack::Decoder<'static>,
    cap: usize,
    protocol_max: usize,
    /// The block with Huffman literals rewritten as raw ones.
    raw: Vec<u8>,
    /// One decoded Huffman string.
    huff: Vec<u8>,
}

impl fmt::Debug for HpackDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpackDecoder")
            .field("cap", &self.cap)
            .field("protocol_max", &self.protocol_max)
            .finish_non_exhaustive()
    }
}

impl HpackDecoder {
    /// A decoder whose dynamic table never exceeds `cap` bytes (raised to the protocol's
    /// initial 4096 if lower), starting at the protocol default size.
    pub fn new(cap: usize) -> HpackDecoder {
        let initial = DEFAULT_HEADER_TABLE_SIZE as usize;
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(initial);
        HpackDecoder {
            inner,
            cap: cap.max(initial),
            protocol_max: initial,
            raw: Vec::new(),
            huff: Vec::new(),
        }
    }

    /// The largest dynamic table size update the encoder may now send (what the peer
    /// advertised in SETTINGS_HEADER_TABLE_SIZE, leniently including unacknowledged values).
    pub fn set_protocol_max(&mut self, max: usize) {
        self.protocol_max = max;
        self.inner.set_max_allowed_table_size(max.min(self.cap));
    }

    /// The protocol's current bound.
    pub fn protocol_max(&self) -> usize {
        self.protocol_max
    }

    /// Decode one complete header block, keeping every field while the list (RFC 9113 size:
    /// name + value + 32 each) stays within `max_list` bytes.
    ///
    /// # Errors
    ///
    /// [`HpackError`] when the block cannot be decoded; the table is then out of sync.
    pub fn decode(&mut self, block: &[u8], max_list: usize) -> Result<Decoded, HpackError> {
        self.decode_kept(block, max_list, Keep::All)
    }

    /// [`HpackDecoder::decode`], handing over only the fields `keep` wants. The list size
    /// still counts every field, so `truncated` says the same as with [`Keep::All`].
    ///
    /// # Errors
    ///
    /// [`HpackError`] when the block cannot be decoded; the table is then out of sync.
    pub fn decode_kept(&mut self, block: &[u8], max_list: usize, keep: Keep) -> Result<Decoded, HpackError> {
        // Offsets in `Headers` are u32; no real cap comes near.
        let max_list = max_list.min(u32::MAX as usize);
        // Typical gRPC blocks decode to a dozen fields and a few hundred bytes.
        let mut headers = Headers::with_capacity(16, 256);
        let mut size = 0usize;
        let mut truncated = false;
        let rewritten = unhuffman(block, &mut self.raw, &mut self.huff)?;
        let src = if rewritten { &self.raw[..] } else { block };
        let res = self.inner.decode_with_cb(src, |name, value| {
            if truncated {
                return;
            }
            if !keep.wants(&name) {
                size = size
                    .saturating_add(name.len())
                    .saturating_add(value.len())
                    .saturating_add(ENTRY_OVERHEAD);
                truncated = size > max_list;
                return;
            }
            // Counted after the lossy UTF-8 conversion: an invalid byte becomes a 3-byte
            // U+FFFD, and the bound is on what is kept, not on what was on the wire.
            let (name, value) = (utf8(&name), utf8(&value));
            size = size
                .saturating_add(name.len())
                .saturating_add(value.len())
                .saturating_add(ENTRY_OVERHEAD);
            if size > max_list {
                truncated = true;
                return;
            }
            headers.push(&name, &value);
        });
        if self.raw.capacity() > SCRATCH_KEEP {
            self.raw = Vec::new();
        }
        if self.huff.capacity() > SCRATCH_KEEP {
            self.huff = Vec::new();
        }
        match res {
            // The size update was applied; a block made only of one is harmless.
            Ok(()) | Err(DecoderError::SizeUpdateAtEnd) => Ok(Decoded { headers, truncated }),
            Err(DecoderError::InvalidMaxDynamicSize) if self.protocol_max > self.cap => Err(HpackError::TableTooLarge),
            Err(_) => Err(HpackError::Invalid),
        }
    }
}

/// Rewrite the Huffman-coded string literals of `block` as raw literals into `out`, so the
/// HPACK crate (whose Huffman decoder is slow) only copies bytes. Returns false, leaving `out`
/// unused, when the block has no Huffman literal. Indexes and size updates are copied as
/// they are; the HPACK crate still validates everything.
///
/// # Errors
///
/// [`HpackError::Invalid`] on a truncated representation or a bad Huffman string.
fn unhuffman(block: &[u8], out: &mut Vec<u8>, huff: &mut Vec<u8>) -> Result<bool, HpackError> {
    let mut pos = 0usize;
    // Bytes of `block` before this offset are already in `out` (when rewriting).
    let mut copied = 0usize;
    let mut rewriting = false;
    while let Some(&first) = block.get(pos) {
        let strings = if first & 0x80 != 0 {
            // Indexed field.
            pos = int(block, pos, 7)?.1;
            0
        } else if first & 0xc0 == 0x40 {
            let (index, next) = int(block, pos, 6)?;
            pos = next;
            if index == 0 { 2 } else { 1 }
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            pos = int(block, pos, 5)?.1;
            0
        } else {
            // Literal without indexing / never indexed.
            let (index, next) = int(block, pos, 4)?;
            pos = next;
            if index == 0 { 2 } else { 1 }
        };
        for _ in 0..strings {
            let is_huffman = block.get(pos).is_some_and(|b| b & 0x80 != 0);
            let (len, start) = int(block, pos, 7)?;
            let end = start.checked_add(len).ok_or(HpackError::Invalid)?;
            let body = block.get(start..end).ok_or(HpackError::Invalid)?;
            if is_huffman {
                if !rewriting {
                    rewriting = true;
                    out.clear();
                    out.reserve(block.len().saturating_mul(2));
                }
                out.extend_from_slice(block.get(copied..pos).ok_or(HpackError::Invalid)?);
                huff.clear();
                huffman::decode(body, huff).map_err(|_| HpackError::Invalid)?;
                put_int(huff.len(), 7, 0, out);
                out.extend_from_slice(huff);
                copied = end;
            }
            pos = end;
        }
    }
    if rewriting {
        out.extend_from_slice(block.get(copied..).unwrap_or_default());
    }
    Ok(rewriting)
}

/// Decode an HPACK integer with an `n`-bit prefix at `pos`: (value, position after it).
fn int(block: &[u8], pos: usize, n: u32) -> Result<(usize, usize), HpackError> {
    let mask = (1usize << n) - 1;
    let first = usize::from(*block.get(pos).ok_or(HpackError::Invalid)?);
    let mut value = first & mask;
    let mut pos = pos + 1;
    if value < mask {
        return Ok((value, pos));
    }
    // At most 4 continuation bytes (28 bits), as the HPACK crate accepts.
    for shift in [0u32, 7, 14, 21] {
        let b = usize::from(*block.get(pos).ok_or(HpackError::Invalid)?);
        pos += 1;
        value = value.checked_add((b & 0x7f) << shift).ok_or(HpackError::Invalid)?;
        if b & 0x80 == 0 {
            return Ok((value, pos));
        }
    }
    Err(HpackError::Invalid)
}

/// Encode an HPACK integer with an `n`-bit prefix, first byte or-ed with `flags`.
fn put_int(mut value: usize, n: u32, flags: u8, out: &mut Vec<u8>) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `String::from_utf8_lossy` for a header name or value. Valid text (every gRPC header seen)
/// takes `str::from_utf8`'s word-at-a-time path: the lossy conversion walks `Utf8Chunks` a
/// byte at a time, and cost 5.6 % of runtime-tap's instructions on unary-c32 under callgrind
/// (3,100 per call of 44,000, 24 fields a call).
fn utf8(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
