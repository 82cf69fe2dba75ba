//! Every attribute name of the span contract (DESIGN.md) that the OpenTelemetry semantic
//! conventions do not define, in one place: the call model's, the per-API rules', Docker's
//! event spans', the correlator's and the console's. Names the conventions do define come
//! from `opentelemetry_semantic_conventions`, never from a string literal.

// The span contract: transport, peers, sizes and domain ids.

pub const CRI_POD_SANDBOX_ID: &str = "cri.pod_sandbox.id";
pub const CONTAINERD_NAMESPACE: &str = "containerd.namespace";
pub const CONTAINERD_TASK_PID: &str = "containerd.task.pid";
pub const CONTAINERD_TASK_EXIT_STATUS: &str = "containerd.task.exit_status";
pub const CONTAINERD_EVENT_TOPIC: &str = "containerd.event.topic";
pub const CONTAINER_EXEC_ID: &str = "container.exec.id";
pub const DOCKER_API_VERSION: &str = "docker.api.version";
pub const DOCKER_ERROR_MESSAGE: &str = "docker.error.message";
pub const CONTAINER_REF: &str = "runtime_tap.container.ref";
pub const LISTEN: &str = "runtime_tap.listen";
pub const CLIENT_PID: &str = "runtime_tap.client.pid";
pub const CLIENT_EXECUTABLE: &str = "runtime_tap.client.executable";
pub const SERVER_PID: &str = "runtime_tap.server.pid";
pub const SERVER_EXECUTABLE: &str = "runtime_tap.server.executable";
pub const REQUEST_BYTES: &str = "runtime_tap.request.bytes";
pub const RESPONSE_BYTES: &str = "runtime_tap.response.bytes";
pub const REQUEST_MESSAGES: &str = "runtime_tap.request.messages";
pub const RESPONSE_MESSAGES: &str = "runtime_tap.response.messages";
pub const INCOMPLETE: &str = "runtime_tap.incomplete";
/// On a call that lives as long as its client watches (event subscriptions, attach and exec
/// sessions, `logs -f`, wait): its duration is how long someone watched, not work, so the
/// report lists these apart from the slowest operations.
pub const LONG_LIVED: &str = "runtime_tap.long_lived";
pub const LINK: &str = "runtime_tap.link";
/// The flight recorder's pcapng file (its name, in the recorder's directory) holding the
/// connection's recent bytes, on the call whose error or slowness made the recorder write it.
pub const RECORDING: &str = "runtime_tap.recording";
/// What became of the W3C `traceparent` the client sent (`followed`, `confirmed`,
/// `replaced`, `linked`; `trace::remote::RemoteOutcome`).
pub const REMOTE_PARENT: &str = "runtime_tap.remote_parent";

// gRPC calls.

/// Attribute for a non-OK `grpc-message` (the conventions have none).
pub const GRPC_MESSAGE: &str = "runtime_tap.grpc.message";

// Payload capture (opt-in): the span events `request` and `response`.

/// The rendered, redacted payload of a capture span event.
pub const CAPTURE_BODY: &str = "body";

// Docker event spans.

/// `Type` of a Docker event (`container`, `image`, `network`...).
pub const DOCKER_EVENT_TYPE: &str = "docker.event.type";
/// `Action` of a Docker event, cut at the first `:` (`exec_start: sh -c ...` carries
/// a command line: `exec_start`).
pub const DOCKER_EVENT_ACTION: &str = "docker.event.action";

// Self time, on a trace's root: one attribute per layer.

/// Prefix of `runtime_tap.self_time_ms.<service>`.
pub const SELF_TIME_PREFIX: &str = "runtime_tap.self_time_ms.";

/// `runtime_tap.self_time_ms.<service>`.
pub fn self_time(service: &str) -> String {
    format!("{SELF_TIME_PREFIX}{service}")
}

// The synthesized `pod start` root (README "Pod start phases and the SLI").

