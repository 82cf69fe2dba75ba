//! Schema: the descriptor pool built from `proto/`, and what each API's payloads say.
//!
//! Owns: method lookup by gRPC path ([`Schema::method`]), the per-API attribute rules
//! ([`cri`], [`containerd`]) applied by one engine ([`rules`]), redaction ([`redact`]) and the
//! opt-in JSON rendering of payloads ([`render`], with [`any`] for `google.protobuf.Any`).
//!
//! Rule it keeps: extraction is an allowlist (only fields a rule names become attributes), and
//! every rendered payload is redacted before anyone sees it. Nothing here fails a call:
//! a payload that does not decode is reported to the caller as an error to count, never more.

pub mod any;
pub mod containerd;
pub mod cri;
pub mod docker;
pub mod docker_rules;
pub mod image_ref;
pub mod pool;
pub mod redact;
pub mod render;
pub mod rules;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use pool::{Api, MethodInfo, Schema, SchemaError};
pub use render::render_json;
pub use rules::{Rule, ValueKind, extract, rules_satisfied, wants_payload};

use crate::trace::attr::{Attr, AttrValue, names as contract};

/// Which half of a call a payload belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Client to server: the method's input type.
    Request,
    /// Server to client: the method's output type.
    Response,
}

/// Attribute names this module emits that neither the semantic conventions nor
/// `trace::attr::names` define. One place, so the span contract stays greppable.
pub mod names {
    /// containerd runtime of a container (`io.containerd.runc.v2`), from Containers/*.
    pub const CONTAINERD_RUNTIME_NAME: &str = "containerd.runtime.name";
    /// Content-store digest (`sha256:...`) of a Content/* call.
    pub const CONTAINERD_CONTENT_DIGEST: &str = "containerd.content.digest";
    /// Content-store blob size in bytes of a Content/* call.
    pub const CONTAINERD_CONTENT_SIZE: &str = "containerd.content.size";
    /// Snapshot key of a Snapshots/* call (a name, not a secret).
    pub const CONTAINERD_SNAPSHOT_KEY: &str = "containerd.snapshot.key";
    /// Snapshotter of a Snapshots/* call (`overlayfs`).
    pub const CONTAINERD_SNAPSHOTTER: &str = "containerd.snapshotter";
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
}

/// The entity ids among `attrs`, for the correlator: `container.id`, `cri.pod_sandbox.id`
/// and `container.exec.id`, in attribute order. Empty values are skipped.
pub fn entity_ids(attrs: &[Attr]) -> impl Iterator<Item = (EntityKind, &str)> {
    use opentelemetry_semantic_conventions::attribute::CONTAINER_ID;
    attrs.iter().filter_map(|a| {
        let kind = match a.key.as_ref() {
            k if k == CONTAINER_ID => EntityKind::Container,
            k if k == contract::CRI_POD_SANDBOX_ID => EntityKind::PodSandbox,
            k if k == contract::CONTAINER_EXEC_ID => EntityKind::Exec,
            _ => return None,
        };
        match &a.value {
            AttrValue::Str(s) if !s.is_empty() => Some((kind, s.as_str())),
            _ => None,
        }
    })
}
