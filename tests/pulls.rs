//! Real image pulls, end to end: the bed's private registry (Debian's docker-registry on a
//! loopback port) serves a two-layer image, and `docker pull`, CRI PullImage and, on
//! containerd 2.x, `ctr images pull` (Transfer) fetch it through runtime-tap, with an OTLP
//! receiver reading what runtime-tap exports.

mod support;

use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::json;
use support::cri::GrpcClient;
use support::otlp::{OtlpReceiver, ReceivedSpan, STATUS_ERROR, Val};
use support::stack::Stack;

/// The two-layer image the registry serves, as `name:tag` below the registry's host.
const REPO: &str = "two";
const TAG: &str = "1";

struct Setup {
    rt: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
    stack: Stack,
    /// `127.0.0.1:PORT/two:1`.
    image: String,
}

/// The tests run one at a time: each pulls the same image, removed before.
fn setup() -> (std::sync::MutexGuard<'static, ()>, &'static Setup) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static SETUP: OnceLock<Setup> = OnceLock::new();
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = SETUP.get_or_init(|| {
        let rt = support::runtime();
        let receiver = rt.block_on(OtlpReceiver::start());
        let mut stack = Stack::start(
            "pulls",
            &format!(
                "[export]\nendpoint = \"{}\"\n\n[sampling]\ndefault_rules = false\n",
                receiver.endpoint()
            ),
        );
        let versions = stack.bed.versions().clone();
        stack
            .bed
            .start_registry()
            .unwrap_or_else(|e| panic!("registry ({versions}): {e:#}"));
        let image = stack
            .bed
            .push_two_layer_image(&stack.docker, &format!("{REPO}:{TAG}"))
            .unwrap_or_else(|e| panic!("push the two-layer image ({versions}): {e:#}"));
        let layers = stack.bed.registry_layer_sizes(REPO, TAG).expect("manifest");
        assert_eq!(layers.len(), 2, "the pushed image has two layers: {layers:?}");
        Setup {
            rt,
            receiver,
            stack,
            image,
        }
    });
    (guard, s)
}

fn str_attr<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    match span.attributes.get(key) {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    }
}

fn docker_ok(s: &Setup, args: &[&str]) -> String {
    let out = s
        .stack
        .bed
        .docker(&s.stack.docker)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} ({}): {}",
        s.stack.bed.versions(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_pull_from_the_private_registry_is_an_ok_pull_span() {
    let (_serial, s) = setup();
    // The push left the layers in dockerd; without the image the pull downloads them again.
    let _ = s.stack.bed.docker(&s.stack.docker).args(["rmi", &s.image]).output();
    docker_ok(s, &["pull", &s.image]);
    let (name, _) = s.image.rsplit_once(':').unwrap();
    let spans = s.receiver.wait_spans("docker pull", |sp| {
        sp.iter()
            .any(|x| x.name == "POST /images/create" && str_attr(x, "container.image.name") == Some(name))
    });
    let pull = spans
        .iter()
        .find(|x| x.name == "POST /images/create" && str_attr(x, "container.image.name") == Some(name))
        .unwrap();
    assert_ne!(pull.status_code, STATUS_ERROR, "{pull:?}");
    assert_eq!(pull.attributes.get("http.response.status_code"), Some(&Val::Int(200)));
}

#[test]
fn cri_pull_image_from_the_private_registry_succeeds() {
    let (_serial, s) = setup();
    let sock = s.stack.containerd.clone();
    let image = s.image.clone();
    let reply = s.rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        c.unary(
            "runtime.v1.ImageService/PullImage",
            json!({"image": {"image": image}}),
            &[],
        )
        .await
    });
    let reply = reply.unwrap_or_else(|e| panic!("CRI PullImage ({}): {e:?}", s.stack.bed.versions()));
    assert!(
        reply["imageRef"].as_str().is_some_and(|r| r.starts_with("sha256:")),
        "{reply}"
    );
    let spans = s.receiver.wait_spans("CRI PullImage", |sp| {
        sp.iter().any(|x| x.name == "runtime.v1.ImageService/PullImage")
    });
    let pull = spans
        .iter()
        .find(|x| x.name == "runtime.v1.ImageService/PullImage")
        .unwrap();
    assert_eq!(str_attr(pull, "rpc.response.status_code"), Some("OK"), "{pull:?}");
}
