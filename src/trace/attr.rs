//! Attribute values of our own call model. Only the exporter turns these into
//! OpenTelemetry types, so the rest of the crate never depends on the opentelemetry crates.

use std::borrow::Cow;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    /// A measure with a fraction: self times in milliseconds, to the microsecond.
    Double(f64),
    Bool(bool),
    StrList(Vec<String>),
}

/// One span attribute: a name from the span contract in DESIGN.md and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub key: Cow<'static, str>,
    pub value: AttrValue,
}

impl Attr {
    pub fn str(key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Str(value.into()),
        }
    }

    pub fn int(key: impl Into<Cow<'static, str>>, value: i64) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Int(value),
        }
    }

    pub fn double(key: impl Into<Cow<'static, str>>, value: f64) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Double(value),
        }
    }

    pub fn bool(key: impl Into<Cow<'static, str>>, value: bool) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Bool(value),
        }
    }

    pub fn list(key: impl Into<Cow<'static, str>>, value: Vec<String>) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::StrList(value),
        }
    }
}

/// Attribute names of the span contract that the semantic conventions do not define.
/// Names the conventions do define come from `opentelemetry_semantic_conventions`.
pub mod names {
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
    pub const LINK: &str = "runtime_tap.link";
    /// What became of the W3C `traceparent` the client sent (`followed`, `confirmed`,
    /// `replaced`, `linked`; `trace::remote::RemoteOutcome`).
    pub const REMOTE_PARENT: &str = "runtime_tap.remote_parent";
}
