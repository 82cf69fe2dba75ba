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
mod tests_2x;
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
    /// Sandbox id of a containerd 2.x Sandbox Store/Controller call, or of the sandbox a
    /// container belongs to (`Container.sandbox`). The CRI plugin gives a pod's sandbox this
    /// id, so it is a [`super::EntityKind::PodSandbox`] id.
    pub const CONTAINERD_SANDBOX_ID: &str = "containerd.sandbox.id";
    /// Sandbox controller of a Sandbox call (`podsandbox`, `shim`).
    pub const CONTAINERD_SANDBOXER: &str = "containerd.sandboxer";
    /// What a Transfer/Transfer reads from: the type name of its `source` Any
    /// (`containerd.types.transfer.OCIRegistry`, `...ImageImportStream`, `...ImageStore`).
    pub const CONTAINERD_TRANSFER_SOURCE_TYPE: &str = "containerd.transfer.source.type";
    /// What a Transfer/Transfer writes to: the type name of its `destination` Any
    /// (`containerd.types.transfer.ImageStore`, `...ImageExportStream`, `...OCIRegistry`).
    pub const CONTAINERD_TRANSFER_DESTINATION_TYPE: &str = "containerd.transfer.destination.type";
    /// Registry reference a Transfer pulls from (an `OCIRegistry` source), as the client wrote it.
    pub const CONTAINERD_TRANSFER_SOURCE_REFERENCE: &str = "containerd.transfer.source.reference";
    /// Registry reference a Transfer pushes to (an `OCIRegistry` destination).
    pub const CONTAINERD_TRANSFER_DESTINATION_REFERENCE: &str = "containerd.transfer.destination.reference";
    /// Id of the data stream a Transfer reads or writes (`stream` of an `ImageImportStream`
    /// source or `ImageExportStream` destination): a [`super::EntityKind::Stream`] id.
    pub const CONTAINERD_TRANSFER_STREAM: &str = "containerd.transfer.stream";
    /// Id of the stream a Transfer sends its progress on (`options.progress_stream`): a
    /// [`super::EntityKind::Stream`] id.
    pub const CONTAINERD_TRANSFER_PROGRESS_STREAM: &str = "containerd.transfer.progress_stream";
    /// Id a Streaming/Stream call opens with (its first message, a `StreamInit`): a
    /// [`super::EntityKind::Stream`] id, equal to the one a Transfer names.
    pub const CONTAINERD_STREAM_ID: &str = "containerd.stream.id";
    /// The last progress event a Streaming/Stream carried (`containerd.types.transfer.Progress`
    /// `event`: `saved`, `complete`, `Completed pull from OCI Registry (...)`).
    pub const CONTAINERD_TRANSFER_PROGRESS_EVENT: &str = "containerd.transfer.progress.event";
    /// `name` of that last progress event (an image name, `layer-sha256:...`), when it has one.
    pub const CONTAINERD_TRANSFER_PROGRESS_NAME: &str = "containerd.transfer.progress.name";
    /// `progress` of that last progress event (bytes done), when not 0.
    pub const CONTAINERD_TRANSFER_PROGRESS_BYTES: &str = "containerd.transfer.progress.bytes";
    /// `total` of that last progress event (bytes), when not 0.
    pub const CONTAINERD_TRANSFER_PROGRESS_TOTAL: &str = "containerd.transfer.progress.total_bytes";
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
            k if k == contract::CRI_POD_SANDBOX_ID || k == names::CONTAINERD_SANDBOX_ID => EntityKind::PodSandbox,
            k if k == contract::CONTAINER_EXEC_ID => EntityKind::Exec,
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
