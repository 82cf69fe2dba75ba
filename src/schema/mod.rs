//! Schema: the descriptor pool built from `proto/`, and what each API's payloads say.
//!
//! Owns: method lookup by gRPC path ([`Schema::method`]), the per-API attribute rules
//! ([`cri`], [`containerd`]) applied by one engine ([`rules`]); Docker's routes ([`docker`]),
//! rule table ([`docker_rules`]) and what an exchange says by it ([`docker_extract`]); gRPC
//! status codes ([`grpc_status`]); every attribute name ([`names`]); redaction ([`redact`]) and
//! the opt-in JSON rendering of payloads ([`render`], with [`any`] for `google.protobuf.Any`).
//!
//! Rule it keeps: extraction is an allowlist (only fields a rule names become attributes), and
//! every rendered payload is redacted before anyone sees it. Nothing here fails a call:
//! a payload that does not decode is reported to the caller as an error to count, never more.

pub mod any;
pub mod containerd;
pub mod cri;
pub mod docker;
pub mod docker_extract;
pub mod docker_rules;
pub mod grpc_status;
pub mod image_ref;
pub mod names;
pub mod pool;
pub mod pull;
pub mod redact;
pub mod render;
pub mod rules;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_2x;
#[cfg(test)]
mod testutil;

pub use pool::{Api, MethodInfo, Schema, SchemaError};
pub use render::render_json;
pub use rules::{Rule, ValueKind, extract, rules_satisfied, wants_payload};

use crate::trace::attr::{Attr, AttrValue};

/// Which half of a call a payload belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Client to server: the method's input type.
    Request,
    /// Server to client: the method's output type.
    Response,
}

/// Kinds of entity id that tie calls together across layers (DESIGN.md, correlation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// `container.id`
    Container,
    /// `cri.pod_sandbox.id`
    PodSandbox,
    /// `container.exec.id`
    Exec,
    /// A containerd 2.x stream (Streaming/Stream): `containerd.stream.id` on the stream,
    /// `containerd.transfer.stream` and `containerd.transfer.progress_stream` on the
    /// Transfer/Transfer that uses it.
    Stream,
}

/// The entity ids among `attrs`, for the correlator, in attribute order: `container.id`;
/// `cri.pod_sandbox.id` and `containerd.sandbox.id` (pod sandbox); `container.exec.id`;
/// `containerd.stream.id`, `containerd.transfer.stream` and
/// `containerd.transfer.progress_stream` (stream). Empty values are skipped.
pub fn entity_ids(attrs: &[Attr]) -> impl Iterator<Item = (EntityKind, &str)> {
    use opentelemetry_semantic_conventions::attribute::CONTAINER_ID;
    attrs.iter().filter_map(|a| {
        let kind = match a.key.as_ref() {
            k if k == CONTAINER_ID => EntityKind::Container,
            k if k == names::CRI_POD_SANDBOX_ID || k == names::CONTAINERD_SANDBOX_ID => EntityKind::PodSandbox,
            k if k == names::CONTAINER_EXEC_ID => EntityKind::Exec,
            k if k == names::CONTAINERD_STREAM_ID
                || k == names::CONTAINERD_TRANSFER_STREAM
                || k == names::CONTAINERD_TRANSFER_PROGRESS_STREAM =>
            {
                EntityKind::Stream
            }
            _ => return None,
        };
        match &a.value {
            AttrValue::Str(s) if !s.is_empty() => Some((kind, s.as_str())),
            _ => None,
        }
    })
}
