//! W3C trace context (`traceparent`): the one place its format is written and read. Written
//! for propagation (the relay's rewrite hook is [`mint`], wired in by `app`; the bytes are
//! placed by `wire::inject`, which takes the value as opaque text), read for the context a
//! client carried in (`call::RemoteParent`).

use crate::trace::span::{SpanId, TraceId, hex, new_span_id, new_trace_id};
use crate::wire::inject::Injection;

/// The trace flags runtime-tap sends: sampled (it exports the span the header names).
const SAMPLED: u8 = 0x01;

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// The `traceparent` value naming `span_id` in `trace_id`: version 00, sampled.
pub fn format(trace_id: &TraceId, span_id: &SpanId) -> String {
    format!("00-{}-{}-{SAMPLED:02x}", hex(trace_id), hex(span_id))
}

/// Parse a `traceparent` header value (version 00 layout; later versions by their prefix).
/// `None` for anything malformed, version `ff`, or an all-zero id.
pub fn parse(value: &str) -> Option<TraceParent> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id: TraceId = hex_array(trace)?;
    let span_id: SpanId = hex_array(span)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & SAMPLED == SAMPLED,
    })
}

/// The relay's rewrite hook: new random ids for one request, and the header value naming them.
pub fn mint() -> (Injection, String) {
    let injection = Injection {
        trace_id: new_trace_id(),
        span_id: new_span_id(),
    };
    let value = format(&injection.trace_id, &injection.span_id);
    (injection, value)
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_agree() {
        let (i, value) = mint();
        assert_eq!(value.len(), 55);
        assert_eq!(
            parse(&value),
            Some(TraceParent {
                trace_id: i.trace_id,
                span_id: i.span_id,
                sampled: true
            })
        );
    }

    #[test]
    fn format_is_the_w3c_layout() {
        assert_eq!(
            format(&[0x0a; 16], &[0xb7; 8]),
            "00-0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-b7b7b7b7b7b7b7b7-01"
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for v in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
        ] {
            assert_eq!(parse(v), None, "{v}");
        }
        let later = parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra").unwrap();
        assert!(!later.sampled);
    }
}
