//! Schema tests for containerd 2.x and CRI v1 as of cri-api 0.36, against the captures of
//! containerd 2.1.9 with ctr 2.1.9 and a CRI client (tests/fixtures/captures/containerd-2.1):
//! Transfer/Transfer and the Streaming/Stream calls it names, the rule engine on messages that
//! are themselves an Any, the Sandbox service and UpdatePodSandboxResources.

use std::collections::BTreeSet;

use opentelemetry_semantic_conventions::attribute::{CONTAINER_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};

use super::names::*;
use super::tests::{FIXTURE_SECRETS, call_attrs, env_values_redacted, first_call, get, get_int, get_str, render};
use super::testutil::{GrpcMessage, capture_messages, grpc_capture_files_in};
use super::*;
use crate::schema::names::CRI_POD_SANDBOX_ID;

const FOLDER: &str = "containerd-2.1";
/// Every gRPC message of the containerd 2.1 captures.
const CAPTURED_MESSAGES: usize = 146;
const TRANSFER: &str = "/containerd.services.transfer.v1.Transfer/Transfer";
const STREAM: &str = "/containerd.services.streaming.v1.Streaming/Stream";
const STREAM_INIT: &str = "containerd.services.streaming.v1.StreamInit";
const PROGRESS: &str = "containerd.types.transfer.Progress";
const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
const REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
/// The fake credential the CRI capture carries in an environment value (`FIXTURE_TOKEN`).
const FIXTURE_TOKEN: &str = "not-a-real-token";

fn file(name: &str) -> String {
    format!("{FOLDER}/{name}.jsonl")
}

/// Attributes of each Streaming/Stream call of a capture, in stream order.
fn stream_calls(schema: &Schema, name: &str) -> Vec<Vec<Attr>> {
    let msgs = capture_messages(&file(name));
    let streams: BTreeSet<u32> = msgs.iter().filter(|m| m.path == STREAM).map(|m| m.stream).collect();
    streams
        .into_iter()
        .map(|s| {
            let method = schema.method(STREAM).expect("Streaming/Stream");
            let mut out = Vec::new();
            for m in msgs.iter().filter(|m| m.stream == s) {
                extract(schema, &method, m.side, &m.payload, &mut out).expect("extract");
            }
            out
        })
        .collect()
}

fn stream_entities(attrs: &[Attr]) -> BTreeSet<&str> {
    entity_ids(attrs)
        .filter(|(k, _)| *k == EntityKind::Stream)
        .map(|(_, id)| id)
        .collect()
}

fn tags(attrs: &[Attr]) -> Option<&AttrValue> {
    get(attrs, CONTAINER_IMAGE_TAGS)
}

#[test]
fn every_containerd21_message_decodes() {
    let schema = Schema::builtin();
    let files = grpc_capture_files_in(FOLDER);
    assert_eq!(files.len(), 6, "{files:?}");
    let msgs: Vec<GrpcMessage> = files.iter().flat_map(|f| capture_messages(f)).collect();
    assert_eq!(msgs.len(), CAPTURED_MESSAGES);
    for m in &msgs {
        let method = schema
            .method(&m.path)
            .unwrap_or_else(|| panic!("{} not in pool ({})", m.path, m.file));
        DynamicMessage::decode(method.message(m.side).clone(), m.payload.as_slice())
            .unwrap_or_else(|e| panic!("{} {:?} in {}: {e}", m.path, m.side, m.file));
        let mut out = Vec::new();
        extract(&schema, &method, m.side, &m.payload, &mut out).expect("extract");
        for cap in [usize::MAX, 300, 0] {
            let json = render(&schema, m, cap);
            assert!(json.len() <= cap, "{} over cap {cap}", m.path);
            for s in FIXTURE_SECRETS.iter().chain([&FIXTURE_TOKEN]) {
                assert!(!json.contains(s), "{s} in {} json: {json}", m.path);
            }
            if cap == usize::MAX {
                env_values_redacted(&serde_json::from_str(&json).expect("json"), &m.path);
            }
        }
        assert!(!format!("{out:?}").contains(FIXTURE_TOKEN), "{}: {out:?}", m.path);
    }
}

