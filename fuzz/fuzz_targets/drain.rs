//! The shutdown drain walker (`wire::drain::Drain`): one connection, both directions,
//! fuzz-chosen read splits and the moment the drain starts. Properties:
//! - no panic, and what it holds is bounded (released at EOF);
//! - daemon-to-client: the output is the input with whole frames of ours added, and nothing
//!   else (for HTTP/1, one `Connection: close` line at most);
//! - client-to-daemon: bytes are only ever removed, never added or changed (the output is a
//!   subsequence of the input).
//!
//! Input: byte 0 picks the record before which the drain starts; then records of
//! [direction bit | length (7 bits)] followed by that many bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runtime_tap::wire::Direction;
use runtime_tap::wire::drain::Drain;
use runtime_tap::wire::drain::h1::CONNECTION_CLOSE;
use runtime_tap::wire::drain::h2::CONTROL_FRAME_LEN;

fn is_subsequence(small: &[u8], big: &[u8]) -> bool {
    let mut it = big.iter();
    small.iter().all(|b| it.any(|c| c == b))
}

fuzz_target!(|data: &[u8]| {
    let Some((&start_at, mut rest)) = data.split_first() else {
        return;
    };
    let mut d = Drain::new();
    let (mut c_in, mut c_out, mut s_in, mut s_out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut goaways = 0u32;
    let mut record = 0u8;
    while let Some((&tag, tail)) = rest.split_first() {
        if record == start_at {
            d.start();
        }
        record = record.wrapping_add(1);
        let len = usize::from(tag & 0x7f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        if tag & 0x80 == 0 {
            c_in.extend_from_slice(chunk);
            c_out.extend_from_slice(&d.client_bytes(Bytes::copy_from_slice(chunk)));
        } else {
            s_in.extend_from_slice(chunk);
            s_out.extend_from_slice(&d.server_bytes(Bytes::copy_from_slice(chunk)));
        }
        if let Some(ours) = d.due() {
            s_out.extend_from_slice(&ours);
        }
        goaways += d.take_goaways();
        let _ = d.finished(&|s| s % 3 == 0);
    }
    c_out.extend_from_slice(&d.release(Direction::ClientToServer));
    s_out.extend_from_slice(&d.release(Direction::ServerToClient));
    goaways += d.take_goaways();
    assert!(c_out.len() <= c_in.len());
    assert!(is_subsequence(&c_out, &c_in), "client bytes changed, not only removed");
    // GOAWAY and PING: at most two GOAWAYs and one PING, each CONTROL_FRAME_LEN bytes.
    let added = s_out.len() - s_in.len().min(s_out.len());
    assert!(s_out.len() >= s_in.len());
    let h2_added = (goaways as usize + usize::from(goaways > 0)) * CONTROL_FRAME_LEN;
    assert!(
        added == h2_added || (goaways == 0 && added % CONNECTION_CLOSE.len() == 0),
        "added {added} bytes, {goaways} goaways"
    );
    assert!(is_subsequence(&s_in, &s_out), "daemon bytes changed, not only added to");
});
