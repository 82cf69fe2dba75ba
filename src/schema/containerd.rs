//! containerd's own gRPC API (`containerd.services.*.v1`: the services 1.6 has, and 2.x's
//! Sandbox, Transfer and Streaming): which payload fields become span attributes. One table;
//! the engine is in `rules.rs`. `Service/*` rows apply to every method of the service whose
//! message has the field. Rule it keeps: ids, names and types only; no row reads a spec,
//! options, labels, data, or a registry resolver's headers or auth stream.

use super::ValueKind::{AnyType, ImageRef, Int, NonZeroInt, Str};
use super::names::{
    CONTAINERD_CONTENT_DIGEST, CONTAINERD_CONTENT_SIZE, CONTAINERD_RUNTIME_NAME, CONTAINERD_SANDBOX_ID,
    CONTAINERD_SANDBOXER, CONTAINERD_SNAPSHOT_KEY, CONTAINERD_SNAPSHOTTER, CONTAINERD_STREAM_ID,
    CONTAINERD_TRANSFER_DESTINATION_REFERENCE, CONTAINERD_TRANSFER_DESTINATION_TYPE,
    CONTAINERD_TRANSFER_PROGRESS_BYTES, CONTAINERD_TRANSFER_PROGRESS_EVENT, CONTAINERD_TRANSFER_PROGRESS_NAME,
    CONTAINERD_TRANSFER_PROGRESS_STREAM, CONTAINERD_TRANSFER_PROGRESS_TOTAL, CONTAINERD_TRANSFER_SOURCE_REFERENCE,
    CONTAINERD_TRANSFER_SOURCE_TYPE, CONTAINERD_TRANSFER_STREAM,
};
use super::rules::Rule;
use crate::schema::names::{
    CONTAINER_EXEC_ID, CONTAINERD_EVENT_TOPIC, CONTAINERD_TASK_EXIT_STATUS, CONTAINERD_TASK_PID,
};
use opentelemetry_semantic_conventions::attribute::{CONTAINER_ID, CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME};

const CONTAINERS: &str = "containerd.services.containers.v1.Containers/*";
const CONTAINERS_GET: &str = "containerd.services.containers.v1.Containers/Get";
const TASKS: &str = "containerd.services.tasks.v1.Tasks/*";
const TASKS_GET: &str = "containerd.services.tasks.v1.Tasks/Get";
const IMAGES: &str = "containerd.services.images.v1.Images/*";
const CONTENT: &str = "containerd.services.content.v1.Content/*";
const SNAPSHOTS: &str = "containerd.services.snapshots.v1.Snapshots/*";
const EVENTS_SUBSCRIBE: &str = "containerd.services.events.v1.Events/Subscribe";
const EVENTS_PUBLISH: &str = "containerd.services.events.v1.Events/Publish";
const EVENTS_FORWARD: &str = "containerd.services.events.v1.Events/Forward";
const SANDBOX_STORE: &str = "containerd.services.sandbox.v1.Store/*";
const SANDBOX_STORE_GET: &str = "containerd.services.sandbox.v1.Store/Get";
const SANDBOX_CONTROLLER: &str = "containerd.services.sandbox.v1.Controller/*";
pub const TRANSFER: &str = "containerd.services.transfer.v1.Transfer/Transfer";
/// containerd 2.x's bidirectional stream of Anys, named by the Transfer that uses it: its
/// calls are long-lived and their progress is learned while they run.
pub const STREAMING_STREAM: &str = "containerd.services.streaming.v1.Streaming/Stream";
const STREAM: &str = STREAMING_STREAM;
/// The first message of a Streaming/Stream call, naming the stream.
const STREAM_INIT: &str = "containerd.services.streaming.v1.StreamInit";
/// What a transfer reports on its progress stream (`observe::grpc` folds a pull's per layer).
pub const PROGRESS: &str = "containerd.types.transfer.Progress";