/// `ctr images import --index-name`: an import stream into the image store, which names the
/// image; the two stream ids are those of the two Streaming/Stream calls.
#[test]
fn transfer_import_names_image_types_and_streams() {
    let schema = Schema::builtin();
    let name = "ctr-images-import-index-name";
    let t = call_attrs(&schema, &file(name), TRANSFER);
    assert_eq!(
        get_str(&t, CONTAINER_IMAGE_NAME),
        "example.invalid/fixtures/hello-index"
    );
    assert_eq!(tags(&t), Some(&AttrValue::StrList(vec!["v1".into()])));
    assert_eq!(
        get_str(&t, CONTAINERD_TRANSFER_SOURCE_TYPE),
        "containerd.types.transfer.ImageImportStream"
    );
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_DESTINATION_TYPE), IMAGE_STORE);
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_STREAM), "import-298579545-hFI0");
    assert_eq!(
        get_str(&t, CONTAINERD_TRANSFER_PROGRESS_STREAM),
        "progress-297967108-GBRc"
    );
    assert!(get(&t, CONTAINERD_TRANSFER_SOURCE_REFERENCE).is_none(), "{t:?}");
    let named = stream_entities(&t);
    assert_eq!(
        named,
        BTreeSet::from(["import-298579545-hFI0", "progress-297967108-GBRc"])
    );

    let streams = stream_calls(&schema, name);
    let opened: BTreeSet<&str> = streams.iter().map(|s| get_str(s, CONTAINERD_STREAM_ID)).collect();
    assert_eq!(
        opened, named,
        "each Streaming/Stream opens with an id the Transfer named"
    );
    for s in &streams {
        let id = get_str(s, CONTAINERD_STREAM_ID);
        assert_eq!(stream_entities(s), BTreeSet::from([id]));
    }
    // The progress stream keeps its last event only, and the image its `saved` event named;
    // the data stream has none.
    let (progress, data) = (&streams[0], &streams[1]);
    assert_eq!(
        get_str(progress, CONTAINERD_TRANSFER_PROGRESS_EVENT),
        "Completed import"
    );
    assert!(
        get(progress, CONTAINERD_TRANSFER_PROGRESS_NAME).is_none(),
        "{progress:?}"
    );
    assert_eq!(
        get_str(progress, CONTAINER_IMAGE_NAME),
        "example.invalid/fixtures/hello-index"
    );
    assert_eq!(progress.len(), 4, "{progress:?}");
    assert_eq!(data.len(), 1, "{data:?}");
}

/// A plain `ctr images import`: the names come from the archive, so the request names no
/// image; the types and streams are there.
#[test]
fn transfer_plain_import_names_no_image() {
    let schema = Schema::builtin();
    let t = call_attrs(&schema, &file("ctr-images-import"), TRANSFER);
    assert!(get(&t, CONTAINER_IMAGE_NAME).is_none(), "{t:?}");
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_DESTINATION_TYPE), IMAGE_STORE);
    let named = stream_entities(&t);
    assert_eq!(
        named,
        BTreeSet::from(["import-174238607-d23L", "progress-172982143-SR3v"])
    );
    let streams = stream_calls(&schema, "ctr-images-import");
    let opened: BTreeSet<&str> = streams.iter().map(|s| get_str(s, CONTAINERD_STREAM_ID)).collect();
    assert_eq!(opened, named);
    // The archive's name, from the progress stream's `saved` event: the correlator hands it
    // to the Transfer.
    let progress = streams
        .iter()
        .find(|s| get_str(s, CONTAINERD_STREAM_ID) == "progress-172982143-SR3v")
        .unwrap();
    assert_eq!(
        get_str(progress, CONTAINER_IMAGE_NAME),
        "example.invalid/fixtures/hello"
    );
    assert_eq!(tags(progress), Some(&AttrValue::StrList(vec!["v1".into()])));
}

