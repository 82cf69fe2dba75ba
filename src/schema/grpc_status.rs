//! gRPC status codes as the span contract shows them: `rpc.response.status_code` is the
//! canonical name, and only the codes the semantic conventions count as server errors make
//! a span an error. Also how gRPC clients turn a call that ended without `grpc-status` into a
//! code. The one table of names; tests check it against tonic's `Code`, an independent source.

/// gRPC status codes by number, as the conventions name them.
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// UNKNOWN: what a code gRPC does not define is taken as.
pub const UNKNOWN: u32 = 2;

/// Codes the conventions count as server errors (span status Error).
pub const SERVER_ERRORS: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// The canonical name of `code`; a code gRPC does not define is UNKNOWN.
pub fn name(code: u32) -> &'static str {
    NAMES.get(code as usize).copied().unwrap_or(NAMES[UNKNOWN as usize])
}

/// `code` when gRPC defines it, else UNKNOWN.
pub fn known_or_unknown(code: u32) -> u32 {
    if (code as usize) < NAMES.len() { code } else { UNKNOWN }
}

/// Whether `code` makes the span an error.
pub fn is_server_error(code: u32) -> bool {
    SERVER_ERRORS.contains(&code)
}

/// The gRPC status of a stream reset before any `grpc-status`, as gRPC maps RST_STREAM codes
/// (PROTOCOL-HTTP2.md, "Errors"): CANCEL is a cancellation, REFUSED_STREAM means nothing was
/// processed, ENHANCE_YOUR_CALM and INADEQUATE_SECURITY have their own codes, the rest are
/// INTERNAL. NO_ERROR from the server is INTERNAL too (it should have sent a status); from
/// the client it can only mean the client abandoned the call: CANCELLED.
pub fn from_reset(http2_code: u32, by_client: bool) -> u32 {
    match http2_code {
        0x0 if by_client => 1,
        0x8 => 1,  // CANCEL -> CANCELLED
        0x7 => 14, // REFUSED_STREAM -> UNAVAILABLE
        0xb => 8,  // ENHANCE_YOUR_CALM -> RESOURCE_EXHAUSTED
        0xc => 7,  // INADEQUATE_SECURITY -> PERMISSION_DENIED
        _ => 13,   // INTERNAL
    }
}

/// The gRPC status of a response whose HTTP status is not 200 and that carries no
/// `grpc-status` (an intermediary answered), as gRPC clients map it
/// (doc/http-grpc-status-mapping.md).
pub fn from_http_status(status: u16) -> u32 {
    match status {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => UNKNOWN,
    }
}

/// The name tonic gives `code` (`InvalidArgument`), spelled as the conventions do
/// (`INVALID_ARGUMENT`): the tests' independent source for [`NAMES`].
#[cfg(test)]
pub(crate) fn tonic_name(code: i32) -> String {
    let mut out = String::new();
    for (i, c) in format!("{:?}", tonic::Code::from_i32(code)).chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The conventions' server errors (semantic conventions, gRPC spans), named by tonic.
#[cfg(test)]
pub(crate) const CONVENTIONS_SERVER_ERRORS: [tonic::Code; 6] = [
    tonic::Code::Unknown,
    tonic::Code::DeadlineExceeded,
    tonic::Code::Unimplemented,
    tonic::Code::Internal,
    tonic::Code::Unavailable,
    tonic::Code::DataLoss,
];

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// Every name, by number, as tonic (an independent implementation of the gRPC spec)
    /// numbers and names its codes; past the last, UNKNOWN.
    #[test]
    fn names_match_tonic() {
        for code in 0..NAMES.len() as i32 + 3 {
            assert_eq!(name(code as u32), tonic_name(code), "code {code}");
        }
        assert_eq!(Code::from_i32(NAMES.len() as i32), Code::Unknown);
    }

    #[test]
    fn server_errors_are_the_conventions_list() {
        for code in 0..NAMES.len() as i32 {
            let expected = CONVENTIONS_SERVER_ERRORS.contains(&Code::from_i32(code));
            assert_eq!(is_server_error(code as u32), expected, "code {code}");
        }
    }
}
