//! What runtime-tap exports, read back by an OTLP receiver built from the official protos,
//! while real clients (ctr, a CRI client built from proto/, dockerd, the docker CLI) talk to
//! the real daemons through it.

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use runtime_tap::bed::{Bed, Generation};
use serde_json::json;
use support::cri::GrpcClient;
use support::otlp::{KIND_INTERNAL, KIND_SERVER, OtlpReceiver, ReceivedSpan, STATUS_ERROR, STATUS_UNSET, Val};
use support::stack::Stack;

struct Setup {
    rt: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
    stack: Stack,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let receiver = rt.block_on(OtlpReceiver::start());
        let stack = Stack::start_custom("spans", "", |bed| {
            format!(
                "[export]\nendpoint = \"{}\"\nfile = \"{}\"\n\n[sampling]\ndefault_rules = false\n",
                receiver.endpoint(),
                span_file(bed).display()
            )
        });
        Setup { rt, receiver, stack }
    })
}

/// In the bed's directory, so it goes with the bed.
fn span_file(bed: &Bed) -> std::path::PathBuf {
    bed.dir.join("spans.jsonl")
}

fn wait_spans(s: &Setup, what: &str, pred: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
    s.receiver.wait_spans(what, pred)
}

fn str_attr<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    match span.attributes.get(key) {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ctr(s: &Setup, ns: &str, args: &[&str]) -> Output {
    s.stack
        .bed
        .ctr(&s.stack.containerd)
        .arg("-n")
        .arg(ns)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn with_ns<'a>(spans: &'a [ReceivedSpan], ns: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && str_attr(s, "containerd.namespace") == Some(ns))
        .collect()
}

const CONTAINERS: &str = "containerd.services.containers.v1.Containers";
const TASKS: &str = "containerd.services.tasks.v1.Tasks";