/// `ctr images pull` from a registry: the reference is the image; the last progress event is
/// a layer's, with its bytes. The credentials stream (`resolver.auth_stream`) is not read, so
/// that Streaming/Stream is the one the Transfer does not name.
#[test]
fn transfer_pull_from_registry() {
    let schema = Schema::builtin();
    let t = call_attrs(&schema, &file("ctr-images-pull"), TRANSFER);
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_SOURCE_TYPE), REGISTRY);
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_DESTINATION_TYPE), IMAGE_STORE);
    assert_eq!(
        get_str(&t, CONTAINERD_TRANSFER_SOURCE_REFERENCE),
        "127.0.0.1:51775/fixtures/hello:v1"
    );
    assert_eq!(get_str(&t, CONTAINER_IMAGE_NAME), "127.0.0.1:51775/fixtures/hello");
    assert_eq!(tags(&t), Some(&AttrValue::StrList(vec!["v1".into()])));
    assert!(get(&t, CONTAINERD_TRANSFER_STREAM).is_none(), "{t:?}");
    assert_eq!(stream_entities(&t), BTreeSet::from(["progress-223725185-SPkp"]));
    assert!(!format!("{t:?}").contains("creds-"), "{t:?}");

    let streams = stream_calls(&schema, "ctr-images-pull");
    let ids: Vec<&str> = streams.iter().map(|s| get_str(s, CONTAINERD_STREAM_ID)).collect();
    assert_eq!(ids, ["progress-223725185-SPkp", "creds-224704849-a4xS"]);
    let progress = &streams[0];
    assert_eq!(get_str(progress, CONTAINERD_TRANSFER_PROGRESS_EVENT), "complete");
    assert_eq!(
        get_str(progress, CONTAINERD_TRANSFER_PROGRESS_NAME),
        "layer-sha256:84eb33a59a47c7d7f6982bbd635bf84467b0926868f113a2104fbe4d272ccabb"
    );
    assert_eq!(get_int(progress, CONTAINERD_TRANSFER_PROGRESS_BYTES), 140);
    assert_eq!(get_int(progress, CONTAINERD_TRANSFER_PROGRESS_TOTAL), 140);
    assert_eq!(
        get_str(progress, CONTAINER_IMAGE_NAME),
        "127.0.0.1:51775/fixtures/hello"
    );
    assert_eq!(progress.len(), 7, "{progress:?}");
}

/// `ctr images push`: the local image is the image, the registry reference the destination.
#[test]
fn transfer_push_to_registry() {
    let schema = Schema::builtin();
    let t = call_attrs(&schema, &file("ctr-images-push"), TRANSFER);
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_SOURCE_TYPE), IMAGE_STORE);
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_DESTINATION_TYPE), REGISTRY);
    assert_eq!(get_str(&t, CONTAINER_IMAGE_NAME), "example.invalid/fixtures/hello");
    assert_eq!(tags(&t), Some(&AttrValue::StrList(vec!["v1".into()])));
    assert_eq!(
        get_str(&t, CONTAINERD_TRANSFER_DESTINATION_REFERENCE),
        "127.0.0.1:51775/fixtures/hello:v1"
    );
    assert_eq!(stream_entities(&t), BTreeSet::from(["progress-126384018-WqKJ"]));
    let streams = stream_calls(&schema, "ctr-images-push");
    assert_eq!(get_str(&streams[0], CONTAINERD_STREAM_ID), "progress-126384018-WqKJ");
    assert_eq!(
        get_str(&streams[0], CONTAINERD_TRANSFER_PROGRESS_NAME),
        "config-sha256:499014dea7858a45c68dc6d9af52c253205c6e8f34e98f3c606b1e9d8e90a6a5"
    );
}

/// `ctr images export`: the image store to an export stream; the image name is only in
/// `extra_references`, a list, so not read. The data stream's chunks are responses, and no
/// rule wants them decoded.
#[test]
fn transfer_export_to_stream() {
    let schema = Schema::builtin();
    let name = "ctr-images-export";
    let t = call_attrs(&schema, &file(name), TRANSFER);
    assert_eq!(get_str(&t, CONTAINERD_TRANSFER_SOURCE_TYPE), IMAGE_STORE);
    assert_eq!(
        get_str(&t, CONTAINERD_TRANSFER_DESTINATION_TYPE),
        "containerd.types.transfer.ImageExportStream"
    );
    assert!(get(&t, CONTAINER_IMAGE_NAME).is_none(), "{t:?}");
    assert_eq!(
        stream_entities(&t),
        BTreeSet::from(["export-337642823-nFC8", "progress-336781410-5IHP"])
    );
    let streams = stream_calls(&schema, name);
    let data = &streams[1];
    assert_eq!(get_str(data, CONTAINERD_STREAM_ID), "export-337642823-nFC8");
    assert_eq!(data.len(), 1, "{data:?}");
    let msgs = capture_messages(&file(name));
    let data_stream = msgs.iter().filter(|m| m.path == STREAM).map(|m| m.stream).max();
    let chunks = msgs
        .iter()
        .filter(|m| Some(m.stream) == data_stream && m.side == Side::Response)
        .filter(|m| rules::any_type_url(&m.payload) == Some("containerd.types.transfer.Data"))
        .count();
    assert_eq!(chunks, 22);
    assert_eq!(
        get_str(&streams[0], CONTAINERD_TRANSFER_PROGRESS_EVENT),
        "Completed export"
    );
}

