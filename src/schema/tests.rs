//! Schema tests against the recorded captures (tests/fixtures/captures) and built messages.

use std::collections::BTreeSet;

use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS, K8S_CONTAINER_NAME,
    K8S_NAMESPACE_NAME, K8S_POD_NAME, K8S_POD_UID,
};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};

use super::testutil::{GrpcMessage, capture_messages, grpc_capture_files};
use super::*;
use crate::schema::names::{
    CONTAINER_EXEC_ID, CONTAINERD_EVENT_TOPIC, CONTAINERD_TASK_EXIT_STATUS, CONTAINERD_TASK_PID, CRI_POD_SANDBOX_ID,
};

/// Every gRPC message of the captures (TESTBED.md: 510).
const CAPTURED_MESSAGES: usize = 510;

fn all_messages() -> Vec<GrpcMessage> {
    grpc_capture_files().iter().flat_map(|f| capture_messages(f)).collect()
}

pub(super) fn attrs_of(schema: &Schema, msgs: &[&GrpcMessage]) -> Vec<Attr> {
    let mut out = Vec::new();
    for m in msgs {
        let method = schema.method(&m.path).expect("method in pool");
        extract(schema, &method, m.side, &m.payload, &mut out).expect("extract");
    }
    out
}

/// The messages of the first call to `method` (by `:path`) in `file`.
pub(super) fn first_call(file: &str, path: &str) -> Vec<GrpcMessage> {
    let msgs = capture_messages(file);
    let stream = msgs
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("{path} in {file}"))
        .stream;
    msgs.into_iter().filter(|m| m.stream == stream).collect()
}

pub(super) fn call_attrs(schema: &Schema, file: &str, path: &str) -> Vec<Attr> {
    let msgs = first_call(file, path);
    attrs_of(schema, &msgs.iter().collect::<Vec<_>>())
}

pub(super) fn get<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|a| a.key == key).map(|a| &a.value)
}

pub(super) fn get_str<'a>(attrs: &'a [Attr], key: &str) -> &'a str {
    match get(attrs, key) {
        Some(AttrValue::Str(s)) => s,
        other => panic!("{key}: {other:?} in {attrs:?}"),
    }
}

pub(super) fn get_int(attrs: &[Attr], key: &str) -> i64 {
    match get(attrs, key) {
        Some(AttrValue::Int(n)) => *n,
        other => panic!("{key}: {other:?} in {attrs:?}"),
    }
}

pub(super) fn render(schema: &Schema, m: &GrpcMessage, cap: usize) -> String {
    let method = schema.method(&m.path).expect("method");
    render_json(schema, method.message(m.side), &m.payload, cap)
}

#[test]
fn builtin_pool_has_the_apis() {
    let schema = Schema::builtin();
    let services: BTreeSet<String> = schema.pool().services().map(|s| s.full_name().to_owned()).collect();
    for s in [
        "runtime.v1.RuntimeService",
        "runtime.v1.ImageService",
        "runtime.v1alpha2.RuntimeService",
        "runtime.v1alpha2.ImageService",
        "containerd.services.containers.v1.Containers",
        "containerd.services.tasks.v1.Tasks",
        "containerd.services.events.v1.Events",
        "containerd.services.content.v1.Content",
        "containerd.services.snapshots.v1.Snapshots",
    ] {
        assert!(services.contains(s), "{s} missing from {services:?}");
    }
    assert!(services.len() >= 20, "{services:?}");
    for m in [
        "containerd.runc.v1.Options",
        "containerd.events.TaskExit",
        "google.rpc.Status",
        "google.protobuf.Any",
    ] {
        assert!(schema.message(m).is_some(), "{m}");
    }
}

