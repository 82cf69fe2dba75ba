//! The call model and everything after decoding: attributes, spans, export.

pub mod attr;
pub mod call;
pub mod context;
pub mod correlate;
pub mod export;
pub mod pod_start;
pub mod red;
pub mod remote;
pub mod sample;
pub mod span;
pub mod tracer;
pub mod tree;
