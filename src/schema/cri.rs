//! Kubernetes CRI (`runtime.v1` and `runtime.v1alpha2`, RuntimeService and ImageService):
//! which payload fields become span attributes. One table; the engine is in `rules.rs`.
//! Method names are package-relative, so each row serves both CRI versions (a row whose
//! field does not exist in one version is dropped for it when the method is looked up).
//! Rule it keeps: no row names a secret (`auth` in PullImage is never read).

use super::ValueKind::{ImageRef, Int, NonZeroInt, Str, TraceParentAnnotation};
use super::rules::Rule;
use crate::schema::names::{CONTAINERD_TASK_EXIT_STATUS, CRI_POD_SANDBOX_ID, IMAGE_BYTES, POD_TRACEPARENT};
use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, K8S_CONTAINER_NAME, K8S_NAMESPACE_NAME, K8S_POD_NAME,
    K8S_POD_UID,
};

const RUN_POD_SANDBOX: &str = "RuntimeService/RunPodSandbox";
const STOP_POD_SANDBOX: &str = "RuntimeService/StopPodSandbox";
const REMOVE_POD_SANDBOX: &str = "RuntimeService/RemovePodSandbox";
const POD_SANDBOX_STATUS: &str = "RuntimeService/PodSandboxStatus";
const POD_SANDBOX_STATS: &str = "RuntimeService/PodSandboxStats";
const PORT_FORWARD: &str = "RuntimeService/PortForward";
const CREATE_CONTAINER: &str = "RuntimeService/CreateContainer";
const START_CONTAINER: &str = "RuntimeService/StartContainer";
const STOP_CONTAINER: &str = "RuntimeService/StopContainer";
const REMOVE_CONTAINER: &str = "RuntimeService/RemoveContainer";
const CONTAINER_STATUS: &str = "RuntimeService/ContainerStatus";
const CONTAINER_STATS: &str = "RuntimeService/ContainerStats";
const UPDATE_CONTAINER_RESOURCES: &str = "RuntimeService/UpdateContainerResources";
const UPDATE_POD_SANDBOX_RESOURCES: &str = "RuntimeService/UpdatePodSandboxResources";
const REOPEN_CONTAINER_LOG: &str = "RuntimeService/ReopenContainerLog";
const CHECKPOINT_CONTAINER: &str = "RuntimeService/CheckpointContainer";
const EXEC_SYNC: &str = "RuntimeService/ExecSync";
const EXEC: &str = "RuntimeService/Exec";
const ATTACH: &str = "RuntimeService/Attach";
const GET_CONTAINER_EVENTS: &str = "RuntimeService/GetContainerEvents";
const PULL_IMAGE: &str = "ImageService/PullImage";
const IMAGE_STATUS: &str = "ImageService/ImageStatus";
const REMOVE_IMAGE: &str = "ImageService/RemoveImage";

