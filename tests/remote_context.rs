//! Trace contexts the daemons send, end to end on the generations that send them (README
//! "Remote trace context"): dockerd 26 sends an unexported `traceparent` on every containerd
//! call; dockerd 28 sends one only with its own tracing on, and then exports its spans to the
//! same collector as runtime-tap. In both, one `docker start` must be one trace with the
//! containerd calls under `POST /containers/{id}/start`, and no exported span may name a
//! parent the collector never got, unless a client sent it and runtime-tap saw no parent.
//!
//! These tests pick their generation themselves (trixie, sid), whatever `RTAP_GENERATION`
//! says, and run one at a time: each starts its own private daemons.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use runtime_tap::bed::{Bed, Generation};
use serde_json::json;
use support::cri::GrpcClient;
use support::otlp::{OtlpReceiver, ReceivedSpan, Val};
use support::{Tap, free_port};

const CONTAINERS: &str = "containerd.services.containers.v1.Containers";
const TASKS: &str = "containerd.services.tasks.v1.Tasks";
/// The service name dockerd's own spans are exported under (its `OTEL_SERVICE_NAME`), apart
/// from runtime-tap's `dockerd` intercept.
const DOCKERD_OWN: &str = "dockerd-own";
/// The intercept name (so the service name) of the dockerd intercept with propagation on.
const PROPAGATING: &str = "dockerd-prop";

struct Node {
    rt: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
    bed: Bed,
    _tap: Tap,
    containerd: PathBuf,
    /// runtime-tap's dockerd intercept without propagation.
    docker: PathBuf,
    /// A second dockerd intercept, with `propagate_context = true`.
    docker_propagating: PathBuf,
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bed of `generation` with runtime-tap in front of containerd and (twice) dockerd, all
/// exporting to one receiver; `dockerd_env` is dockerd's environment (its own tracing).
fn node(label: &str, generation: Generation, dockerd_tracing: bool) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = rt.block_on(OtlpReceiver::start());
    let mut bed = Bed::with_generation(label, generation).expect("test bed");
    let versions = bed.versions().clone();
    bed.start_containerd()
        .unwrap_or_else(|e| panic!("containerd ({versions}): {e:#}"));
    let tap_dir = bed.dir.join("tap");
    let (containerd, docker, docker_propagating) = (
        tap_dir.join("containerd.sock"),
        tap_dir.join("docker.sock"),
        tap_dir.join("docker-prop.sock"),
    );
    let intercept = |name: &str, listen: &PathBuf, upstream: PathBuf, extra: &str| {
        format!(
            "[[intercept]]\nname = \"{name}\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n{extra}\n\n",
            listen.display(),
            upstream.display()
        )
    };
    let config = format!(
        "{}{}{}[admin]\nlisten = \"127.0.0.1:{}\"\n\n[relay]\ngrace_period_secs = 2\n\n\
         [export]\nendpoint = \"{}\"\n\n[sampling]\ndefault_rules = false\n",
        intercept("containerd", &containerd, bed.containerd_socket(), ""),
        intercept("dockerd", &docker, bed.docker_socket(), ""),
        intercept(
            PROPAGATING,
            &docker_propagating,
            bed.docker_socket(),
            "propagate_context = true"
        ),
        free_port(),
        receiver.endpoint(),
    );
    let tap = Tap::start(&bed.dir, &config);
    let endpoint = receiver.endpoint().to_string();
    let env: Vec<(&str, &str)> = if dockerd_tracing {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", DOCKERD_OWN),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]
    } else {
        Vec::new()
    };
    bed.start_dockerd_env(&containerd, &env)
        .unwrap_or_else(|e| panic!("dockerd through the containerd intercept ({versions}): {e:#}"));
    bed.make_images(&docker)
        .unwrap_or_else(|e| panic!("images through the proxy ({versions}): {e:#}"));
    eprintln!("remote_context: {} ({versions})", generation);
    Node {
        rt,
        receiver,
        bed,
        _tap: tap,
        containerd,
        docker,
        docker_propagating,
    }
}