#[test]
fn method_lookup() {
    let schema = Schema::builtin();
    let m = schema
        .method("/containerd.services.tasks.v1.Tasks/Start")
        .expect("Tasks/Start");
    assert_eq!(m.full_name, "containerd.services.tasks.v1.Tasks/Start");
    assert_eq!(m.api, Api::Containerd);
    assert_eq!(m.input.full_name(), "containerd.services.tasks.v1.StartRequest");
    assert!(!m.client_streaming && !m.server_streaming);
    let sub = schema
        .method("containerd.services.events.v1.Events/Subscribe")
        .expect("no slash is fine");
    assert!(sub.server_streaming);
    let cri = schema
        .method("/runtime.v1alpha2.RuntimeService/RunPodSandbox")
        .expect("v1alpha2");
    assert_eq!(cri.api, Api::Cri);
    assert!(wants_payload(&cri, Side::Request) && wants_payload(&cri, Side::Response));
    let version = schema.method("/runtime.v1.RuntimeService/Version").expect("Version");
    assert!(!wants_payload(&version, Side::Request) && !wants_payload(&version, Side::Response));
    for bad in [
        "",
        "/",
        "/nosuch.Service/Method",
        "/runtime.v1.RuntimeService/NoSuch",
        "/runtime.v1.RuntimeService/",
        "/a/b/c",
    ] {
        assert!(schema.method(bad).is_none(), "{bad}");
    }
}

#[test]
fn every_captured_message_decodes() {
    let schema = Schema::builtin();
    let msgs = all_messages();
    assert_eq!(msgs.len(), CAPTURED_MESSAGES);
    for m in &msgs {
        let method = schema
            .method(&m.path)
            .unwrap_or_else(|| panic!("{} not in pool ({})", m.path, m.file));
        DynamicMessage::decode(method.message(m.side).clone(), m.payload.as_slice())
            .unwrap_or_else(|e| panic!("{} {:?} in {}: {e}", m.path, m.side, m.file));
        let mut out = Vec::new();
        extract(&schema, &method, m.side, &m.payload, &mut out).expect("extract");
    }
}

#[test]
fn every_rule_resolves_somewhere_and_names_no_secret() {
    let schema = Schema::builtin();
    let methods: Vec<MethodInfo> = schema
        .pool()
        .services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .map(|m| {
            schema
                .method(&format!("/{}/{}", m.parent_service().full_name(), m.name()))
                .expect("own method")
        })
        .collect();
    for table in [cri::RULES, containerd::RULES] {
        for rule in table {
            assert!(!redact::path_is_sensitive(rule.field_path), "{rule:?}");
            assert!(
                methods.iter().any(|m| m.rules.iter().any(|r| std::ptr::eq(*r, rule))),
                "rule applies to no method: {rule:?}"
            );
        }
    }
    // Both CRI versions get the RunPodSandbox rules.
    for pkg in ["runtime.v1", "runtime.v1alpha2"] {
        let m = schema
            .method(&format!("/{pkg}.RuntimeService/RunPodSandbox"))
            .expect("method");
        assert_eq!(m.rules.len(), 5, "{pkg}");
    }
}

#[test]
fn cri_run_pod_sandbox() {
    let schema = Schema::builtin();
    let attrs = call_attrs(
        &schema,
        "cri-pod-lifecycle.jsonl",
        "/runtime.v1.RuntimeService/RunPodSandbox",
    );
    assert_eq!(get_str(&attrs, K8S_POD_NAME), "fixture-pod");
    assert_eq!(get_str(&attrs, K8S_NAMESPACE_NAME), "fixture-ns");
    assert_eq!(get_str(&attrs, K8S_POD_UID), "fixture-uid-1");
    let sandbox = get_str(&attrs, CRI_POD_SANDBOX_ID);
    assert_eq!(sandbox.len(), 64, "{sandbox}");
    // The same id in the calls on that sandbox.
    for path in [
        "/runtime.v1.RuntimeService/CreateContainer",
        "/runtime.v1.RuntimeService/StopPodSandbox",
    ] {
        let a = call_attrs(&schema, "cri-pod-lifecycle.jsonl", path);
        assert_eq!(get_str(&a, CRI_POD_SANDBOX_ID), sandbox, "{path}");
    }
}

