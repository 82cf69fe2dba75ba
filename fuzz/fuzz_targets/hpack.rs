//! HPACK (`HpackDecoder::decode`) over a sequence of header blocks of one direction, with
//! table size bounds changing between them as SETTINGS would change them.
//! Properties: no panic; a kept header list stays within `max_list`; and, differentially,
//! the same result as `loona-hpack` decoding the original block (our decoder rewrites
//! Huffman literals with its own Huffman decoder before handing the block to that crate).
//!
//! Input: a selector byte (bit 0: a 64 KiB memory cap instead of 4 KiB; bits 1-7: `max_list`
//! in 64-byte units, 0 = no cap), then records: a length byte 0..=254 and that many bytes of a
//! block, or 255 and two bytes: the new protocol bound (SETTINGS_HEADER_TABLE_SIZE).
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_tap::wire::h2::hpack::{ENTRY_OVERHEAD, HpackDecoder, HpackError};
use runtime_tap_fuzz::split_first;

fuzz_target!(|input: &[u8]| {
    let (selector, mut input) = split_first(input);
    let cap = if selector & 1 == 0 { 4096 } else { 64 * 1024 };
    let max_list = match usize::from(selector >> 1) {
        0 => usize::MAX,
        n => n * 64,
    };
    let mut ours = HpackDecoder::new(cap);
    let mut reference = loona_hpack::Decoder::new();
    reference.set_max_allowed_table_size(4096);
    while let Some((&len, rest)) = input.split_first() {
        input = rest;
        if len == 255 {
            let Some((max, rest)) = input.split_first_chunk::<2>() else {
                break;
            };
            input = rest;
            let max = usize::from(u16::from_be_bytes(*max)) * 2;
            ours.set_protocol_max(max);
            reference.set_max_allowed_table_size(max.min(cap.max(4096)));
            continue;
        }
        let (block, rest) = input.split_at(usize::from(len).min(input.len()));
        input = rest;

        let mut expect = Vec::new();
        let r = reference.decode_with_cb(block, |n, v| expect.push((n.into_owned(), v.into_owned())));
        let r_ok = matches!(r, Ok(()) | Err(loona_hpack::decoder::DecoderError::SizeUpdateAtEnd));
        match ours.decode(block, max_list) {
            Ok(decoded) => {
                let size: usize = decoded
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
                    .sum();
                assert!(
                    size <= max_list,
                    "kept {size} bytes of headers over max_list {max_list}"
                );
                assert!(r_ok, "ours decoded a block loona-hpack refuses: {r:?}");
                let kept = decoded.headers.len();
                assert!(
                    decoded.truncated || kept == expect.len(),
                    "fields lost without truncation"
                );
                for ((n, v), (en, ev)) in decoded.headers.iter().zip(&expect) {
                    assert_eq!(n, String::from_utf8_lossy(en), "header name differs");
                    assert_eq!(v, String::from_utf8_lossy(ev), "header value differs");
                }
            }
            Err(e) => {
                // The table is out of sync now: a connection gives up here.
                if e == HpackError::Invalid {
                    assert!(
                        !r_ok,
                        "ours refused a block loona-hpack decodes ({} fields)",
                        expect.len()
                    );
                }
                break;
            }
        }
        if !r_ok {
            break;
        }
    }
});
