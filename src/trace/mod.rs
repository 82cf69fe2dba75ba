//! The call model and everything after decoding: attributes, spans, export.

pub mod attr;
