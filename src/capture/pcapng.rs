//! The pcapng blocks a capture file is made of, and the synthetic Ethernet/IPv4/TCP frames
//! that carry a unix-socket connection's bytes so that packet tools reassemble them as a TCP
//! stream. Pure functions building byte vectors; little-endian sections.
//!
//! Format: <https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html>. A file is one
//! section: a Section Header Block, one Interface Description Block (Ethernet), then one
//! Enhanced Packet Block per synthetic segment, timestamps in microseconds (the default
//! resolution, so no `if_tsresol` option).

use std::net::Ipv4Addr;

/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// Snapshot length announced in the interface block: larger than any frame written.
pub const SNAPLEN: u32 = 262_144;
/// Largest TCP payload in one synthetic segment: the IPv4 total length is 16 bits
/// (65535 - 20 IPv4 - 20 TCP = 65495); kept a little under.
pub const MAX_SEGMENT: usize = 65_000;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;

/// TCP flags used by the synthetic segments.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A block: type, total length, body (padded to 32 bits), total length again.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().next_multiple_of(4);
    let total = (12 + padded) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(8 + padded, 0);
    out.extend_from_slice(&total.to_le_bytes());
    out
}

/// One option (code, length, value padded to 32 bits).
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn end_of_options(out: &mut Vec<u8>) {
    out.extend_from_slice(&OPT_END.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
}

/// The Section Header Block that opens a file, naming the writing application.
pub fn section_header(application: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes()); // major
    body.extend_from_slice(&0u16.to_le_bytes()); // minor
    body.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
    option(&mut body, SHB_USERAPPL, application.as_bytes());
    end_of_options(&mut body);
    block(SHB, &body)
}

/// The Interface Description Block of the one interface (id 0): Ethernet, microseconds.
pub fn interface(name: &str, description: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes()); // reserved
    body.extend_from_slice(&SNAPLEN.to_le_bytes());
    option(&mut body, IF_NAME, name.as_bytes());
    option(&mut body, IF_DESCRIPTION, description.as_bytes());
    end_of_options(&mut body);
    block(IDB, &body)
}

/// An Enhanced Packet Block on interface 0 holding `frame` whole, stamped `micros` since the
/// Unix epoch.
pub fn packet(micros: u64, frame: &[u8]) -> Vec<u8> {
    block(EPB, &packet_body(micros, frame, 3))
}

/// An Enhanced Packet Block's fixed fields and `frame`, with room for `extra` more bytes.
fn packet_body(micros: u64, frame: &[u8], extra: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(20 + frame.len() + extra);
    body.extend_from_slice(&0u32.to_le_bytes()); // interface id
    body.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(micros as u32).to_le_bytes());
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes()); // captured
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes()); // original
    body.extend_from_slice(frame);
    body
}

/// As [`packet`], with an `opt_comment` (Wireshark shows it as `frame.comment`; tshark
/// filters on it with `-Y 'frame.comment contains "..."'`). An empty comment adds no option.
pub fn packet_with_comment(micros: u64, frame: &[u8], comment: &str) -> Vec<u8> {
    if comment.is_empty() {
        return packet(micros, frame);
    }
    let mut body = packet_body(micros, frame, comment.len() + 16);
    // Options start on a 32-bit boundary after the packet data.
    body.resize(body.len().next_multiple_of(4), 0);
    // An option's length is 16 bits: a longer comment is cut at a character boundary.
    let mut end = comment.len().min(u16::MAX as usize - 3);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    option(&mut body, OPT_COMMENT, &comment.as_bytes()[..end]);
    end_of_options(&mut body);
    block(EPB, &body)
}

/// One end of a synthetic TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// A synthetic TCP segment, as far as its headers go.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// IPv4 identification field.
    pub ip_id: u16,
}

const ETH_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const TCP_HEADER: usize = 20;