fn str_attr<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    match span.attributes.get(key) {
        Some(Val::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn docker_ok(n: &Node, socket: &Path, args: &[&str]) -> String {
    let out = n.bed.docker(socket).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} ({}): {}",
        n.bed.versions(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_spans(n: &Node, what: &str, pred: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
    eprintln!("remote_context: waiting for {what} ({})", n.bed.versions());
    n.receiver.wait_spans(what, pred)
}

/// runtime-tap's start span for container `id` and its three containerd children, once all
/// have arrived.
fn the_start<'a>(spans: &'a [ReceivedSpan], id: &str) -> Option<(&'a ReceivedSpan, Vec<&'a ReceivedSpan>)> {
    let start = spans.iter().find(|s| {
        (s.service == "dockerd" || s.service == PROPAGATING)
            && s.name == "POST /containers/{id}/start"
            && str_attr(s, "container.id") == Some(id)
    })?;
    let kids: Vec<&ReceivedSpan> = [
        format!("{CONTAINERS}/Create"),
        format!("{TASKS}/Create"),
        format!("{TASKS}/Start"),
    ]
    .iter()
    .filter_map(|name| {
        spans.iter().find(|k| {
            &k.name == name
                && k.service == "containerd"
                && str_attr(k, "container.id") == Some(id)
                && k.parent_span_id == start.span_id
        })
    })
    .collect();
    (kids.len() == 3).then_some((start, kids))
}

/// Create and start a container through `socket`; the start span and its three children.
fn docker_start(n: &Node, socket: &Path, name: &str) -> (ReceivedSpan, Vec<ReceivedSpan>, Vec<ReceivedSpan>) {
    let id = docker_ok(
        n,
        socket,
        &["create", "--network", "none", "--name", name, "bb:latest", "true"],
    );
    docker_ok(n, socket, &["start", name]);
    let spans = wait_spans(n, &format!("docker start {name}"), |sp| the_start(sp, &id).is_some());
    let (start, kids) = the_start(&spans, &id).unwrap();
    let (start, kids) = (start.clone(), kids.into_iter().cloned().collect());
    docker_ok(n, socket, &["rm", "-f", name]);
    (start, kids, spans)
}

/// Every span of `trace` names a parent that the collector got, or none.
fn no_missing_parent(spans: &[ReceivedSpan], trace: &str) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in spans
        .iter()
        .filter(|s| s.trace_id == trace && !s.parent_span_id.is_empty())
    {
        assert!(
            ids.contains(s.parent_span_id.as_str()),
            "{}:{} names parent {} that nobody exported",
            s.service,
            s.name,
            s.parent_span_id
        );
    }
}

#[test]
fn dockerd_26_contexts_never_split_a_docker_start() {
    let _serial = serial();
    let n = node("rc26", Generation::Trixie, false);
    let (start, kids, spans) = docker_start(&n, &n.docker, "rc26-start");
    assert!(start.parent_span_id.is_empty(), "the docker CLI sent no context");
    for k in &kids {
        assert_eq!(k.trace_id, start.trace_id, "{} in the start's trace", k.name);
        assert_eq!(str_attr(k, "runtime_tap.link"), Some("entity"));
        // dockerd 26 sent a context of another trace, whose span nobody exports: kept as a link.
        assert_eq!(
            str_attr(k, "runtime_tap.remote_parent"),
            Some("replaced"),
            "dockerd 26 sends a traceparent on every containerd call ({})",
            n.bed.versions()
        );
        assert_eq!(k.links.len(), 1, "{}", k.name);
        assert_ne!(k.links[0].trace_id, start.trace_id);
        assert_eq!(
            k.links[0].attributes.get("runtime_tap.link"),
            Some(&Val::Str("traceparent".into()))
        );
    }
    no_missing_parent(&spans, &start.trace_id);
    // With propagation on dockerd's intercept, dockerd 26 adopts runtime-tap's context on
    // some calls (measured: Containers/Create names a span of runtime-tap's trace, Tasks/* still
    // fresh traces), spans it never exports: following them would orphan the call.
    let (start, kids, spans) = docker_start(&n, &n.docker_propagating, "rc26-prop");
    let mut adopted = 0;
    for k in &kids {
        assert_eq!(k.trace_id, start.trace_id);
        assert_eq!(k.parent_span_id, start.span_id, "{}", k.name);
        match str_attr(k, "runtime_tap.remote_parent") {
            Some("confirmed") => {
                adopted += 1;
                assert_eq!(k.links[0].trace_id, start.trace_id);
                assert!(
                    !spans.iter().any(|s| s.span_id == k.links[0].span_id),
                    "dockerd 26 exported the span {} named",
                    k.name
                );
            }
            Some("replaced") => assert_ne!(k.links[0].trace_id, start.trace_id),
            other => panic!("{}: runtime_tap.remote_parent {other:?}", k.name),
        }
    }
    assert!(
        adopted > 0,
        "dockerd adopted runtime-tap's context ({})",
        n.bed.versions()
    );
    no_missing_parent(&spans, &start.trace_id);
    let counts = n.receiver.counts();
    assert!(
        counts.keys().all(|(service, _)| service != DOCKERD_OWN),
        "dockerd exported nothing of its own"
    );
}

#[test]
fn dockerd_28_with_its_own_tracing_and_runtime_tap_make_whole_traces() {
    let _serial = serial();
    let n = node("rc28", Generation::Sid, true);
    // Propagation off: runtime-tap's trace is whole; dockerd's spans are a trace of their own.
    let (start, kids, _) = docker_start(&n, &n.docker, "rc28-start");
    let spans = wait_spans(&n, "dockerd's own spans", |sp| {
        kids.iter().all(|k| sp.iter().any(|s| s.span_id == k.links[0].span_id))
    });
    for k in &kids {
        assert_eq!(k.trace_id, start.trace_id);
        assert_eq!(str_attr(k, "runtime_tap.remote_parent"), Some("replaced"), "{}", k.name);
        let own = spans.iter().find(|s| s.span_id == k.links[0].span_id).unwrap();
        assert_eq!(own.service, DOCKERD_OWN, "the link names dockerd's client span");
        assert_ne!(own.trace_id, start.trace_id);
    }
    no_missing_parent(&spans, &start.trace_id);
    // Propagation on: one trace holds runtime-tap's and dockerd's spans.
    let (start, kids, _) = docker_start(&n, &n.docker_propagating, "rc28-prop");
    let spans = wait_spans(&n, "dockerd's own spans in runtime-tap's trace", |sp| {
        sp.iter()
            .any(|s| s.service == DOCKERD_OWN && s.trace_id == start.trace_id && s.parent_span_id == start.span_id)
            && kids.iter().all(|k| sp.iter().any(|s| s.span_id == k.links[0].span_id))
    });
    for k in &kids {
        assert_eq!(k.trace_id, start.trace_id);
        assert_eq!(k.parent_span_id, start.span_id);
        assert_eq!(
            str_attr(k, "runtime_tap.remote_parent"),
            Some("confirmed"),
            "{}",
            k.name
        );
    }
    let own: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == DOCKERD_OWN && s.trace_id == start.trace_id)
        .collect();
    assert!(
        own.iter()
            .any(|s| s.name.starts_with("POST /containers/") && s.parent_span_id == start.span_id),
        "dockerd's server span under runtime-tap's: {:?}",
        own.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    no_missing_parent(&spans, &start.trace_id);
}

#[test]
fn kubelet_context_on_cri_calls_is_followed_and_no_pod_root_is_made() {
    let _serial = serial();
    let n = node("rckub", Generation::Sid, false);
    n.bed
        .import_cri_images(&n.containerd, &n.bed.dir.join("images.tar"))
        .expect("CRI images");
    let sock = n.containerd.clone();
    let log_dir = n.bed.dir.join("pods");
    std::fs::create_dir_all(&log_dir).unwrap();
    let tp = "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01";
    let (sandbox, container) = n.rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        // With kubelet's context on every call, then a second pod without one.
        let pod = start_pod(&mut c, "rc-pod", &log_dir, &[("traceparent", tp)]).await;
        start_pod(&mut c, "rc-pod-plain", &log_dir, &[]).await;
        pod
    });
    let spans = wait_spans(&n, "both pods' CRI calls", |sp| {
        sp.iter()
            .filter(|s| s.name == "runtime.v1.RuntimeService/RemovePodSandbox")
            .count()
            == 2
    });
    let pod_calls: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            ["RunPodSandbox", "CreateContainer", "StartContainer"]
                .iter()
                .any(|m| s.name == format!("runtime.v1.RuntimeService/{m}"))
        })
        .filter(|s| {
            str_attr(s, "cri.pod_sandbox.id") == Some(sandbox.as_str())
                || str_attr(s, "container.id") == Some(container.as_str())
        })
        .collect();
    assert_eq!(pod_calls.len(), 3);
    for s in &pod_calls {
        assert_eq!(s.trace_id, "5bf92f3577b34da6a3ce929d0e0e4736", "{}", s.name);
        assert_eq!(s.parent_span_id, "10f067aa0ba902b7");
        assert_eq!(str_attr(s, "runtime_tap.remote_parent"), Some("followed"));
    }
    assert!(
        pod_calls
            .iter()
            .any(|s| s.name.ends_with("/RunPodSandbox") && str_attr(s, "cri.pod_sandbox.id") == Some(sandbox.as_str()))
    );
    // Pod roots leave in the order their quiet periods end: once the plain pod's root is
    // here, the first pod's would have been too.
    let spans = wait_spans(&n, "the plain pod's root", |sp| {
        sp.iter()
            .any(|s| s.name == "pod start" && str_attr(s, "k8s.pod.name") == Some("rc-pod-plain"))
    });
    assert!(
        !spans
            .iter()
            .any(|s| s.name == "pod start" && str_attr(s, "k8s.pod.name") == Some("rc-pod")),
        "kubelet's own trace wins: no pod start root"
    );
}