/// An Any packing one type.
fn any(type_url: &str, value: Vec<u8>) -> Vec<u8> {
    let schema = Schema::builtin();
    let mut a = DynamicMessage::new(schema.message(any::ANY).expect("Any"));
    a.set_field_by_name("type_url", Value::String(type_url.into()));
    a.set_field_by_name("value", Value::Bytes(value.into()));
    a.encode_to_vec()
}

fn progress(event: &str, name: &str, done: i64, total: i64) -> Vec<u8> {
    let schema = Schema::builtin();
    let mut p = DynamicMessage::new(schema.message(PROGRESS).expect("Progress"));
    p.set_field_by_name("event", Value::String(event.into()));
    p.set_field_by_name("name", Value::String(name.into()));
    p.set_field_by_name("progress", Value::I64(done));
    p.set_field_by_name("total", Value::I64(total));
    any(PROGRESS, p.encode_to_vec())
}

/// Rules on a message that is itself an Any: the type guard reads the URL off the wire (with
/// or without a host prefix), so a data chunk whose value does not even decode is no error;
/// `latest` rules keep one event's fields in a bounded set of attributes.
#[test]
fn any_root_rules_type_guard_and_latest() {
    let schema = Schema::builtin();
    let method = schema.method(STREAM).expect("Streaming/Stream");
    assert!(wants_payload(&method, Side::Request) && wants_payload(&method, Side::Response));
    let mut init = DynamicMessage::new(schema.message(STREAM_INIT).expect("StreamInit"));
    init.set_field_by_name("id", Value::String("s-1".into()));
    for url in [STREAM_INIT.to_owned(), format!("type.googleapis.com/{STREAM_INIT}")] {
        let mut out = Vec::new();
        extract(
            &schema,
            &method,
            Side::Request,
            &any(&url, init.encode_to_vec()),
            &mut out,
        )
        .expect("init");
        assert_eq!(get_str(&out, CONTAINERD_STREAM_ID), "s-1", "{url}");
        assert!(rules_satisfied(&method, Side::Request, &out));
    }
    let garbage = any("containerd.types.transfer.Data", vec![0x0a, 0xff, 0x01]);
    let mut out = Vec::new();
    extract(&schema, &method, Side::Request, &garbage, &mut out).expect("a data chunk is not decoded");
    extract(&schema, &method, Side::Response, &garbage, &mut out).expect("a data chunk is not decoded");
    assert!(out.is_empty(), "{out:?}");

    let mut out = vec![Attr::str(CONTAINERD_STREAM_ID, "s-1")];
    for i in 0..1000 {
        let msg = progress("downloading", &format!("layer-{i}"), i, 1000);
        extract(&schema, &method, Side::Response, &msg, &mut out).expect("progress");
        assert!(out.len() <= 5, "{out:?}");
        assert!(!rules_satisfied(&method, Side::Response, &out));
    }
    assert_eq!(get_str(&out, CONTAINERD_TRANSFER_PROGRESS_NAME), "layer-999");
    assert_eq!(get_int(&out, CONTAINERD_TRANSFER_PROGRESS_BYTES), 999);
    // The last event has no name and no bytes: nothing of the earlier events is left.
    extract(
        &schema,
        &method,
        Side::Response,
        &progress("Completed pull", "", 0, 0),
        &mut out,
    )
    .expect("done");
    assert_eq!(get_str(&out, CONTAINERD_TRANSFER_PROGRESS_EVENT), "Completed pull");
    assert_eq!(out.len(), 2, "{out:?}");
    // An ack (google.protobuf.Empty) is not a progress event: it changes nothing.
    extract(
        &schema,
        &method,
        Side::Response,
        &any("google.protobuf.Empty", Vec::new()),
        &mut out,
    )
    .expect("ack");
    assert_eq!(out.len(), 2, "{out:?}");
}