/// The root's span name.
pub const POD_START: &str = "pod start";
/// Wall time of RunPodSandbox within the pod start, ms (double, to the microsecond).
pub const POD_START_SANDBOX_MS: &str = "runtime_tap.pod_start.phase.sandbox_ms";
/// Wall time the pod's PullImage calls were in flight (their union), ms.
pub const POD_START_IMAGE_PULL_MS: &str = "runtime_tap.pod_start.phase.image_pull_ms";
/// The longest single PullImage of the pod, ms.
pub const POD_START_IMAGE_PULL_LONGEST_MS: &str = "runtime_tap.pod_start.phase.image_pull_longest_ms";
/// Wall time of the pod's ImageStatus checks not already counted in another phase, ms.
pub const POD_START_IMAGE_CHECK_MS: &str = "runtime_tap.pod_start.phase.image_check_ms";
/// Wall time of CreateContainer not already counted in another phase, ms.
pub const POD_START_CREATE_MS: &str = "runtime_tap.pod_start.phase.create_ms";
/// Wall time of StartContainer not already counted in another phase, ms.
pub const POD_START_START_MS: &str = "runtime_tap.pod_start.phase.start_ms";
/// Wall time none of the pod's calls was in flight: the client's own work, ms.
pub const POD_START_KUBELET_MS: &str = "runtime_tap.pod_start.phase.kubelet_ms";
/// The pod startup SLI: the root's duration minus the image-pull time, ms.
pub const POD_START_SLI_MS: &str = "runtime_tap.pod_start.sli_ms";
/// A W3C `traceparent` a pod's sandbox config carried in its annotations (key `traceparent`
/// or `<prefix>/traceparent`), on RunPodSandbox; the pod start root links to it.
pub const POD_TRACEPARENT: &str = "runtime_tap.pod.traceparent";

/// What every image attribute's name starts with (`container.image.name`, `.tags`, `.id`).
pub const CONTAINER_IMAGE_PREFIX: &str = "container.image.";

// The per-API rules (containerd, CRI).

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

// Image pulls: the per-layer breakdown folded from a pull's progress stream (schema::pull).

/// Id of a layer as the progress names it (dockerd: the blob digest's first 12 hex digits).
pub const IMAGE_LAYER_ID: &str = "runtime_tap.image.layer.id";
/// Bytes of a layer: the compressed blob's size for `layer download` (the registry's blob size),
/// the bytes read while extracting for `layer extract`.
pub const IMAGE_LAYER_BYTES: &str = "runtime_tap.image.layer.bytes";
/// A layer span's bytes over its duration, when both are known and the duration is not 0.
pub const IMAGE_LAYER_BYTES_PER_SECOND: &str = "runtime_tap.image.layer.bytes_per_second";
/// On a pull span: the layers its progress named (downloaded, cached or untracked).
pub const IMAGE_LAYERS: &str = "runtime_tap.image.layers";
/// On a pull span: the bytes of the layers it downloaded (sum of their `layer download` bytes).
pub const IMAGE_BYTES: &str = "runtime_tap.image.bytes";
/// On a pull span: from the call's start to the first layer's first downloaded bytes, ms.
pub const IMAGE_FIRST_BYTE_MS: &str = "runtime_tap.image.first_byte_ms";
/// On a pull span: layers the daemon already had (`Already exists`): no download, no span.
pub const IMAGE_LAYERS_CACHED: &str = "runtime_tap.image.layers_cached";
/// On a pull span: layers past the tracked bound (`schema::pull::MAX_LAYERS`), counted only.
pub const IMAGE_LAYERS_UNTRACKED: &str = "runtime_tap.image.layers_untracked";
/// On a pull span: where its breakdown comes from: `layers` (the daemon streamed per-layer
/// progress to the client) or `none` (the socket carries no progress: CRI PullImage pulls
/// inside containerd and answers once, at the end).
pub const IMAGE_PROGRESS: &str = "runtime_tap.image.progress";