/// The CRI attribute rules.
pub static RULES: &[Rule] = &[
    // Pod sandboxes: the pod's names on the way in, the sandbox id on the way out.
    Rule::req(RUN_POD_SANDBOX, "config.metadata.name", K8S_POD_NAME, Str),
    Rule::req(RUN_POD_SANDBOX, "config.metadata.namespace", K8S_NAMESPACE_NAME, Str),
    Rule::req(RUN_POD_SANDBOX, "config.metadata.uid", K8S_POD_UID, Str),
    // The pod's own trace context, if its annotations carry one: the pod start root links it.
    Rule::req(
        RUN_POD_SANDBOX,
        "config.annotations",
        POD_TRACEPARENT,
        TraceParentAnnotation,
    ),
    Rule::resp(RUN_POD_SANDBOX, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    Rule::req(STOP_POD_SANDBOX, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    Rule::req(REMOVE_POD_SANDBOX, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    Rule::req(POD_SANDBOX_STATUS, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    Rule::resp(POD_SANDBOX_STATUS, "status.metadata.name", K8S_POD_NAME, Str),
    Rule::resp(POD_SANDBOX_STATUS, "status.metadata.namespace", K8S_NAMESPACE_NAME, Str),
    Rule::resp(POD_SANDBOX_STATUS, "status.metadata.uid", K8S_POD_UID, Str),
    Rule::req(POD_SANDBOX_STATS, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    Rule::req(PORT_FORWARD, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    // In-place pod resize (CRI v1, kubelet 1.33+; containerd 2.1 answers UNIMPLEMENTED).
    Rule::req(UPDATE_POD_SANDBOX_RESOURCES, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    // CreateContainer: sandbox, container name, image, and the pod it belongs to.
    Rule::req(CREATE_CONTAINER, "pod_sandbox_id", CRI_POD_SANDBOX_ID, Str),
    Rule::req(CREATE_CONTAINER, "config.metadata.name", K8S_CONTAINER_NAME, Str),
    // kubelet may pass the pulled image's id (`sha256:...`) as `image` and the name the user
    // wrote as `user_specified_image` (CRI v1, 1.28+): the name first, then the id.
    Rule::req(
        CREATE_CONTAINER,
        "config.image.user_specified_image",
        CONTAINER_IMAGE_NAME,
        ImageRef,
    ),
    Rule::req(CREATE_CONTAINER, "config.image.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(CREATE_CONTAINER, "sandbox_config.metadata.name", K8S_POD_NAME, Str),
    Rule::req(
        CREATE_CONTAINER,
        "sandbox_config.metadata.namespace",
        K8S_NAMESPACE_NAME,
        Str,
    ),
    Rule::req(CREATE_CONTAINER, "sandbox_config.metadata.uid", K8S_POD_UID, Str),
    Rule::resp(CREATE_CONTAINER, "container_id", CONTAINER_ID, Str),
    // Calls on one container.
    Rule::req(START_CONTAINER, "container_id", CONTAINER_ID, Str),
    Rule::req(STOP_CONTAINER, "container_id", CONTAINER_ID, Str),
    Rule::req(REMOVE_CONTAINER, "container_id", CONTAINER_ID, Str),
    Rule::req(CONTAINER_STATUS, "container_id", CONTAINER_ID, Str),
    Rule::resp(CONTAINER_STATUS, "status.metadata.name", K8S_CONTAINER_NAME, Str),
    Rule::resp(
        CONTAINER_STATUS,
        "status.image.user_specified_image",
        CONTAINER_IMAGE_NAME,
        ImageRef,
    ),
    Rule::resp(CONTAINER_STATUS, "status.image.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::resp(CONTAINER_STATUS, "status.image_ref", CONTAINER_IMAGE_ID, Str),
    Rule::resp(CONTAINER_STATUS, "status.exit_code", CONTAINERD_TASK_EXIT_STATUS, Int)
        .when("status.state", "CONTAINER_EXITED"),
    Rule::req(CONTAINER_STATS, "container_id", CONTAINER_ID, Str),
    Rule::req(UPDATE_CONTAINER_RESOURCES, "container_id", CONTAINER_ID, Str),
    Rule::req(REOPEN_CONTAINER_LOG, "container_id", CONTAINER_ID, Str),
    Rule::req(CHECKPOINT_CONTAINER, "container_id", CONTAINER_ID, Str),
    Rule::req(EXEC_SYNC, "container_id", CONTAINER_ID, Str),
    Rule::resp(EXEC_SYNC, "exit_code", CONTAINERD_TASK_EXIT_STATUS, Int),
    Rule::req(EXEC, "container_id", CONTAINER_ID, Str),
    Rule::req(ATTACH, "container_id", CONTAINER_ID, Str),
    // Container events (a server stream: one message per event).
    Rule::resp(GET_CONTAINER_EVENTS, "container_id", CONTAINER_ID, Str),
    Rule::resp(GET_CONTAINER_EVENTS, "pod_sandbox_status.id", CRI_POD_SANDBOX_ID, Str),
    Rule::resp(
        GET_CONTAINER_EVENTS,
        "pod_sandbox_status.metadata.name",
        K8S_POD_NAME,
        Str,
    ),
    Rule::resp(
        GET_CONTAINER_EVENTS,
        "pod_sandbox_status.metadata.namespace",
        K8S_NAMESPACE_NAME,
        Str,
    ),
    Rule::resp(
        GET_CONTAINER_EVENTS,
        "pod_sandbox_status.metadata.uid",
        K8S_POD_UID,
        Str,
    ),
    // Images. PullImage's `auth` is never read; its sandbox_config names the pod.
    Rule::req(PULL_IMAGE, "image.image", CONTAINER_IMAGE_NAME, ImageRef),
    Rule::req(PULL_IMAGE, "sandbox_config.metadata.name", K8S_POD_NAME, Str),
    Rule::req(PULL_IMAGE, "sandbox_config.metadata.namespace", K8S_NAMESPACE_NAME, Str),
    Rule::req(PULL_IMAGE, "sandbox_config.metadata.uid", K8S_POD_UID, Str),
    Rule::resp(PULL_IMAGE, "image_ref", CONTAINER_IMAGE_ID, Str),
    Rule::req(IMAGE_STATUS, "image.image", CONTAINER_IMAGE_NAME, ImageRef),
    // The size of an image a PullImage fetched: CRI's pull answers once, with no progress,
    // and kubelet asks ImageStatus next.
    Rule::resp(IMAGE_STATUS, "image.size", IMAGE_BYTES, NonZeroInt),
    Rule::resp(IMAGE_STATUS, "image.id", CONTAINER_IMAGE_ID, Str),
    Rule::req(REMOVE_IMAGE, "image.image", CONTAINER_IMAGE_NAME, ImageRef),
];