/// An Any packing an Any packing an Any... (a crafted Transfer source, 200 000 deep) is not
/// followed: no stack overflow, and no attribute from inside it.
#[test]
fn nested_any_is_not_followed() {
    const URL: &[u8] = b"google.protobuf.Any";
    fn varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let registry = {
        let schema = Schema::builtin();
        let mut r = DynamicMessage::new(schema.message(REGISTRY).expect("type"));
        r.set_field_by_name("reference", Value::String("deep.example/img:1".into()));
        any(REGISTRY, r.encode_to_vec())
    };
    // Sizes from the inside out, then the bytes from the outside in (no quadratic copying).
    let depth = 200_000;
    let mut sizes = vec![registry.len()];
    for _ in 0..depth {
        let inner = *sizes.last().expect("size");
        let mut len = Vec::new();
        varint(&mut len, inner);
        sizes.push(2 + URL.len() + 1 + len.len() + inner);
    }
    let mut payload = vec![0x0a];
    varint(&mut payload, sizes[depth]);
    for level in (1..=depth).rev() {
        payload.extend([0x0a, URL.len() as u8]);
        payload.extend(URL);
        payload.push(0x12);
        varint(&mut payload, sizes[level - 1]);
    }
    payload.extend(&registry);
    let schema = Schema::builtin();
    let method = schema.method(TRANSFER).expect("Transfer");
    let mut out = Vec::new();
    extract(&schema, &method, Side::Request, &payload, &mut out).expect("extract");
    assert_eq!(get_str(&out, CONTAINERD_TRANSFER_SOURCE_TYPE), any::ANY);
    assert_eq!(out.len(), 1, "{out:?}");
    // One level is read: the registry packed straight into the source.
    let mut direct = vec![0x0a];
    varint(&mut direct, registry.len());
    direct.extend(&registry);
    let mut out = Vec::new();
    extract(&schema, &method, Side::Request, &direct, &mut out).expect("extract");
    assert_eq!(
        get_str(&out, CONTAINERD_TRANSFER_SOURCE_REFERENCE),
        "deep.example/img:1"
    );
}

/// The rule tables' new features are used as documented: type guards name types the pool
/// has, on methods whose message is an Any, and `latest` rules are on responses only.
#[test]
fn type_guards_and_latest_rules_are_well_formed() {
    let schema = Schema::builtin();
    for rule in containerd::RULES.iter().chain(cri::RULES) {
        if let Some(t) = rule.any_type {
            assert!(schema.message(t).is_some(), "{rule:?}");
        }
        assert!(!rule.latest || rule.side == Side::Response, "{rule:?}");
    }
    let stream = schema.method(STREAM).expect("Streaming/Stream");
    assert_eq!(stream.rules.len(), 6);
    assert_eq!(schema.method(TRANSFER).expect("Transfer").rules.len(), 10);
}

