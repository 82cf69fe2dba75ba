use super::frame::*;
use super::hpack::*;
use super::testutil as t;

#[test]
fn frame_header_roundtrip() {
    let h = FrameHeader {
        len: 0x01_02_03,
        kind: FrameType::Headers,
        flags: flags::END_HEADERS | flags::PADDED,
        stream: 0x7fff_fffe,
    };
    assert_eq!(FrameHeader::parse(&h.encode()), h);
    // The reserved bit is ignored.
    let mut raw = h.encode();
    raw[5] |= 0x80;
    assert_eq!(FrameHeader::parse(&raw).stream, 0x7fff_fffe);
    assert_eq!(FrameType::from_u8(0xfa), FrameType::Unknown(0xfa));
    for b in 0..=255u8 {
        assert_eq!(FrameType::from_u8(b).as_u8(), b);
    }
}

#[test]
fn padding_and_priority() {
    let p = t::padded(b"abc", 4);
    assert_eq!(strip_padding(flags::PADDED, &p), Ok(&b"abc"[..]));
    assert_eq!(strip_padding(0, &p), Ok(&p[..]));
    assert_eq!(strip_padding(flags::PADDED, &[]), Err(FrameError::BadPadding));
    assert_eq!(strip_padding(flags::PADDED, &[3, 0, 0]), Err(FrameError::BadPadding));
    assert_eq!(strip_padding(flags::PADDED, &[2, 0, 0]), Ok(&b""[..]));
    let mut prio = vec![0, 0, 0, 1, 16];
    prio.extend_from_slice(b"block");
    let padded = t::padded(&prio, 2);
    assert_eq!(
        headers_fragment(flags::PADDED | flags::PRIORITY, &padded),
        Ok(&b"block"[..])
    );
    assert_eq!(headers_fragment(flags::PRIORITY, &[0, 0]), Err(FrameError::TooShort));
    assert_eq!(push_promise_fragment(0, &[0, 0, 0, 2, 9]), Ok((2, &[9u8][..])));
    assert_eq!(push_promise_fragment(0, &[0, 0]), Err(FrameError::TooShort));
}

#[test]
fn fixed_payloads() {
    let s: Vec<_> = settings(&[0, 1, 0, 0, 0x10, 0, 0, 5, 0, 0, 0x40, 0]).collect();
    assert_eq!(s, vec![(1, 4096), (5, 16384)]);
    assert_eq!(rst_stream_code(&[0, 0, 0, 8]), Ok(8));
    assert_eq!(rst_stream_code(&[0, 0, 8]), Err(FrameError::TooShort));
    assert_eq!(goaway(&[0x80, 0, 0, 5, 0, 0, 0, 2, 1, 2]), Ok((5, 2)));
    assert_eq!(goaway(&[0, 0, 0, 5, 0]), Err(FrameError::TooShort));
}

#[test]
fn hpack_roundtrip_with_real_encoder() {
    let mut enc = loona_hpack::Encoder::new();
    let mut dec = HpackDecoder::new(64 * 1024);
    let lists: Vec<Vec<(&[u8], &[u8])>> = vec![
        vec![
            (b":method", b"POST"),
            (b":path", b"/containerd.services.tasks.v1.Tasks/Start"),
            (b"containerd-namespace", b"moby"),
        ],
        vec![
            (b":method", b"POST"),
            (b":path", b"/containerd.services.tasks.v1.Tasks/Get"),
            (b"containerd-namespace", b"moby"),
        ],
    ];
    for list in &lists {
        let block = enc.encode(list.iter().copied());
        let d = dec.decode(&block, 1 << 20).expect("decodes");
        assert!(!d.truncated);
        let got: Vec<(String, String)> = d.headers.into_vec();
        let want: Vec<(String, String)> = list
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).expect("utf8"),
                    String::from_utf8(v.to_vec()).expect("utf8"),
                )
            })
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn hpack_eviction_and_size_updates() {
    let mut dec = HpackDecoder::new(64 * 1024);
    dec.set_protocol_max(200);
    let v = "v".repeat(60); // each entry: 3 + 60 + 32 = 95 bytes
    let mut b = Vec::new();
    t::size_update(200, &mut b);
    t::indexed_literal("x-a", &v, &mut b);
    t::indexed_literal("x-b", &v, &mut b);
    t::indexed_literal("x-c", &v, &mut b); // evicts x-a
    let d = dec.decode(&b, 1 << 20).expect("decodes");
    assert_eq!(d.headers.len(), 3);
    let mut b = Vec::new();
    t::indexed(62, &mut b); // newest: x-c
    t::indexed(63, &mut b); // x-b
    let d = dec.decode(&b, 1 << 20).expect("decodes");
    assert_eq!(d.headers.get("x-c"), Some(v.as_str()));
    assert_eq!(d.headers.get("x-b"), Some(v.as_str()));
    // x-a was evicted: index 64 is out of the table.
    let mut b = Vec::new();
    t::indexed(64, &mut b);
    assert_eq!(dec.decode(&b, 1 << 20), Err(HpackError::Invalid));

    // A size update above the protocol bound is an error; one above our cap is named so.
    let mut dec = HpackDecoder::new(64 * 1024);
    dec.set_protocol_max(100);
    let mut b = Vec::new();
    t::size_update(101, &mut b);
    t::indexed(2, &mut b);
    assert_eq!(dec.decode(&b, 1 << 20), Err(HpackError::Invalid));
    dec.set_protocol_max(1 << 20);
    let mut b = Vec::new();
    t::size_update(1 << 20, &mut b);
    t::indexed(2, &mut b);
    assert_eq!(dec.decode(&b, 1 << 20), Err(HpackError::TableTooLarge));
}

