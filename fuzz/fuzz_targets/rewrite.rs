//! The traceparent rewriter (`wire::inject::Rewriter`, the one module that changes bytes):
//! one connection, both directions, fuzz-chosen read splits, client EOF releasing what is
//! held. Properties:
//! - the output is the input plus exactly the inserted header fields: taking out each
//!   announced `traceparent` where the rewriter must have put it (after the request line for
//!   HTTP/1; at the end of a header block's last frame, that frame's length grown, or as one
//!   added CONTINUATION carrying END_HEADERS, for HTTP/2) gives back the input byte for byte;
//! - HTTP/2: an HPACK decoder (`loona-hpack`) on each side decodes the same header lists,
//!   block by block, plus `traceparent: value` on the blocks that got one (so no table moved);
//! - the output does not depend on the read splits.
//!
//! Input: the record format of `runtime_tap_fuzz` (no selector byte).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runtime_tap::trace::context;
use runtime_tap::wire::Direction;
use runtime_tap::wire::h2::frame::{FRAME_HEADER_LEN, FrameHeader, FrameType, PREFACE, flags, headers_fragment};
use runtime_tap::wire::inject::h2::literal_field;
use runtime_tap::wire::inject::{Injection, Rewriter, TRACEPARENT};
use runtime_tap_fuzz::{Record, coalesce, records};

/// Ids from a counter started at a hash of the whole input: deterministic, so two runs of one
/// input compare byte for byte; each value unique; and not a constant the fuzzer could learn
/// from a comparison and plant in the input, where the undo would take it for an injection.
fn counter_mint(next: &mut u64) -> impl FnMut() -> (Injection, String) + '_ {
    move || {
        *next = next.wrapping_add(1);
        let mut trace_id = [0x7a; 16];
        trace_id[8..].copy_from_slice(&next.to_be_bytes());
        let mut span_id = [0x5b; 8];
        span_id.copy_from_slice(&next.rotate_left(17).to_be_bytes());
        let i = Injection { trace_id, span_id };
        (i, context::format(&i.trace_id, &i.span_id))
    }
}

/// Runs the rewriter: (client input, client output, values injected in order).
fn run(chunks: &[(Direction, Option<Vec<u8>>)], seed: u64) -> (Vec<u8>, Vec<u8>, Vec<String>) {
    let mut r = Rewriter::new();
    let mut n = seed;
    let mut mint = counter_mint(&mut n);
    let (mut input, mut output, mut injected) = (Vec::new(), Vec::new(), Vec::new());
    for (dir, chunk) in chunks {
        match (dir, chunk) {
            (Direction::ClientToServer, Some(b)) => {
                input.extend_from_slice(b);
                output.extend_from_slice(&r.client_bytes(Bytes::copy_from_slice(b), &mut mint, &mut injected));
            }
            (Direction::ClientToServer, None) => output.extend_from_slice(&r.release(None)),
            (Direction::ServerToClient, Some(b)) => r.server_bytes(b),
            (Direction::ServerToClient, None) => {}
        }
    }
    output.extend_from_slice(&r.release(None));
    let values = injected.iter().map(|i| context::format(&i.trace_id, &i.span_id)).collect();
    (input, output, values)
}

