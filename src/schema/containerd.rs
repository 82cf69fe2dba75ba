//! containerd's own gRPC API (`containerd.services.*.v1`, the same services in 1.6 and 2.x):
//! which payload fields become span attributes. One table; the engine is in `rules.rs`.
//! `Service/*` rows apply to every method of the service whose message has the field.
//! Rule it keeps: ids and names only; no row reads a spec, options, labels or data.

use super::ValueKind::{ImageRef, Int, NonZeroInt, Str};
use super::names::{
    CONTAINERD_CONTENT_DIGEST, CONTAINERD_CONTENT_SIZE, CONTAINERD_RUNTIME_NAME, CONTAINERD_SNAPSHOT_KEY,
    CONTAINERD_SNAPSHOTTER,
};
use super::rules::Rule;
use crate::trace::attr::names::{
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

/// The containerd attribute rules.
pub static RULES: &[Rule] = &[
    // Containers: Create/Update carry the whole record, Get/Delete the id.
    Rule::req(CONTAINERS, "id", CONTAINER_ID, Str),
    Rule::req(CONTAINERS, "container.id", CONTAINER_ID, Str),
    Rule::req(CONTAINERS, "container.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(CONTAINERS, "container.runtime.name", CONTAINERD_RUNTIME_NAME, Str),
    Rule::req(CONTAINERS, "container.snapshotter", CONTAINERD_SNAPSHOTTER, Str),
    Rule::req(CONTAINERS, "container.snapshot_key", CONTAINERD_SNAPSHOT_KEY, Str),
    Rule::resp(CONTAINERS_GET, "container.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::resp(CONTAINERS_GET, "container.runtime.name", CONTAINERD_RUNTIME_NAME, Str),
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
];
