//! HPACK Huffman decoding (RFC 7541 §5.2, Appendix B), table-driven and allocation-free per
//! string. The HPACK crate's own Huffman decoder builds hash maps for every string, which
//! dominated decode time; header blocks are rewritten with raw literals before it sees them.

/// Code length in bits of each symbol 0..=255 and EOS (256), from RFC 7541 Appendix B. The
/// code is canonical, so the lengths alone define it.
pub(crate) const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26, 30,
];

/// Longest code.
const MAX_LEN: usize = 30;
/// The EOS symbol, which must never be decoded.
const EOS: u16 = 256;

/// Canonical code layout: per length, the first code, how many codes, and where their
/// symbols start in `symbols` (sorted by length then symbol).
struct Canon {
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u32; MAX_LEN + 1],
    symbols: [u16; 257],
}

const CANON: Canon = build();

const fn build() -> Canon {
    let mut count = [0u32; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[CODE_LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut offset = [0u32; MAX_LEN + 1];
    let mut l = 1;
    while l <= MAX_LEN {
        offset[l] = offset[l - 1] + count[l - 1];
        l += 1;
    }
    let mut symbols = [0u16; 257];
    let mut fill = offset;
    s = 0;
    while s < 257 {
        let len = CODE_LENGTHS[s] as usize;
        symbols[fill[len] as usize] = s as u16;
        fill[len] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut code = 0u32;
    l = 1;
    while l <= MAX_LEN {
        first[l] = code;
        code = (code + count[l]) << 1;
        l += 1;
    }
    Canon {
        first,
        count,
        offset,
        symbols,
    }
}

/// A Huffman string that is not valid HPACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HuffmanError {
    /// The EOS symbol inside the string.
    #[error("eos symbol in huffman string")]
    Eos,
    /// Padding longer than 7 bits or not made of ones.
    #[error("bad huffman padding")]
    BadPadding,
}

/// Codes of at most this many bits are decoded with one lookup in [`FAST`]: the symbols
/// header values are made of (letters, digits, `/.-_:=`) all have codes of 5 to 8 bits.
const FAST_BITS: usize = 8;

/// For each value of the next [`FAST_BITS`] bits: (symbol, code length) when a code of at
/// most that many bits starts there, else length 0 (a longer code: decoded bit by bit).
///
/// Why not one bit at a time throughout: callgrind on unary-c32 (`benches/instructions`)
/// counted 3,780 instructions a call in this function, one Huffman value a call (the bench's
/// h2 client, like grpc-go's `grpc-timeout`, sends a fresh literal each call); the lookup
/// decodes a 5-8 bit code in one step instead of one step per bit.
const FAST: [(u8, u8); 1 << FAST_BITS] = build_fast();

const fn build_fast() -> [(u8, u8); 1 << FAST_BITS] {
    let c = &CANON;
    let mut table = [(0u8, 0u8); 1 << FAST_BITS];
    let mut len = 1;
    while len <= FAST_BITS {
        let mut rank = 0;
        while rank < c.count[len] {
            let sym = c.symbols[(c.offset[len] + rank) as usize];
            let code = (c.first[len] + rank) as usize;
            let spread = FAST_BITS - len;
            let mut low = 0;
            while low < (1 << spread) {
                table[(code << spread) | low] = (sym as u8, len as u8);
                low += 1;
            }
            rank += 1;
        }
        len += 1;
    }
    table
}

/// Decode `src`, appending the bytes to `out`.
///
/// # Errors
///
/// [`HuffmanError`] on EOS or bad padding; `out` then holds a partial result.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // Unread bits, left-aligned in `acc`; refilled a byte at a time to more than 56, so a
    // code (at most 30 bits) is always whole in it unless the input has run out.
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    let mut next = src.iter();
    loop {
        while bits <= 56 {
            let Some(&byte) = next.next() else { break };
            acc |= u64::from(byte) << (56 - bits);
            bits += 8;
        }
        if bits == 0 {
            return Ok(());
        }
        let (sym, len) = FAST[(acc >> (64 - FAST_BITS)) as usize];
        let len = usize::from(len);
        let (sym, len) = if len != 0 && len <= bits {
            (u16::from(sym), len)
        } else {
            match long_code(acc, bits) {
                Some(found) => found,
                // What is left is no whole code: valid only as padding, at most 7 bits, all
                // ones (the EOS prefix).
                None if bits <= 7 && acc >> (64 - bits) == (1u64 << bits) - 1 => return Ok(()),
                None => return Err(HuffmanError::BadPadding),
            }
        };
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(sym as u8);
        acc <<= len;
        bits -= len;
    }
}

/// The code at the top of `acc` (of `bits` valid bits), found by length through the
/// canonical layout: (symbol, length), or None when no code fits in `bits`.
fn long_code(acc: u64, bits: usize) -> Option<(u16, usize)> {
    let c = &CANON;
    for len in 1..=bits.min(MAX_LEN) {
        let code = (acc >> (64 - len)) as u32;
        let idx = code.wrapping_sub(*c.first.get(len)?);
        if idx < *c.count.get(len)? {
            let sym = c
                .symbols
                .get((c.offset.get(len)? + idx) as usize)
                .copied()
                .unwrap_or(EOS);
            return Some((sym, len));
        }
    }
    None
}

/// Encode `src` (used by tests to build Huffman literals).
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = code_of(u16::from(b));
        acc = (acc << len) | u64::from(code);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

/// (code, length) of a symbol.
fn code_of(sym: u16) -> (u32, u32) {
    let c = &CANON;
    let len = CODE_LENGTHS.get(usize::from(sym)).copied().unwrap_or(30) as usize;
    let (Some(&first), Some(&offset)) = (c.first.get(len), c.offset.get(len)) else {
        return (0, 0);
    };
    let rank = c
        .symbols
        .get(offset as usize..)
        .and_then(|s| s.iter().position(|&x| x == sym))
        .unwrap_or(0) as u32;
    (first + rank, len as u32)
}