#[test]
fn sandbox_and_container_sandbox_ids_are_pod_sandbox_entities() {
    let schema = Schema::builtin();
    let mut runtime = DynamicMessage::new(schema.message("containerd.types.Sandbox.Runtime").expect("type"));
    runtime.set_field_by_name("name", Value::String("io.containerd.runc.v2".into()));
    let mut sandbox = DynamicMessage::new(schema.message("containerd.types.Sandbox").expect("type"));
    sandbox.set_field_by_name("sandbox_id", Value::String("sb-1".into()));
    sandbox.set_field_by_name("sandboxer", Value::String("podsandbox".into()));
    sandbox.set_field_by_name("runtime", Value::Message(runtime));
    let req_desc = schema
        .message("containerd.services.sandbox.v1.StoreCreateRequest")
        .expect("type");
    let mut req = DynamicMessage::new(req_desc);
    req.set_field_by_name("sandbox", Value::Message(sandbox));
    let method = schema
        .method("/containerd.services.sandbox.v1.Store/Create")
        .expect("Store/Create");
    let mut out = Vec::new();
    extract(&schema, &method, Side::Request, &req.encode_to_vec(), &mut out).expect("extract");
    assert_eq!(get_str(&out, CONTAINERD_SANDBOX_ID), "sb-1");
    assert_eq!(get_str(&out, CONTAINERD_SANDBOXER), "podsandbox");
    assert_eq!(get_str(&out, CONTAINERD_RUNTIME_NAME), "io.containerd.runc.v2");
    assert_eq!(
        entity_ids(&out).collect::<Vec<_>>(),
        vec![(EntityKind::PodSandbox, "sb-1")]
    );

    let stop = schema
        .method("/containerd.services.sandbox.v1.Controller/Stop")
        .expect("Controller/Stop");
    let mut req = DynamicMessage::new(stop.input.clone());
    req.set_field_by_name("sandbox_id", Value::String("sb-1".into()));
    let mut out = Vec::new();
    extract(&schema, &stop, Side::Request, &req.encode_to_vec(), &mut out).expect("extract");
    assert_eq!(get_str(&out, CONTAINERD_SANDBOX_ID), "sb-1");

    let mut container = DynamicMessage::new(
        schema
            .message("containerd.services.containers.v1.Container")
            .expect("type"),
    );
    container.set_field_by_name("id", Value::String("c-1".into()));
    container.set_field_by_name("sandbox", Value::String("sb-1".into()));
    let create = schema
        .method("/containerd.services.containers.v1.Containers/Create")
        .expect("Containers/Create");
    let mut req = DynamicMessage::new(create.input.clone());
    req.set_field_by_name("container", Value::Message(container));
    let mut out = Vec::new();
    extract(&schema, &create, Side::Request, &req.encode_to_vec(), &mut out).expect("extract");
    assert_eq!(get_str(&out, CONTAINER_ID), "c-1");
    assert_eq!(
        entity_ids(&out).collect::<Vec<_>>(),
        vec![(EntityKind::Container, "c-1"), (EntityKind::PodSandbox, "sb-1")]
    );
}

#[test]
fn stream_ids_are_stream_entities() {
    let attrs = vec![
        Attr::str(
            CONTAINERD_TRANSFER_SOURCE_TYPE,
            "containerd.types.transfer.ImageImportStream",
        ),
        Attr::str(CONTAINERD_TRANSFER_STREAM, "import-1"),
        Attr::str(CONTAINERD_TRANSFER_PROGRESS_STREAM, "progress-1"),
        Attr::str(CONTAINERD_STREAM_ID, "import-1"),
        Attr::str(CONTAINERD_TRANSFER_PROGRESS_NAME, "layer-1"),
    ];
    assert_eq!(
        entity_ids(&attrs).collect::<Vec<_>>(),
        vec![
            (EntityKind::Stream, "import-1"),
            (EntityKind::Stream, "progress-1"),
            (EntityKind::Stream, "import-1")
        ]
    );
}

/// containerd 2.1's CRI, as kubelet 1.33+ drives it: UpdatePodSandboxResources names the
/// sandbox that RunPodSandbox made (and fails UNIMPLEMENTED: 2.1 implements cri-api 0.32).
#[test]
fn cri_update_pod_sandbox_resources_names_the_sandbox() {
    let schema = Schema::builtin();
    let cri = file("cri-pod-lifecycle");
    let run = call_attrs(&schema, &cri, "/runtime.v1.RuntimeService/RunPodSandbox");
    let sandbox = get_str(&run, CRI_POD_SANDBOX_ID);
    assert_eq!(
        sandbox,
        "155e673571ca7acf01e198231c08bd61f198a2e62f40c6f5158a8aec6ca7dcb8"
    );
    let update = first_call(&cri, "/runtime.v1.RuntimeService/UpdatePodSandboxResources");
    assert_eq!(update.len(), 1, "request only: the call failed");
    let attrs = call_attrs(&schema, &cri, "/runtime.v1.RuntimeService/UpdatePodSandboxResources");
    assert_eq!(get_str(&attrs, CRI_POD_SANDBOX_ID), sandbox);
    assert_eq!(
        entity_ids(&attrs).collect::<Vec<_>>(),
        vec![(EntityKind::PodSandbox, sandbox)]
    );
    assert!(
        schema
            .method("/runtime.v1alpha2.RuntimeService/UpdatePodSandboxResources")
            .is_none(),
        "v1alpha2 never had it"
    );
    // The container calls of that pod still carry its ids on containerd 2.1.
    let create = call_attrs(&schema, &cri, "/runtime.v1.RuntimeService/CreateContainer");
    assert_eq!(get_str(&create, CRI_POD_SANDBOX_ID), sandbox);
    assert_eq!(get_str(&create, CONTAINER_IMAGE_NAME), "registry.k8s.io/pause");
    let resources = call_attrs(&schema, &cri, "/runtime.v1.RuntimeService/UpdateContainerResources");
    assert_eq!(get_str(&resources, CONTAINER_ID), get_str(&create, CONTAINER_ID));
}