#[test]
fn ctr_calls_become_server_spans_with_names_status_namespace_and_ids() {
    let s = setup();
    let ns = "rt-spans-ctr";
    assert!(ctr(s, ns, &["version"]).status.success());
    let import = ctr(s, ns, &["images", "import", s.stack.images_tar.to_str().unwrap()]);
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let namespaces = ctr(s, ns, &["namespaces", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&namespaces.stdout).lines().any(|l| l == ns),
        "{}",
        String::from_utf8_lossy(&namespaces.stderr)
    );
    assert!(
        ctr(
            s,
            ns,
            &[
                "containers",
                "create",
                "docker.io/library/bb:latest",
                "c-one",
                "/bin/true"
            ]
        )
        .status
        .success()
    );
    assert!(ctr(s, ns, &["containers", "ls"]).status.success());
    // The same id again fails at Snapshots/Prepare with ALREADY_EXISTS on containerd 1.6.
    let dup = ctr(
        s,
        ns,
        &[
            "containers",
            "create",
            "docker.io/library/bb:latest",
            "c-one",
            "/bin/true",
        ],
    );
    assert!(!dup.status.success());
    assert!(ctr(s, ns, &["containers", "delete", "c-one"]).status.success());
    let out = ctr(
        s,
        ns,
        &[
            "run",
            "--rm",
            "docker.io/library/bb:latest",
            "c-run",
            "/bin/echo",
            "ctr-hi",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ctr-hi\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spans = wait_spans(s, "ctr run", |sp| {
        with_ns(sp, ns, &format!("{CONTAINERS}/Delete"))
            .iter()
            .any(|d| str_attr(d, "container.id") == Some("c-run"))
    });
    // Every call is a SERVER span of service containerd with the full method as name.
    let ours: Vec<_> = spans
        .iter()
        .filter(|sp| str_attr(sp, "containerd.namespace") == Some(ns))
        .collect();
    assert!(ours.len() > 20, "{}", ours.len());
    for sp in &ours {
        assert_eq!(sp.service, "containerd");
        assert_eq!(sp.kind, KIND_SERVER);
        assert_eq!(str_attr(sp, "rpc.method"), Some(sp.name.as_str()));
        assert_eq!(str_attr(sp, "rpc.system.name"), Some("grpc"));
        assert_eq!(str_attr(sp, "network.transport"), Some("unix"));
        assert_eq!(str_attr(sp, "runtime_tap.client.executable"), Some("ctr"));
        assert_eq!(str_attr(sp, "runtime_tap.server.executable"), Some("containerd"));
        assert!(sp.start_ns <= sp.end_ns);
        assert!(sp.resource.contains_key("host.name"));
    }
    // version and namespaces ls: ctr's client sends its namespace on every call.
    for (name, response_messages) in [
        ("containerd.services.version.v1.Version/Version", 1),
        ("containerd.services.namespaces.v1.Namespaces/List", 1),
    ] {
        let calls = with_ns(&spans, ns, name);
        assert_eq!(calls.len(), 1, "{name}: {calls:?}");
        assert_eq!(str_attr(calls[0], "rpc.response.status_code"), Some("OK"), "{name}");
        assert_eq!(calls[0].status_code, STATUS_UNSET, "{name}");
        assert_eq!(
            calls[0].attributes.get("runtime_tap.response.messages"),
            Some(&Val::Int(response_messages)),
            "{name}"
        );
    }
    // The import's data: Content/Write bidi streams from ctr on containerd 1.x; on 2.x the
    // Transfer service writes the content itself (Transfer/Transfer + Streaming/Stream).
    let data_calls = match s.stack.bed.generation() {
        Generation::Bookworm | Generation::Trixie => {
            with_ns(&spans, ns, "containerd.services.content.v1.Content/Write")
        }
        Generation::Sid => with_ns(&spans, ns, "containerd.services.transfer.v1.Transfer/Transfer"),
    };
    assert!(!data_calls.is_empty(), "{}", s.stack.bed.versions());
    assert!(
        data_calls
            .iter()
            .all(|w| str_attr(w, "rpc.response.status_code") == Some("OK"))
    );
    // containers create/list/delete with container.id.
    let creates = with_ns(&spans, ns, &format!("{CONTAINERS}/Create"));
    assert!(
        creates
            .iter()
            .any(|c| str_attr(c, "container.id") == Some("c-one")
                && str_attr(c, "rpc.response.status_code") == Some("OK"))
    );
    // ctr 1.6 lists with the ListStream server stream.
    let list = with_ns(&spans, ns, &format!("{CONTAINERS}/ListStream"));
    assert!(
        list.iter()
            .any(|l| matches!(l.attributes.get("runtime_tap.response.messages"), Some(Val::Int(n)) if *n >= 1)),
        "{list:?}"
    );
    // The duplicate: ALREADY_EXISTS with its message, not an error status for a server span.
    let prepare = with_ns(&spans, ns, "containerd.services.snapshots.v1.Snapshots/Prepare");
    let failed: Vec<_> = prepare
        .iter()
        .filter(|p| str_attr(p, "rpc.response.status_code") == Some("ALREADY_EXISTS"))
        .collect();
    assert_eq!(failed.len(), 1, "{prepare:?}");
    assert!(str_attr(failed[0], "runtime_tap.grpc.message").is_some_and(|m| m.contains("already exists")));
    assert_eq!(failed[0].status_code, STATUS_UNSET);
    // ctr run --rm: Tasks/Create, Start, Wait, Delete for c-run.
    for method in ["Create", "Start", "Wait", "Delete"] {
        let calls = with_ns(&spans, ns, &format!("{TASKS}/{method}"));
        assert!(
            calls.iter().any(|c| str_attr(c, "container.id") == Some("c-run")),
            "Tasks/{method}: {calls:?}"
        );
    }
    let create = with_ns(&spans, ns, &format!("{TASKS}/Create"))
        .into_iter()
        .find(|c| str_attr(c, "container.id") == Some("c-run"))
        .unwrap();
    assert!(matches!(create.attributes.get("containerd.task.pid"), Some(Val::Int(p)) if *p > 0));
    let wait = with_ns(&spans, ns, &format!("{TASKS}/Wait"))
        .into_iter()
        .find(|c| str_attr(c, "container.id") == Some("c-run"))
        .unwrap();
    assert_eq!(wait.attributes.get("containerd.task.exit_status"), Some(&Val::Int(0)));
}

#[test]
fn cri_pod_lifecycle_spans_carry_pod_and_container_attributes() {
    let s = setup();
    // The CRI plugin works in k8s.io and needs the sandbox image there (and, on 2.x, in its
    // cache, filled a moment after ctr returns).
    s.stack
        .bed
        .import_cri_images(&s.stack.containerd, &s.stack.images_tar)
        .expect("CRI images");
    let sock = s.stack.containerd.clone();
    let (sandbox, container, pull_err) = s.rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        let rs = "runtime.v1.RuntimeService";
        c.unary(&format!("{rs}/Version"), json!({}), &[]).await.unwrap();
        c.unary("runtime.v1.ImageService/ImageStatus", json!({"image": {"image": "registry.k8s.io/pause:3.6"}}), &[]).await.unwrap();
        let config = json!({
            "metadata": {"name": "span-pod", "namespace": "span-ns", "uid": "span-uid-1", "attempt": 0},
            "log_directory": "/tmp",
            "linux": {"security_context": {"namespace_options": {"network": "NODE", "pid": "CONTAINER", "ipc": "POD"}}}
        });
        let run = c.unary(&format!("{rs}/RunPodSandbox"), json!({"config": config.clone()}), &[]).await.unwrap();
        let sandbox = run["podSandboxId"].as_str().unwrap().to_string();
        let create = c
            .unary(
                &format!("{rs}/CreateContainer"),
                json!({
                    "pod_sandbox_id": sandbox,
                    "config": {
                        "metadata": {"name": "span-ctr"},
                        "image": {"image": "registry.k8s.io/pause:3.6"},
                        "command": ["/bin/echo", "hi"],
                        // `KeyValue.value` is `bytes` since cri-api 0.33 (the same wire format as the
                        // `string` before it): base64 in JSON, "span-secret-value".
                        "envs": [{"key": "DB_PASSWORD", "value": "c3Bhbi1zZWNyZXQtdmFsdWU="}],
                        "log_path": "span-ctr.log"
                    },
                    "sandbox_config": config
                }),
                &[],
            )
            .await
            .unwrap();
        let container = create["containerId"].as_str().unwrap().to_string();
        c.unary(&format!("{rs}/StartContainer"), json!({"container_id": container}), &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.unary(&format!("{rs}/ContainerStatus"), json!({"container_id": container}), &[]).await.unwrap();
        c.unary(&format!("{rs}/StopPodSandbox"), json!({"pod_sandbox_id": sandbox}), &[]).await.unwrap();
        c.unary(&format!("{rs}/RemovePodSandbox"), json!({"pod_sandbox_id": sandbox}), &[]).await.unwrap();
        let pull_err = c
            .unary(
                "runtime.v1.ImageService/PullImage",
                json!({"image": {"image": "registry.invalid/nosuch/image:1.0"}, "auth": {"username": "span-user", "password": "span-password"}}),
                &[],
            )
            .await
            .unwrap_err();
        (sandbox, container, pull_err)
    });
    assert_eq!(pull_err.code, 2, "PullImage without a registry fails with UNKNOWN");
    let spans = wait_spans(s, "CRI PullImage", |sp| {
        sp.iter().any(|x| x.name == "runtime.v1.ImageService/PullImage")
    });
    let one = |name: &str| -> &ReceivedSpan {
        let found: Vec<_> = spans
            .iter()
            .filter(|x| x.name == format!("runtime.v1.{name}"))
            .collect();
        assert!(!found.is_empty(), "{name}");
        found[found.len() - 1]
    };
    let run = one("RuntimeService/RunPodSandbox");
    assert_eq!(str_attr(run, "k8s.pod.name"), Some("span-pod"));
    assert_eq!(str_attr(run, "k8s.namespace.name"), Some("span-ns"));
    assert_eq!(str_attr(run, "k8s.pod.uid"), Some("span-uid-1"));
    assert_eq!(str_attr(run, "cri.pod_sandbox.id"), Some(sandbox.as_str()));
    assert_eq!(str_attr(run, "containerd.namespace"), None);
    let create = one("RuntimeService/CreateContainer");
    assert_eq!(str_attr(create, "cri.pod_sandbox.id"), Some(sandbox.as_str()));
    assert_eq!(str_attr(create, "k8s.container.name"), Some("span-ctr"));
    assert_eq!(str_attr(create, "container.image.name"), Some("registry.k8s.io/pause"));
    assert_eq!(
        create.attributes.get("container.image.tags"),
        Some(&Val::StrList(vec!["3.6".into()]))
    );
    assert_eq!(str_attr(create, "container.id"), Some(container.as_str()));
    for name in ["RuntimeService/StartContainer", "RuntimeService/ContainerStatus"] {
        assert_eq!(str_attr(one(name), "container.id"), Some(container.as_str()), "{name}");
    }
    for name in ["RuntimeService/StopPodSandbox", "RuntimeService/RemovePodSandbox"] {
        assert_eq!(
            str_attr(one(name), "cri.pod_sandbox.id"),
            Some(sandbox.as_str()),
            "{name}"
        );
    }
    let status = one("ImageService/ImageStatus");
    assert_eq!(str_attr(status, "container.image.name"), Some("registry.k8s.io/pause"));
    assert_eq!(one("RuntimeService/Version").status_code, STATUS_UNSET);
    let pull = one("ImageService/PullImage");
    assert_eq!(str_attr(pull, "rpc.response.status_code"), Some("UNKNOWN"));
    assert_eq!(pull.status_code, STATUS_ERROR);
    assert!(!pull.status_message.is_empty());
    assert_eq!(
        str_attr(pull, "container.image.name"),
        Some("registry.invalid/nosuch/image")
    );
    // Secrets never reach the exporter.
    let all = format!("{:?}", s.receiver.resource_spans());
    for secret in [
        "span-secret-value",
        "c3Bhbi1zZWNyZXQtdmFsdWU",
        "span-password",
        "span-user",
    ] {
        assert!(!all.contains(secret), "{secret} reached the exporter");
    }
}

#[test]
fn dockerd_calls_in_the_moby_namespace_carry_the_container_id() {
    let s = setup();
    let out = run(s.stack.bed.docker(&s.stack.docker).args([
        "run",
        "--rm",
        "--network",
        "none",
        "bb:latest",
        "echo",
        "span-hi",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "span-hi\n");
    let spans = wait_spans(s, "dockerd Tasks/Start", |sp| {
        !with_ns(sp, "moby", &format!("{TASKS}/Start")).is_empty()
    });
    let start = with_ns(&spans, "moby", &format!("{TASKS}/Start"));
    let id = str_attr(start[0], "container.id").expect("container.id");
    assert_eq!(id.len(), 64);
    assert_eq!(str_attr(start[0], "runtime_tap.client.executable"), Some("dockerd"));
    let create = with_ns(&spans, "moby", &format!("{CONTAINERS}/Create"));
    assert!(create.iter().any(|c| str_attr(c, "container.id") == Some(id)));
    // The same spans went to the OTLP/JSON file, one ExportTraceServiceRequest per line.
    let text = std::fs::read_to_string(span_file(&s.stack.bed)).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
            .as_str()
            .is_some_and(|t| t.len() == 32)
    );
    assert!(text.contains(id));
}

#[test]
fn event_spans_are_linked_to_their_subscription() {
    let s = setup();
    let ns = "rt-spans-events";
    // `ctr events` subscribes (Events/Subscribe, a server stream); its span is exported when
    // the subscription ends, so the links of the event spans can be checked against it.
    let mut events = s
        .stack
        .bed
        .ctr(&s.stack.containerd)
        .arg("events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = support::Lines::of(events.stdout.take().unwrap());
    // Namespaces are created until one's event is printed: the subscription is then live, so
    // every create made carries an event under it. Each is removed and its event waited for.
    let made = lines.until_seen("/namespaces/create", |i| {
        let name = format!("rt-spans-ev-extra-{i}");
        assert!(ctr(s, ns, &["namespaces", "create", &name]).status.success());
    });
    for i in 0..made {
        let name = format!("rt-spans-ev-extra-{i}");
        assert!(ctr(s, ns, &["namespaces", "remove", &name]).status.success());
    }
    assert!(
        lines.wait_for("/namespaces/delete", Duration::from_secs(30)),
        "no delete event: {}",
        lines.seen()
    );
    let _ = events.kill();
    let _ = events.wait();
    let spans = wait_spans(s, "ctr's subscription ended", |sp| {
        sp.iter().any(|x| {
            x.name == "containerd.services.events.v1.Events/Subscribe"
                && str_attr(x, "runtime_tap.client.executable") == Some("ctr")
        })
    });
    let subscriptions: Vec<_> = spans
        .iter()
        .filter(|x| {
            x.name == "containerd.services.events.v1.Events/Subscribe"
                && str_attr(x, "runtime_tap.client.executable") == Some("ctr")
        })
        .collect();
    assert_eq!(subscriptions.len(), 1, "{subscriptions:#?}");
    let sub = subscriptions[0];
    let delivered: Vec<_> = spans
        .iter()
        .filter(|x| x.name.starts_with("event /namespaces/") && x.start_ns >= sub.start_ns && x.start_ns <= sub.end_ns)
        .collect();
    let topics: Vec<_> = delivered
        .iter()
        .filter_map(|x| str_attr(x, "containerd.event.topic"))
        .collect();
    assert!(topics.contains(&"/namespaces/create"), "{topics:?}");
    assert!(topics.contains(&"/namespaces/delete"), "{topics:?}");
    for ev in delivered {
        assert_eq!(ev.kind, KIND_INTERNAL);
        assert_eq!(ev.service, "containerd");
        assert_eq!(ev.links.len(), 1, "{ev:?}");
        assert_eq!(ev.links[0].span_id, sub.span_id, "{} linked to another span", ev.name);
        assert_eq!(ev.links[0].trace_id, sub.trace_id);
    }
}

#[test]
fn a_collector_that_is_down_changes_nothing_for_clients() {
    let s = setup();
    // A second runtime-tap in front of the same containerd, exporting to a closed port.
    let dir = support::TempDir::new("down-collector");
    let closed = support::free_port();
    let config =
        support::one_intercept(
            "down",
            &dir.path("tap.sock"),
            &s.stack.bed.containerd_socket(),
            &format!("127.0.0.1:{}", support::free_port()),
        ) + &format!("\n[export]\nendpoint = \"http://127.0.0.1:{closed}\"\n\n[sampling]\ndefault_rules = false\n");
    let tap = support::Tap::start(&dir.0, &config);
    let ns = "rt-spans-down";
    // The same ctr commands directly and through the tap give the same answers.
    let direct = |args: &[&str]| {
        run(s
            .stack
            .bed
            .ctr(&s.stack.bed.containerd_socket())
            .arg("-n")
            .arg(ns)
            .args(args))
    };
    let tapped = |args: &[&str]| run(s.stack.bed.ctr(&dir.path("tap.sock")).arg("-n").arg(ns).args(args));
    // An import through the tap (Content/Write streams...), then reads of what it made;
    // the namespace is this test's own, so concurrent tests change nothing in the answers.
    tapped(&["images", "import", s.stack.images_tar.to_str().unwrap()]);
    let commands: [&[&str]; 3] = [&["version"], &["images", "ls", "-q"], &["containers", "ls", "-q"]];
    for args in commands {
        assert_eq!(tapped(args).stdout, direct(args).stdout, "ctr {args:?}");
    }
    assert!(String::from_utf8_lossy(&tapped(&["images", "ls", "-q"]).stdout).contains("docker.io/library/bb:latest"));
    // A CRI call through the tap, answered as directly.
    let (via_tap, straight) = s.rt.block_on({
        let (tap_sock, up) = (dir.path("tap.sock"), s.stack.bed.containerd_socket());
        async move {
            let mut a = GrpcClient::connect(&tap_sock).await;
            let mut b = GrpcClient::connect(&up).await;
            let m = "runtime.v1.RuntimeService/Version";
            (
                a.unary(m, json!({}), &[]).await.unwrap(),
                b.unary(m, json!({}), &[]).await.unwrap(),
            )
        }
    });
    assert_eq!(via_tap, straight);
    // Every span that was submitted is counted as dropped with reason export_failed.
    let calls = |t: &support::Tap| t.metric("runtime_tap_spans_submitted_total").unwrap_or(0);
    let failed = |t: &support::Tap| {
        t.metric("runtime_tap_spans_dropped_total{reason=\"export_failed\"}")
            .unwrap_or(0)
    };
    assert!(
        support::proc::eventually(Duration::from_secs(30), || {
            let n = calls(&tap);
            n >= 10 && failed(&tap) == n
        }),
        "submitted {} export_failed {}:\n{}",
        calls(&tap),
        failed(&tap),
        tap.admin_get("/metrics").1
    );
    assert_eq!(tap.metric("runtime_tap_spans_exported_total"), Some(0));
    assert_eq!(
        tap.metric("runtime_tap_spans_dropped_total{reason=\"queue_full\"}"),
        Some(0)
    );
    println!(
        "{} spans, all dropped as export_failed; clients unaffected",
        calls(&tap)
    );
}