/// The Ethernet frame carrying `seg` with `payload` (at most [`MAX_SEGMENT`] bytes), with
/// correct IPv4 and TCP checksums.
pub fn tcp_frame(seg: &Segment, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_SEGMENT);
    let mut f = Vec::with_capacity(ETH_HEADER + IPV4_HEADER + TCP_HEADER + payload.len());
    // Ethernet II.
    f.extend_from_slice(&seg.dst.mac);
    f.extend_from_slice(&seg.src.mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    // IPv4.
    let syn_options = if seg.flags & flags::SYN != 0 { 4 } else { 0 };
    let total = (IPV4_HEADER + TCP_HEADER + syn_options + payload.len()) as u16;
    let ip_start = f.len();
    f.push(0x45); // version 4, IHL 5
    f.push(0); // DSCP/ECN
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&seg.ip_id.to_be_bytes());
    f.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    f.push(64); // TTL
    f.push(6); // TCP
    f.extend_from_slice(&[0, 0]); // checksum, below
    f.extend_from_slice(&seg.src.ip.octets());
    f.extend_from_slice(&seg.dst.ip.octets());
    let ip_sum = checksum(sum(0, &f[ip_start..ip_start + IPV4_HEADER]));
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP.
    let tcp_start = f.len();
    f.extend_from_slice(&seg.src.port.to_be_bytes());
    f.extend_from_slice(&seg.dst.port.to_be_bytes());
    f.extend_from_slice(&seg.seq.to_be_bytes());
    let ack = if seg.flags & flags::ACK != 0 { seg.ack } else { 0 };
    f.extend_from_slice(&ack.to_be_bytes());
    // SYNs announce the largest window scale, so that the unacknowledged bytes a relay chunk
    // puts in flight never look like a full window to the analysers.
    let options: &[u8] = if seg.flags & flags::SYN != 0 {
        &[1, 3, 3, 14] // NOP, window scale 14
    } else {
        &[]
    };
    f.push((((TCP_HEADER + options.len()) / 4) as u8) << 4);
    f.push(seg.flags);
    f.extend_from_slice(&0xFFFFu16.to_be_bytes()); // window
    f.extend_from_slice(&[0, 0]); // checksum, below
    f.extend_from_slice(&[0, 0]); // urgent pointer
    f.extend_from_slice(options);
    f.extend_from_slice(payload);
    let tcp_len = (TCP_HEADER + options.len() + payload.len()) as u32;
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&seg.src.ip.octets());
    pseudo[4..8].copy_from_slice(&seg.dst.ip.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let tcp_sum = checksum(sum(sum(0, &pseudo), &f[tcp_start..]));
    f[tcp_start + 16..tcp_start + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    f
}

/// Ones'-complement sum of big-endian 16-bit words (an odd last byte padded with zero).
fn sum(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn checksum(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_padded_and_framed() {
        let b = packet(1, &[1, 2, 3]);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(&b[0..4], &EPB.to_le_bytes());
        let total = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, b.len());
        assert_eq!(&b[b.len() - 4..], &(total as u32).to_le_bytes());
        let shb = section_header("runtime-tap");
        assert_eq!(&shb[8..12], &BYTE_ORDER_MAGIC.to_le_bytes());
        assert_eq!(shb.len() % 4, 0);
    }

    #[test]
    fn comments_follow_the_padded_packet() {
        let plain = packet(1, &[1, 2, 3]);
        let b = packet_with_comment(1, &[1, 2, 3], "span 0102");
        let total = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, b.len());
        // Block header, 20 bytes of packet header, 3 bytes padded to 4, then the option.
        let opt = 8 + 20 + 4;
        assert_eq!(&b[opt..opt + 4], &[1, 0, 9, 0]);
        assert_eq!(&b[opt + 4..opt + 13], b"span 0102");
        // opt_endofopt after the padded value, then the trailing length.
        assert_eq!(&b[opt + 16..opt + 20], &[0, 0, 0, 0]);
        assert_eq!(b.len(), plain.len() + 4 + 12 + 4);
        assert_eq!(packet_with_comment(1, &[1, 2, 3], ""), plain);
    }

    #[test]
    fn checksums_verify() {
        let ep = |last: u8, port| Endpoint {
            mac: [2, 0, 0, 0, 0, last],
            ip: Ipv4Addr::new(10, 0, 0, last),
            port,
        };
        let seg = Segment {
            src: ep(1, 10001),
            dst: ep(2, 80),
            seq: 7,
            ack: 9,
            flags: flags::ACK | flags::PSH,
            ip_id: 3,
        };
        let f = tcp_frame(&seg, b"GET / HTTP/1.1\r\n\r\n!");
        // A correct header sums to 0xFFFF (checksum of it is 0).
        assert_eq!(checksum(sum(0, &f[14..34])), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        assert_eq!(checksum(sum(sum(0, &pseudo), &f[34..])), 0);
    }
}