#[test]
fn cri_create_and_start_container() {
    let schema = Schema::builtin();
    let attrs = call_attrs(
        &schema,
        "cri-pod-lifecycle.jsonl",
        "/runtime.v1.RuntimeService/CreateContainer",
    );
    assert_eq!(get_str(&attrs, K8S_CONTAINER_NAME), "fixture-ctr");
    assert_eq!(get_str(&attrs, CONTAINER_IMAGE_NAME), "registry.k8s.io/pause");
    assert_eq!(
        get(&attrs, CONTAINER_IMAGE_TAGS),
        Some(&AttrValue::StrList(vec!["3.6".into()]))
    );
    assert_eq!(get_str(&attrs, K8S_POD_NAME), "fixture-pod");
    let id = get_str(&attrs, CONTAINER_ID).to_owned();
    assert_eq!(id.len(), 64);
    let entities: Vec<_> = entity_ids(&attrs).collect();
    assert!(entities.contains(&(EntityKind::Container, id.as_str())), "{entities:?}");
    assert!(
        entities.iter().any(|(k, _)| *k == EntityKind::PodSandbox),
        "{entities:?}"
    );

    let start = call_attrs(
        &schema,
        "cri-pod-lifecycle.jsonl",
        "/runtime.v1.RuntimeService/StartContainer",
    );
    assert_eq!(get_str(&start, CONTAINER_ID), id);
    let status = call_attrs(
        &schema,
        "cri-pod-lifecycle.jsonl",
        "/runtime.v1.RuntimeService/ContainerStatus",
    );
    assert_eq!(get_str(&status, CONTAINER_ID), id);
    assert_eq!(
        get_int(&status, CONTAINERD_TASK_EXIT_STATUS),
        0,
        "exited container, echo hi"
    );
}

#[test]
fn cri_image_calls() {
    let schema = Schema::builtin();
    let status = call_attrs(
        &schema,
        "cri-pod-lifecycle.jsonl",
        "/runtime.v1.ImageService/ImageStatus",
    );
    assert_eq!(get_str(&status, CONTAINER_IMAGE_NAME), "registry.k8s.io/pause");
    assert!(
        get_str(&status, CONTAINER_IMAGE_ID).starts_with("sha256:"),
        "{status:?}"
    );
    let pull = call_attrs(&schema, "cri-pod-lifecycle.jsonl", "/runtime.v1.ImageService/PullImage");
    assert_eq!(
        get_str(&pull, CONTAINER_IMAGE_NAME),
        "example.invalid/nosuch",
        "{pull:?}"
    );
    assert_eq!(
        get(&pull, CONTAINER_IMAGE_TAGS),
        Some(&AttrValue::StrList(vec!["1".into()]))
    );
    // The pull failed (grpc-status 2): no response message, so no image id.
    assert!(get(&pull, CONTAINER_IMAGE_ID).is_none(), "{pull:?}");
}

pub(super) const FIXTURE_SECRETS: &[&str] = &["fixture-user", "not-a-real-password", "not-a-real-secret"];

#[test]
fn secrets_never_in_attributes_or_rendered_json() {
    let schema = Schema::builtin();
    let msgs = all_messages();
    let mut attrs = Vec::new();
    for m in &msgs {
        let method = schema.method(&m.path).expect("method");
        let mut out = Vec::new();
        extract(&schema, &method, m.side, &m.payload, &mut out).expect("extract");
        attrs.extend(out);
        for cap in [usize::MAX, 4096, 300, 64, 7, 0] {
            let json = render(&schema, m, cap);
            assert!(json.len() <= cap, "{} over cap {cap}: {}", m.path, json.len());
            if !json.is_empty() {
                serde_json::from_str::<serde_json::Value>(&json)
                    .unwrap_or_else(|e| panic!("{} cap {cap}: invalid json {e}: {json}", m.path));
            }
            for s in FIXTURE_SECRETS {
                assert!(!json.contains(s), "{s} in {} json: {json}", m.path);
            }
            if cap == usize::MAX {
                let v: serde_json::Value = serde_json::from_str(&json).expect("json");
                env_values_redacted(&v, &m.path);
            }
        }
    }
    let text = format!("{attrs:?}");
    for s in FIXTURE_SECRETS {
        assert!(!text.contains(s), "{s} in attributes");
    }
}