/// HTTP/1: each `traceparent: value\r\n` line taken out, right after a line end.
fn undo_h1(output: &[u8], values: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(output.len());
    let mut rest = output;
    for v in values {
        let line = format!("{TRACEPARENT}: {v}\r\n");
        let at = rest
            .windows(line.len())
            .position(|w| w == line.as_bytes())
            .unwrap_or_else(|| panic!("injected line {line:?} not in the output"));
        let before = &rest[..at];
        assert!(
            out.last().into_iter().chain(before.last()).last() == Some(&b'\n'),
            "traceparent line not after a request line"
        );
        out.extend_from_slice(before);
        rest = &rest[at + line.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// HTTP/2: walk the output's frames; each injected field taken out of the frame that ends its
/// block (length restored), or its added CONTINUATION dropped (END_HEADERS given back).
fn undo_h2(output: &[u8], values: &[String]) -> Vec<u8> {
    let mut out = output[..PREFACE.len()].to_vec();
    let mut pos = PREFACE.len();
    let mut next = values.iter().map(|v| literal_field(v)).peekable();
    // Where in `out` the header of the last HEADERS/CONTINUATION frame starts.
    let mut last_block_frame: Option<usize> = None;
    while let Some(h) = output.get(pos..pos + FRAME_HEADER_LEN) {
        let hdr = FrameHeader::parse(h.try_into().unwrap());
        let end = (pos + FRAME_HEADER_LEN + hdr.len as usize).min(output.len());
        let payload = &output[pos + FRAME_HEADER_LEN..end];
        pos = end;
        let block_frame = matches!(hdr.kind, FrameType::Headers | FrameType::Continuation);
        if let Some(field) = next.peek().filter(|_| block_frame && hdr.has(flags::END_HEADERS)) {
            if hdr.kind == FrameType::Continuation && payload == &field[..] && hdr.flags == flags::END_HEADERS {
                let at = last_block_frame.expect("an added CONTINUATION follows a block frame");
                assert_eq!(out[at + 4] & flags::END_HEADERS, 0, "END_HEADERS moved to the added frame");
                out[at + 4] |= flags::END_HEADERS;
                next.next();
                continue;
            }
            let pad = if hdr.kind == FrameType::Headers && hdr.has(flags::PADDED) {
                usize::from(payload.first().copied().unwrap_or(0))
            } else {
                0
            };
            let cut = payload.len().checked_sub(pad);
            let start = cut.and_then(|c| c.checked_sub(field.len()));
            if let (Some(start), Some(cut)) = (start, cut)
                && &payload[start..cut] == &field[..]
            {
                let len = hdr.len - field.len() as u32;
                last_block_frame = Some(out.len());
                out.extend_from_slice(&len.to_be_bytes()[1..]);
                out.extend_from_slice(&h[3..]);
                out.extend_from_slice(&payload[..start]);
                out.extend_from_slice(&payload[cut..]);
                next.next();
                continue;
            }
        }
        if block_frame {
            last_block_frame = Some(out.len());
        }
        out.extend_from_slice(&output[end - payload.len() - FRAME_HEADER_LEN..end]);
    }
    out.extend_from_slice(&output[pos..]);
    assert!(next.next().is_none(), "an injected field not found where it belongs");
    out
}

/// Client header blocks (HPACK fragments) of an HTTP/2 stream, in order, complete ones only;
/// `None` where a frame cannot be read as a block frame (from there nothing is compared).
fn blocks(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut pos = PREFACE.len();
    let mut out = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    while let Some(h) = stream.get(pos..pos + FRAME_HEADER_LEN) {
        let hdr = FrameHeader::parse(h.try_into().unwrap());
        let Some(payload) = stream.get(pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + hdr.len as usize) else {
            break;
        };
        pos += FRAME_HEADER_LEN + hdr.len as usize;
        let frag = match hdr.kind {
            FrameType::Headers => match headers_fragment(hdr.flags, payload) {
                Ok(f) => f,
                Err(_) => break,
            },
            FrameType::Continuation if pending.is_some() => payload,
            _ if pending.is_some() => break,
            _ => continue,
        };
        let mut b = pending.take().unwrap_or_default();
        b.extend_from_slice(frag);
        if hdr.has(flags::END_HEADERS) {
            out.push(b);
        } else {
            pending = Some(b);
        }
    }
    out
}

type List = Vec<(Vec<u8>, Vec<u8>)>;

fn decode(d: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> Option<List> {
    let mut list = Vec::new();
    d.decode_with_cb(block, |n, v| list.push((n.into_owned(), v.into_owned()))).ok()?;
    Some(list)
}

/// Both sides' decoders see the same lists, plus one traceparent per injection, in order.
fn same_lists(input: &[u8], output: &[u8], values: &[String]) {
    let (before, after) = (blocks(input), blocks(output));
    let mut client = loona_hpack::Decoder::new();
    let mut server = loona_hpack::Decoder::new();
    client.set_max_allowed_table_size(1 << 20);
    server.set_max_allowed_table_size(1 << 20);
    let mut next = values.iter();
    for (a, b) in before.iter().zip(&after) {
        let Some(mut expect) = decode(&mut client, a) else { return };
        let got = decode(&mut server, b).expect("the original block decodes, the rewritten one must");
        if got.len() == expect.len() + 1 {
            let v = next.next().expect("a field added without an injection");
            expect.push((TRACEPARENT.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        assert_eq!(got, expect, "header list changed");
    }
}

fuzz_target!(|input: &[u8]| {
    let seed = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        input.hash(&mut h);
        h.finish()
    };
    let recs = records(input);
    let split: Vec<(Direction, Option<Vec<u8>>)> = recs
        .iter()
        .map(|r| match r {
            Record::Data(d, b) => (*d, Some(b.to_vec())),
            Record::Eof(d) => (*d, None),
        })
        .collect();
    let (sent, output, values) = run(&split, seed);
    let restored = if values.is_empty() {
        output.clone()
    } else if output.starts_with(PREFACE) {
        same_lists(&sent, &output, &values);
        undo_h2(&output, &values)
    } else {
        undo_h1(&output, &values)
    };
    assert!(restored == sent, "output is not the input plus the injected fields");

    let (_, joined, joined_values) = run(&coalesce(&recs), seed);
    assert_eq!(joined_values.len(), values.len(), "injections depend on the read splits");
    assert!(joined == output, "output depends on the read splits");
});