/// The layer breakdown of each Streaming/Stream call of a capture: its Response messages
/// replayed through the rules and `schema::pull`'s fold as `observe::grpc` does (message `i`
/// stamped at `i` ms), then the spans and the totals.
fn stream_breakdowns(schema: &Schema, name: &str) -> Vec<(Vec<crate::trace::call::ChildSpan>, Vec<Attr>)> {
    let msgs = capture_messages(&file(name));
    let streams: BTreeSet<u32> = msgs.iter().filter(|m| m.path == STREAM).map(|m| m.stream).collect();
    let t0 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let at = |i: usize| t0 + std::time::Duration::from_millis(i as u64);
    let method = schema.method(STREAM).expect("Streaming/Stream");
    let mut out = Vec::new();
    for s in streams {
        let mut attrs = Vec::new();
        let mut fold = pull::PullProgress::default();
        let mine: Vec<&GrpcMessage> = msgs.iter().filter(|m| m.stream == s).collect();
        for (i, m) in mine.iter().enumerate() {
            extract(schema, &method, m.side, &m.payload, &mut attrs).expect("extract");
            let progress = rules::any_type_url(&m.payload).map(any::type_name) == Some(PROGRESS);
            if m.side == Side::Response && progress {
                fold.containerd_attrs(&attrs, at(i));
            }
        }
        let mut totals = Vec::new();
        let spans = fold.finish(t0, at(mine.len()), &mut totals);
        out.push((spans, totals));
    }
    out
}

/// `ctr images pull` on containerd 2.1: the progress stream's one layer (`layer-sha256:84eb...`,
/// 140 bytes) is a `layer download` span with the blob's digest and size; the manifest and the
/// config are no layers; containerd reports no per-layer unpack, so there is no extract span.
/// The totals go on the stream's span; the credentials stream has none.
#[test]
fn transfer_pull_progress_is_a_download_span_per_layer() {
    let schema = Schema::builtin();
    let streams = stream_breakdowns(&schema, "ctr-images-pull");
    assert_eq!(streams.len(), 2);
    let (spans, totals) = &streams[0];
    assert_eq!(spans.len(), 1, "{spans:?}");
    let layer = &spans[0];
    assert_eq!(layer.name, pull::LAYER_DOWNLOAD);
    assert_eq!(
        get_str(&layer.attributes, IMAGE_LAYER_ID),
        "sha256:84eb33a59a47c7d7f6982bbd635bf84467b0926868f113a2104fbe4d272ccabb"
    );
    assert_eq!(get_int(&layer.attributes, IMAGE_LAYER_BYTES), 140);
    // From its `waiting` (message 7 of the stream, index 7 with the init and its ack) to its
    // `complete` (the last, index 12), which containerd sent after `Completed pull`.
    let ms = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1000;
    assert_eq!((ms(layer.start), ms(layer.end)), (7, 12), "{layer:?}");
    assert_eq!(get_str(totals, IMAGE_PROGRESS), "layers");
    assert_eq!(get_int(totals, IMAGE_LAYERS), 1);
    assert_eq!(get_int(totals, IMAGE_BYTES), 140);
    // No `downloading` event (the blob came within one tick): no time to first byte.
    assert!(get(totals, IMAGE_FIRST_BYTE_MS).is_none(), "{totals:?}");
    assert!(streams[1].0.is_empty() && streams[1].1.is_empty(), "{:?}", streams[1]);
}

/// A push's and an import's progress streams name blobs too, but are no pulls: no spans.
#[test]
fn transfer_push_and_import_progress_make_no_layer_spans() {
    let schema = Schema::builtin();
    for name in ["ctr-images-push", "ctr-images-import", "ctr-images-export"] {
        for (spans, totals) in stream_breakdowns(&schema, name) {
            assert!(spans.is_empty() && totals.is_empty(), "{name}: {spans:?} {totals:?}");
        }
    }
}