/// RunPodSandbox, CreateContainer and StartContainer of pod `name` as kubelet makes them,
/// each with `headers`, then stop and remove; the sandbox and container ids.
async fn start_pod(
    c: &mut GrpcClient,
    name: &str,
    log_dir: &std::path::Path,
    headers: &[(&str, &str)],
) -> (String, String) {
    let rs = "runtime.v1.RuntimeService";
    let config = json!({
        "metadata": {"name": name, "namespace": "rc-ns", "uid": format!("uid-{name}"), "attempt": 0},
        "log_directory": log_dir,
        "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
    });
    let run = c
        .unary(
            &format!("{rs}/RunPodSandbox"),
            json!({"config": config.clone()}),
            headers,
        )
        .await
        .unwrap();
    let sandbox = run["podSandboxId"].as_str().unwrap().to_string();
    let create = c
        .unary(
            &format!("{rs}/CreateContainer"),
            json!({"pod_sandbox_id": sandbox, "config": {"metadata": {"name": "c"}, "image": {"image": "registry.k8s.io/pause:3.6"}, "command": ["/bin/true"], "log_path": "c.log"}, "sandbox_config": config}),
            headers,
        )
        .await
        .unwrap();
    let id = create["containerId"].as_str().unwrap().to_string();
    c.unary(&format!("{rs}/StartContainer"), json!({"container_id": id}), headers)
        .await
        .unwrap();
    c.unary(&format!("{rs}/StopPodSandbox"), json!({"pod_sandbox_id": sandbox}), &[])
        .await
        .unwrap();
    c.unary(
        &format!("{rs}/RemovePodSandbox"),
        json!({"pod_sandbox_id": sandbox}),
        &[],
    )
    .await
    .unwrap();
    (sandbox, id)
}