/// Every `env`/`envs` list anywhere in `v` shows names only.
pub(super) fn env_values_redacted(v: &serde_json::Value, what: &str) {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            for (k, child) in map {
                if redact::is_env_name(k) {
                    for e in child.as_array().into_iter().flatten() {
                        match e {
                            J::String(s) => assert!(s.ends_with(redact::REDACTED), "{what}: {s}"),
                            J::Object(kv) => assert_eq!(kv["value"], redact::REDACTED, "{what}: {e}"),
                            other => panic!("{what}: env entry {other}"),
                        }
                    }
                } else {
                    env_values_redacted(child, what);
                }
            }
        }
        J::Array(items) => items.iter().for_each(|i| env_values_redacted(i, what)),
        _ => {}
    }
}

#[test]
fn pull_image_auth_and_env_rendered_redacted() {
    let schema = Schema::builtin();
    let pull = first_call("cri-pod-lifecycle.jsonl", "/runtime.v1.ImageService/PullImage");
    let req = pull.iter().find(|m| m.side == Side::Request).expect("request");
    let json: serde_json::Value = serde_json::from_str(&render(&schema, req, usize::MAX)).expect("json");
    let auth = &json["auth"];
    assert_eq!(auth["username"], "***", "{json}");
    assert_eq!(auth["password"], "***", "{json}");
    assert_eq!(json["image"]["image"], "example.invalid/nosuch:1", "{json}");

    let create = first_call("cri-pod-lifecycle.jsonl", "/runtime.v1.RuntimeService/CreateContainer");
    let req = create.iter().find(|m| m.side == Side::Request).expect("request");
    let text = render(&schema, req, usize::MAX);
    assert!(text.contains("DB_PASSWORD"), "{text}");
    assert!(!text.contains("not-a-real-secret"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let envs = json["config"]["envs"].as_array().expect("envs");
    assert!(
        envs.iter().any(|e| e["key"] == "DB_PASSWORD" && e["value"] == "***"),
        "{envs:?}"
    );
}

#[test]
fn built_auth_config_redacted_but_server_address_shown() {
    let schema = Schema::builtin();
    for pkg in ["runtime.v1", "runtime.v1alpha2"] {
        let desc = schema.message(&format!("{pkg}.PullImageRequest")).expect("type");
        let auth_desc = schema.message(&format!("{pkg}.AuthConfig")).expect("type");
        let mut auth = DynamicMessage::new(auth_desc);
        for (f, v) in [
            ("username", "u-secret"),
            ("password", "p-secret"),
            ("auth", "a-secret"),
            ("identity_token", "i-secret"),
            ("registry_token", "r-secret"),
            ("server_address", "registry.example:5000"),
        ] {
            auth.set_field_by_name(f, Value::String(v.into()));
        }
        let mut req = DynamicMessage::new(desc.clone());
        req.set_field_by_name("auth", Value::Message(auth));
        let mut meta = DynamicMessage::new(schema.message(&format!("{pkg}.PodSandboxMetadata")).expect("type"));
        meta.set_field_by_name("name", Value::String("p1".into()));
        meta.set_field_by_name("namespace", Value::String("ns1".into()));
        meta.set_field_by_name("uid", Value::String("u1".into()));
        let mut sandbox = DynamicMessage::new(schema.message(&format!("{pkg}.PodSandboxConfig")).expect("type"));
        sandbox.set_field_by_name("metadata", Value::Message(meta));
        req.set_field_by_name("sandbox_config", Value::Message(sandbox));
        let mut image = DynamicMessage::new(schema.message(&format!("{pkg}.ImageSpec")).expect("type"));
        image.set_field_by_name("image", Value::String("host:5000/img:v2".into()));
        req.set_field_by_name("image", Value::Message(image));
        let bytes = req.encode_to_vec();
        let text = render_json(&schema, &desc, &bytes, usize::MAX);
        assert!(!text.contains("-secret"), "{text}");
        assert!(text.contains("registry.example:5000"), "{text}");
        let method = schema
            .method(&format!("/{pkg}.ImageService/PullImage"))
            .expect("method");
        let mut out = Vec::new();
        extract(&schema, &method, Side::Request, &bytes, &mut out).expect("extract");
        assert!(!format!("{out:?}").contains("-secret"));
        assert_eq!(get_str(&out, K8S_POD_NAME), "p1");
        assert_eq!(get_str(&out, K8S_NAMESPACE_NAME), "ns1");
        assert_eq!(get_str(&out, K8S_POD_UID), "u1");
        assert_eq!(get_str(&out, CONTAINER_IMAGE_NAME), "host:5000/img");
        assert_eq!(
            get(&out, CONTAINER_IMAGE_TAGS),
            Some(&AttrValue::StrList(vec!["v2".into()]))
        );
    }
}

/// RunPodSandbox's attributes when its sandbox config carries `annotations`.
fn run_pod_sandbox_with(schema: &Schema, annotations: &[(&str, &str)]) -> Vec<Attr> {
    let mut config = DynamicMessage::new(schema.message("runtime.v1.PodSandboxConfig").expect("type"));
    let map = annotations
        .iter()
        .map(|(k, v)| (prost_reflect::MapKey::String((*k).into()), Value::String((*v).into())))
        .collect();
    config.set_field_by_name("annotations", Value::Map(map));
    let mut req = DynamicMessage::new(schema.message("runtime.v1.RunPodSandboxRequest").expect("type"));
    req.set_field_by_name("config", Value::Message(config));
    let method = schema
        .method("/runtime.v1.RuntimeService/RunPodSandbox")
        .expect("method");
    let mut out = Vec::new();
    extract(schema, &method, Side::Request, &req.encode_to_vec(), &mut out).expect("extract");
    out
}

#[test]
fn a_pods_traceparent_annotation_is_read_and_no_other_annotation_is() {
    let schema = Schema::builtin();
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for key in ["traceparent", "tracing.example.io/traceparent"] {
        let out = run_pod_sandbox_with(&schema, &[(key, TP), ("secret-ish", "hunter2")]);
        assert_eq!(get_str(&out, crate::schema::names::POD_TRACEPARENT), TP, "{key}");
        assert!(!format!("{out:?}").contains("hunter2"), "{out:?}");
    }
    for key in ["my-traceparent", "traceparent/x", "tracestate"] {
        let out = run_pod_sandbox_with(&schema, &[(key, TP)]);
        assert_eq!(get(&out, crate::schema::names::POD_TRACEPARENT), None, "{key}");
    }
}

#[test]
fn cri_create_container_by_image_id() {
    let schema = Schema::builtin();
    const ID: &str = "sha256:7cdd7cbbe2d02bbdbcf522648b1930bf8fd4fcd50a84d1ac1761a968de60f44d";
    let mut image = DynamicMessage::new(schema.message("runtime.v1.ImageSpec").expect("type"));
    image.set_field_by_name("image", Value::String(ID.into()));
    image.set_field_by_name("user_specified_image", Value::String("host:5000/busybox:1.36".into()));
    let mut config = DynamicMessage::new(schema.message("runtime.v1.ContainerConfig").expect("type"));
    config.set_field_by_name("image", Value::Message(image));
    let mut req = DynamicMessage::new(schema.message("runtime.v1.CreateContainerRequest").expect("type"));
    req.set_field_by_name("config", Value::Message(config));
    let method = schema
        .method("/runtime.v1.RuntimeService/CreateContainer")
        .expect("method");
    let mut out = Vec::new();
    extract(&schema, &method, Side::Request, &req.encode_to_vec(), &mut out).expect("extract");
    assert_eq!(get_str(&out, CONTAINER_IMAGE_NAME), "host:5000/busybox");
    assert_eq!(
        get(&out, CONTAINER_IMAGE_TAGS),
        Some(&AttrValue::StrList(vec!["1.36".into()]))
    );
    assert_eq!(get_str(&out, CONTAINER_IMAGE_ID), ID);
}

#[test]
fn dockerd_containerd_calls() {
    let schema = Schema::builtin();
    const FILE: &str = "dockerd-to-containerd.jsonl";
    let create = call_attrs(&schema, FILE, "/containerd.services.containers.v1.Containers/Create");
    let id = get_str(&create, CONTAINER_ID).to_owned();
    assert_eq!(id.len(), 64, "{create:?}");
    assert_eq!(
        get_str(&create, names::CONTAINERD_RUNTIME_NAME),
        "io.containerd.runc.v2"
    );
    let task = call_attrs(&schema, FILE, "/containerd.services.tasks.v1.Tasks/Create");
    assert_eq!(get_str(&task, CONTAINER_ID), id);
    assert!(get_int(&task, CONTAINERD_TASK_PID) > 0, "{task:?}");
    let start = call_attrs(&schema, FILE, "/containerd.services.tasks.v1.Tasks/Start");
    assert_eq!(get_str(&start, CONTAINER_ID), id);
    assert!(get_int(&start, CONTAINERD_TASK_PID) > 0, "{start:?}");

    // Exec: Tasks/Exec carries the exec id, and a later Tasks/Start carries it too.
    let msgs = capture_messages(FILE);
    let exec = msgs
        .iter()
        .find(|m| m.path.ends_with("Tasks/Exec") && m.side == Side::Request)
        .expect("exec");
    let exec_attrs = attrs_of(&schema, &[exec]);
    let exec_id = get_str(&exec_attrs, CONTAINER_EXEC_ID);
    assert!(!exec_id.is_empty());
    let exec_json = render(&schema, exec, usize::MAX);
    assert!(exec_json.contains("runtime-spec/1/Process"), "{exec_json}");
    let with_exec = msgs
        .iter()
        .filter(|m| m.path.ends_with("Tasks/Start") && m.side == Side::Request)
        .any(|m| {
            let a = attrs_of(&schema, &[m]);
            matches!(get(&a, CONTAINER_EXEC_ID), Some(AttrValue::Str(s)) if s == exec_id)
        });
    assert!(with_exec, "no Tasks/Start with exec id {exec_id}");

    // Delete gives the exit status.
    let delete = call_attrs(&schema, FILE, "/containerd.services.tasks.v1.Tasks/Delete");
    assert!(get(&delete, CONTAINERD_TASK_EXIT_STATUS).is_some(), "{delete:?}");
}

#[test]
fn events_subscribe_gives_topic_and_ids() {
    let schema = Schema::builtin();
    let msgs = capture_messages("dockerd-to-containerd.jsonl");
    let events: Vec<&GrpcMessage> = msgs
        .iter()
        .filter(|m| m.path.ends_with("Events/Subscribe") && m.side == Side::Response)
        .collect();
    assert!(!events.is_empty());
    let mut topics = BTreeSet::new();
    for e in &events {
        let a = attrs_of(&schema, &[*e]);
        let topic = get_str(&a, CONTAINERD_EVENT_TOPIC).to_owned();
        if topic.starts_with("/tasks/") {
            assert!(get(&a, CONTAINER_ID).is_some(), "{topic}: {a:?}");
        }
        if topic == "/tasks/exit" {
            assert!(get(&a, CONTAINERD_TASK_EXIT_STATUS).is_some(), "{a:?}");
            assert!(get(&a, CONTAINERD_TASK_PID).is_some(), "{a:?}");
        }
        topics.insert(topic);
    }
    for t in ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"] {
        assert!(topics.contains(t), "{t} not in {topics:?}");
    }
    // Rendered, the event Any is resolved by its slash-less URL.
    let json = render(&schema, events[0], usize::MAX);
    assert!(json.contains("\"@type\":\"containerd.events."), "{json}");
    assert!(!json.contains("\"size\""), "{json}");
}

#[test]
fn ctr_calls_render_any_and_oci_spec() {
    let schema = Schema::builtin();
    let create = first_call("ctr-run.jsonl", "/containerd.services.containers.v1.Containers/Create");
    let req = create.iter().find(|m| m.side == Side::Request).expect("request");
    let json: serde_json::Value = serde_json::from_str(&render(&schema, req, usize::MAX)).expect("json");
    let container = &json["container"];
    assert_eq!(
        container["runtime"]["options"]["@type"], "containerd.runc.v1.Options",
        "{json}"
    );
    let spec = &container["spec"];
    assert_eq!(spec["@type"], "types.containerd.io/opencontainers/runtime-spec/1/Spec");
    let env = spec["value"]["process"]["env"].as_array().expect("process.env");
    assert!(!env.is_empty());
    for e in env {
        let e = e.as_str().expect("string");
        assert!(e.ends_with("=***"), "{e}");
    }
    assert!(
        spec["value"]["process"]["args"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{spec}"
    );

    let attrs = attrs_of(&schema, &[req]);
    assert!(get(&attrs, CONTAINER_ID).is_some(), "{attrs:?}");
    assert!(get(&attrs, CONTAINER_IMAGE_NAME).is_some(), "{attrs:?}");
    assert!(get(&attrs, names::CONTAINERD_SNAPSHOTTER).is_some(), "{attrs:?}");
}

#[test]
fn ctr_images_import_content_snapshots_images() {
    let schema = Schema::builtin();
    const FILE: &str = "ctr-images-import.jsonl";
    let info = call_attrs(&schema, FILE, "/containerd.services.content.v1.Content/Info");
    assert!(
        get_str(&info, names::CONTAINERD_CONTENT_DIGEST).starts_with("sha256:"),
        "{info:?}"
    );
    let write = call_attrs(&schema, FILE, "/containerd.services.content.v1.Content/Write");
    assert!(get(&write, names::CONTAINERD_CONTENT_SIZE).is_some(), "{write:?}");
    let prepare = call_attrs(&schema, FILE, "/containerd.services.snapshots.v1.Snapshots/Prepare");
    assert!(!get_str(&prepare, names::CONTAINERD_SNAPSHOT_KEY).is_empty());
    assert_eq!(get_str(&prepare, names::CONTAINERD_SNAPSHOTTER), "overlayfs");
    let image = call_attrs(&schema, FILE, "/containerd.services.images.v1.Images/Create");
    assert!(get(&image, CONTAINER_IMAGE_NAME).is_some(), "{image:?}");
    assert!(get_str(&image, CONTAINER_IMAGE_ID).starts_with("sha256:"), "{image:?}");
}

#[test]
fn extract_reports_undecodable_payload() {
    let schema = Schema::builtin();
    let method = schema
        .method("/runtime.v1.RuntimeService/RunPodSandbox")
        .expect("method");
    let mut out = vec![Attr::str("keep", "me")];
    let err = extract(&schema, &method, Side::Request, &[0x0a, 0xff, 0x01], &mut out).expect_err("bad payload");
    assert!(err.to_string().contains("RunPodSandbox"), "{err}");
    assert_eq!(out.len(), 1);
    let json = render_json(&schema, &method.input, &[0x0a, 0xff, 0x01], usize::MAX);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["size"], 3);
}

#[test]
fn user_descriptor_sets() {
    use prost_reflect::prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    let mut schema = Schema::builtin();
    // The builtin set again: every file is a duplicate and skipped.
    let again = schema.pool().encode_to_vec();
    schema.add_descriptor_set(&again).expect("duplicates are skipped");
    assert!(schema.add_descriptor_set(b"\x0a\x05garbage").is_err());
    let set = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("acme/echo.proto".into()),
            package: Some("acme.v1".into()),
            dependency: vec!["google/protobuf/empty.proto".into()],
            service: vec![ServiceDescriptorProto {
                name: Some("Echo".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Ping".into()),
                    input_type: Some(".google.protobuf.Empty".into()),
                    output_type: Some(".google.protobuf.Empty".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        }],
    };
    let before = Schema::builtin();
    schema.add_descriptor_set(&set.encode_to_vec()).expect("user set links");
    let m = schema.method("/acme.v1.Echo/Ping").expect("user method");
    assert_eq!(m.api, Api::Other);
    assert!(!wants_payload(&m, Side::Request));
    assert!(before.method("/acme.v1.Echo/Ping").is_none(), "builtin unchanged");
    assert!(
        Schema::builtin().method("/acme.v1.Echo/Ping").is_none(),
        "builtin unchanged"
    );
}

#[test]
fn capped_rendering_stays_valid_json() {
    use render::to_string_capped;
    let v = serde_json::json!({
        "a": "x".repeat(100),
        "list": [1, 2, 3, "ünïcødé \"quoted\" \n", {"deep": [true, false, null]}],
        "z": {"k": "v"}
    });
    let full = v.to_string();
    assert_eq!(to_string_capped(&v, usize::MAX), full);
    assert_eq!(to_string_capped(&v, full.len()), full);
    for cap in 0..full.len() {
        let s = to_string_capped(&v, cap);
        assert!(s.len() <= cap, "cap {cap}: {s}");
        if s.is_empty() {
            assert!(cap < 2, "cap {cap} gave nothing");
            continue;
        }
        serde_json::from_str::<serde_json::Value>(&s).unwrap_or_else(|e| panic!("cap {cap}: {e}: {s}"));
        if cap > 40 {
            assert!(
                s.contains(render::ELLIPSIS) || s.contains(render::TRUNCATED_KEY),
                "cap {cap}: {s}"
            );
        }
    }
}

#[test]
fn timestamps_render_rfc3339() {
    let schema = Schema::builtin();
    let desc = schema.message("google.protobuf.Timestamp").expect("ts");
    for (secs, nanos, want) in [
        (0_i64, 0_i32, "\"1970-01-01T00:00:00Z\""),
        (1_714_564_800, 500_000_000, "\"2024-05-01T12:00:00.5Z\""),
        (951_782_400, 1, "\"2000-02-29T00:00:00.000000001Z\""),
    ] {
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("seconds", Value::I64(secs));
        m.set_field_by_name("nanos", Value::I32(nanos));
        assert_eq!(render_json(&schema, &desc, &m.encode_to_vec(), 100), want);
    }
}

#[test]
fn entity_ids_picks_ids() {
    let attrs = vec![
        Attr::str(K8S_POD_NAME, "p"),
        Attr::str(CONTAINER_ID, "c1"),
        Attr::str(CRI_POD_SANDBOX_ID, "s1"),
        Attr::str(CONTAINER_EXEC_ID, ""),
        Attr::int(CONTAINERD_TASK_PID, 4),
        Attr::str(CONTAINER_EXEC_ID, "e1"),
    ];
    let ids: Vec<_> = entity_ids(&attrs).collect();
    assert_eq!(
        ids,
        vec![
            (EntityKind::Container, "c1"),
            (EntityKind::PodSandbox, "s1"),
            (EntityKind::Exec, "e1")
        ]
    );
}

/// Decode only what a rule needs: a Content/Write chunk's `data` and `labels` are stepped
/// over, never decoded. A labels entry that is not even valid protobuf does not stop the
/// rules' fields (digest, size) from being read, and the pruned payload holds only those.
#[test]
fn only_the_fields_a_rule_reads_are_decoded() {
    let schema = Schema::builtin();
    let method = schema
        .method("/containerd.services.content.v1.Content/Write")
        .expect("method");
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000002";
    let mut payload = vec![0x08, 0x01]; // action = WRITE
    payload.extend([0x12, 0x03]);
    payload.extend(b"ref"); // ref
    payload.extend([0x18, 0x80, 0x08]); // total = 1024
    payload.push(0x22);
    payload.push(digest.len() as u8);
    payload.extend(digest.as_bytes()); // expected
    payload.extend([0x32, 0x80, 0x08]);
    payload.extend([0xabu8; 1024]); // data: 1 KiB
    payload.extend([0x3a, 0x03, 0xff, 0xff, 0xff]); // labels: a broken map entry
    assert!(
        DynamicMessage::decode(method.input.clone(), &payload[..]).is_err(),
        "the whole message does not decode"
    );
    let mut out = Vec::new();
    extract(&schema, &method, Side::Request, &payload, &mut out).expect("extract");
    assert_eq!(get_str(&out, names::CONTAINERD_CONTENT_DIGEST), digest);
    assert_eq!(get(&out, names::CONTAINERD_CONTENT_SIZE), Some(&AttrValue::Int(1024)));
    let wanted = [3, 4];
    let pruned = rules::prune(&payload, &wanted);
    assert_eq!(pruned.len(), 3 + 2 + digest.len());
    // Groups or a broken walk: the payload is given back whole for the decoder to judge.
    assert_eq!(rules::prune(&[0x0b, 0x0c], &wanted).len(), 2);
    assert_eq!(rules::prune(&[0x22, 0x40, 0x01], &wanted).len(), 3);
}