#[test]
fn hpack_header_list_cap_keeps_state() {
    let mut dec = HpackDecoder::new(4096);
    let mut b = Vec::new();
    t::indexed_literal("x-a", "1", &mut b);
    t::indexed_literal("x-b", &"2".repeat(100), &mut b);
    let d = dec.decode(&b, 50).expect("decodes");
    assert!(d.truncated);
    assert_eq!(d.headers.len(), 1);
    // Both entries still went into the table.
    let mut b = Vec::new();
    t::indexed(62, &mut b);
    t::indexed(63, &mut b);
    let d = dec.decode(&b, 1 << 20).expect("decodes");
    assert_eq!(d.headers.get("x-b").map(str::len), Some(100));
    assert_eq!(d.headers.get("x-a"), Some("1"));
}

#[test]
fn headers_debug_hides_values() {
    let h = Headers::new(vec![("authorization".into(), "Bearer secret".into())]);
    let s = format!("{h:?}");
    assert!(s.contains("authorization"), "{s}");
    assert!(s.contains("13"), "{s}");
    assert!(!s.contains("secret"), "{s}");
}

#[test]
fn huffman_known_vectors() {
    // RFC 7541 C.4.1: "www.example.com"
    let enc = [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
    let mut out = Vec::new();
    super::huffman::decode(&enc, &mut out).expect("decodes");
    assert_eq!(out, b"www.example.com");
    let mut again = Vec::new();
    super::huffman::encode(b"www.example.com", &mut again);
    assert_eq!(again, enc);
    // Padding of 8 ones is too long; zero padding bits are not the EOS prefix ('0' is 00000,
    // so "0" is 0x07 and 0x00 leaves 3 zero bits).
    let mut out = Vec::new();
    assert!(super::huffman::decode(&[0xff], &mut out).is_err());
    assert!(super::huffman::decode(&[0x07], &mut out).is_ok());
    assert!(super::huffman::decode(&[0x00], &mut out).is_err());
    // EOS (30 ones) inside a string.
    assert!(super::huffman::decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
}

#[test]
fn huffman_literals_in_blocks() {
    let mut block = Vec::new();
    // Literal with indexing, Huffman name and value.
    for (n, v) in [("x-trace", "abc-123"), ("user-agent", "grpc-go/1.50")] {
        block.push(0x40);
        for s in [n, v] {
            let mut h = Vec::new();
            super::huffman::encode(s.as_bytes(), &mut h);
            t::hpack_int(0x80, 7, h.len(), &mut block);
            block.extend(h);
        }
    }
    t::indexed(62, &mut block); // the second one, now newest
    let mut dec = HpackDecoder::new(4096);
    let d = dec.decode(&block, 1 << 20).expect("decodes");
    let got: Vec<_> = d.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(
        got,
        vec![
            ("x-trace".to_string(), "abc-123".to_string()),
            ("user-agent".to_string(), "grpc-go/1.50".to_string()),
            ("user-agent".to_string(), "grpc-go/1.50".to_string()),
        ]
    );
    // A truncated Huffman string is an error, not a panic.
    let cut = &block[..block.len() - 4];
    assert_eq!(HpackDecoder::new(4096).decode(cut, 1 << 20), Err(HpackError::Invalid));
}

proptest::proptest! {
    #[test]
    fn huffman_agrees_with_the_hpack_crate(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let mut enc = Vec::new();
        super::huffman::encode(&data, &mut enc);
        let mut ours = Vec::new();
        super::huffman::decode(&enc, &mut ours).expect("decodes");
        proptest::prop_assert_eq!(&ours, &data);
        let theirs = loona_hpack::huffman::HuffmanDecoder::new().decode(&enc).expect("decodes");
        proptest::prop_assert_eq!(&theirs, &data);
    }

    #[test]
    fn huffman_random_input_matches_the_hpack_crate(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
        let mut ours = Vec::new();
        let a = super::huffman::decode(&data, &mut ours).ok().map(|_| ours);
        let b = loona_hpack::huffman::HuffmanDecoder::new().decode(&data).ok();
        proptest::prop_assert_eq!(a, b);
    }

    /// Near-valid strings (one byte of a valid encoding changed, or the tail cut) reach the
    /// long codes, EOS and the padding rules far more often than random bytes do.
    #[test]
    fn huffman_damaged_strings_match_the_hpack_crate(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..80),
        at in proptest::prelude::any::<usize>(),
        byte in proptest::prelude::any::<u8>(),
        cut in 0usize..3,
    ) {
        let mut enc = Vec::new();
        super::huffman::encode(&data, &mut enc);
        let i = at % enc.len();
        enc[i] = byte;
        enc.truncate(enc.len() - cut.min(enc.len() - 1));
        let mut ours = Vec::new();
        let a = super::huffman::decode(&enc, &mut ours).ok().map(|_| ours);
        let b = loona_hpack::huffman::HuffmanDecoder::new().decode(&enc).ok();
        proptest::prop_assert_eq!(a, b);
    }
}

#[test]
fn hpack_header_list_cap_counts_what_is_kept() {
    // A 20-byte value of invalid UTF-8 is kept as 20 U+FFFD (60 bytes): the cap is on that.
    let mut b = vec![0x40, 3];
    b.extend(b"x-a");
    b.push(20);
    b.extend([0xff; 20]);
    let d = HpackDecoder::new(4096).decode(&b, 3 + 20 + 32).expect("decodes");
    assert!(d.truncated);
    assert!(d.headers.is_empty());
    let d = HpackDecoder::new(4096).decode(&b, 3 + 60 + 32).expect("decodes");
    assert_eq!(d.headers.get("x-a").map(str::len), Some(60));
}

#[test]
fn hpack_keep_named_hands_over_only_those_and_keeps_the_table() {
    // The encoder indexes every field, so the second block refers to table entries made
    // while their fields were skipped: the table must have taken them all.
    let mut enc = loona_hpack::Encoder::new();
    let mut all = HpackDecoder::new(64 * 1024);
    let mut some = HpackDecoder::new(64 * 1024);
    let keep = Keep::Named(&[":path"], &["Traceparent"]);
    let list: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b"x-skipped", b"a value nobody reads"),
        (b":path", b"/runtime.v1.RuntimeService/Version"),
        (
            b"traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        (b":status", b"200"),
    ];
    for _ in 0..2 {
        let block = enc.encode(list.iter().copied());
        let full = all.decode(&block, 1 << 20).expect("decodes");
        let kept = some.decode_kept(&block, 1 << 20, keep).expect("decodes");
        assert_eq!(full.headers.len(), 5);
        assert_eq!(
            kept.headers.into_vec(),
            vec![
                (":path".to_string(), "/runtime.v1.RuntimeService/Version".to_string()),
                (
                    "traceparent".to_string(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()
                ),
                (":status".to_string(), "200".to_string()),
            ]
        );
    }
    // The list cap counts the skipped fields too: the same block is cut at the same field.
    let cap = 7 + 4 + 9 + 20 + 2 * ENTRY_OVERHEAD;
    let first = loona_hpack::Encoder::new().encode(list.iter().copied());
    let full = HpackDecoder::new(64 * 1024).decode(&first, cap).expect("decodes");
    let cut = HpackDecoder::new(64 * 1024)
        .decode_kept(&first, cap, keep)
        .expect("decodes");
    assert!(full.truncated && cut.truncated);
    assert_eq!(full.headers.len(), 2);
    assert!(cut.headers.is_empty());
}