/// The containerd attribute rules.
pub static RULES: &[Rule] = &[
    // Containers: Create/Update carry the whole record, Get/Delete the id.
    Rule::req(CONTAINERS, "id", CONTAINER_ID, Str),
    Rule::req(CONTAINERS, "container.id", CONTAINER_ID, Str),
    Rule::req(CONTAINERS, "container.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(CONTAINERS, "container.runtime.name", CONTAINERD_RUNTIME_NAME, Str),
    Rule::req(CONTAINERS, "container.snapshotter", CONTAINERD_SNAPSHOTTER, Str),
    Rule::req(CONTAINERS, "container.snapshot_key", CONTAINERD_SNAPSHOT_KEY, Str),
    Rule::req(CONTAINERS, "container.sandbox", CONTAINERD_SANDBOX_ID, Str),
    Rule::resp(CONTAINERS_GET, "container.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::resp(CONTAINERS_GET, "container.runtime.name", CONTAINERD_RUNTIME_NAME, Str),
    Rule::resp(CONTAINERS_GET, "container.sandbox", CONTAINERD_SANDBOX_ID, Str),
    // Tasks: container and exec ids in, pid and exit status out.
    Rule::req(TASKS, "container_id", CONTAINER_ID, Str),
    Rule::req(TASKS, "exec_id", CONTAINER_EXEC_ID, Str),
    Rule::resp(TASKS, "pid", CONTAINERD_TASK_PID, NonZeroInt),
    Rule::resp(TASKS, "exit_status", CONTAINERD_TASK_EXIT_STATUS, Int),
    Rule::resp(TASKS_GET, "process.pid", CONTAINERD_TASK_PID, NonZeroInt),
    Rule::resp(TASKS_GET, "process.exit_status", CONTAINERD_TASK_EXIT_STATUS, Int).when("process.status", "STOPPED"),
    // Images: the name is a full reference (`docker.io/library/bb:latest`).
    Rule::req(IMAGES, "name", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(IMAGES, "image.name", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(IMAGES, "image.target.digest", CONTAINER_IMAGE_ID, Str),
    Rule::resp(IMAGES, "image.name", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::resp(IMAGES, "image.target.digest", CONTAINER_IMAGE_ID, Str),
    // Content store: blob digest and size.
    Rule::req(CONTENT, "digest", CONTAINERD_CONTENT_DIGEST, Str),
    Rule::req(CONTENT, "info.digest", CONTAINERD_CONTENT_DIGEST, Str),
    Rule::req(CONTENT, "expected", CONTAINERD_CONTENT_DIGEST, Str),
    Rule::req(CONTENT, "total", CONTAINERD_CONTENT_SIZE, NonZeroInt),
    Rule::resp(CONTENT, "info.digest", CONTAINERD_CONTENT_DIGEST, Str),
    Rule::resp(CONTENT, "info.size", CONTAINERD_CONTENT_SIZE, NonZeroInt),
    Rule::resp(CONTENT, "digest", CONTAINERD_CONTENT_DIGEST, Str),
    Rule::resp(CONTENT, "total", CONTAINERD_CONTENT_SIZE, NonZeroInt),
    // Snapshots: snapshotter and key (a name, not a secret).
    Rule::req(SNAPSHOTS, "snapshotter", CONTAINERD_SNAPSHOTTER, Str),
    Rule::req(SNAPSHOTS, "key", CONTAINERD_SNAPSHOT_KEY, Str),
    // Events: the envelope's topic, and the ids inside the packed event (TaskExit...).
    Rule::resp(EVENTS_SUBSCRIBE, "topic", CONTAINERD_EVENT_TOPIC, Str),
    Rule::resp(EVENTS_SUBSCRIBE, "event.container_id", CONTAINER_ID, Str),
    Rule::resp(EVENTS_SUBSCRIBE, "event.exec_id", CONTAINER_EXEC_ID, Str),
    Rule::resp(EVENTS_SUBSCRIBE, "event.pid", CONTAINERD_TASK_PID, NonZeroInt),
    Rule::resp(EVENTS_SUBSCRIBE, "event.exit_status", CONTAINERD_TASK_EXIT_STATUS, Int),
    Rule::req(EVENTS_PUBLISH, "topic", CONTAINERD_EVENT_TOPIC, Str),
    Rule::req(EVENTS_PUBLISH, "event.container_id", CONTAINER_ID, Str),
    Rule::req(EVENTS_PUBLISH, "event.exec_id", CONTAINER_EXEC_ID, Str),
    Rule::req(EVENTS_FORWARD, "envelope.topic", CONTAINERD_EVENT_TOPIC, Str),
    Rule::req(EVENTS_FORWARD, "envelope.event.container_id", CONTAINER_ID, Str),
    Rule::req(EVENTS_FORWARD, "envelope.event.exec_id", CONTAINER_EXEC_ID, Str),
    // Sandboxes (2.x): the Store carries the record, the Controller the id and its sandboxer.
    Rule::req(SANDBOX_STORE, "sandbox_id", CONTAINERD_SANDBOX_ID, Str),
    Rule::req(SANDBOX_STORE, "sandbox.sandbox_id", CONTAINERD_SANDBOX_ID, Str),
    Rule::req(SANDBOX_STORE, "sandbox.runtime.name", CONTAINERD_RUNTIME_NAME, Str),
    Rule::req(SANDBOX_STORE, "sandbox.sandboxer", CONTAINERD_SANDBOXER, Str),
    Rule::resp(SANDBOX_STORE_GET, "sandbox.runtime.name", CONTAINERD_RUNTIME_NAME, Str),
    Rule::resp(SANDBOX_STORE_GET, "sandbox.sandboxer", CONTAINERD_SANDBOXER, Str),
    Rule::req(SANDBOX_CONTROLLER, "sandbox_id", CONTAINERD_SANDBOX_ID, Str),
    Rule::req(SANDBOX_CONTROLLER, "sandboxer", CONTAINERD_SANDBOXER, Str),
    // Transfer (2.x: `ctr images pull/push/import/export`): what goes where, the image, and
    // the ids of the Streaming/Stream calls it uses. The image is the one the source names
    // (pull: the registry reference; push: the local name), else the destination's (import
    // with `--index-name`). A plain import names none (the names are in the archive), nor
    // does export (in `extra_references`, a list). A registry resolver's `auth_stream` and
    // `headers` are never read.
    Rule::req(TRANSFER, "source", CONTAINERD_TRANSFER_SOURCE_TYPE, AnyType),
    Rule::req(TRANSFER, "destination", CONTAINERD_TRANSFER_DESTINATION_TYPE, AnyType),
    Rule::req(TRANSFER, "source.reference", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(TRANSFER, "source.name", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(TRANSFER, "destination.name", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(TRANSFER, "source.reference", CONTAINERD_TRANSFER_SOURCE_REFERENCE, Str),
    Rule::req(
        TRANSFER,
        "destination.reference",
        CONTAINERD_TRANSFER_DESTINATION_REFERENCE,
        Str,
    ),
    Rule::req(TRANSFER, "source.stream", CONTAINERD_TRANSFER_STREAM, Str),
    Rule::req(TRANSFER, "destination.stream", CONTAINERD_TRANSFER_STREAM, Str),
    Rule::req(
        TRANSFER,
        "options.progress_stream",
        CONTAINERD_TRANSFER_PROGRESS_STREAM,
        Str,
    ),
    // Streaming/Stream (2.x): each message is an Any. The first names the stream; data chunks
    // are never decoded; of the progress events, the last one's fields are kept.
    Rule::req(STREAM, "id", CONTAINERD_STREAM_ID, Str).of_type(STREAM_INIT),
    // The image an import saved (a plain `ctr images import` names none in its Transfer):
    // the first `saved` event; the correlator gives it to the Transfer that named the stream.
    Rule::resp(STREAM, "name", CONTAINER_IMAGE_NAME, ImageRef)
        .of_type(PROGRESS)
        .when("event", "saved"),
    Rule::resp(STREAM, "event", CONTAINERD_TRANSFER_PROGRESS_EVENT, Str)
        .of_type(PROGRESS)
        .latest(),
    Rule::resp(STREAM, "name", CONTAINERD_TRANSFER_PROGRESS_NAME, Str)
        .of_type(PROGRESS)
        .latest(),
    Rule::resp(STREAM, "progress", CONTAINERD_TRANSFER_PROGRESS_BYTES, NonZeroInt)
        .of_type(PROGRESS)
        .latest(),
    Rule::resp(STREAM, "total", CONTAINERD_TRANSFER_PROGRESS_TOTAL, NonZeroInt)
        .of_type(PROGRESS)
        .latest(),
];
