//! Real image pulls, end to end: the bed's private registry (Debian's docker-registry on a
//! loopback port) serves a two-layer image, and `docker pull`, CRI PullImage and, on
//! containerd 2.x, `ctr images pull` (Transfer) fetch it through runtime-tap, with an OTLP
//! receiver reading what runtime-tap exports.

mod support;

use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::json;
use support::cri::GrpcClient;
use support::otlp::{KIND_INTERNAL, OtlpReceiver, ReceivedSpan, STATUS_ERROR, Val, double_attr, int_attr, str_attr};
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
    /// The image's layers in the registry: digest and compressed size, in manifest order.
    layers: Vec<(String, u64)>,
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
        // dockerd keeps the base layer under the names it was built from: gone, a pull
        // downloads both layers (the CRI images were saved to a tar before).
        let _ = stack
            .bed
            .docker(&stack.docker)
            .args(["rmi", "bb:latest", runtime_tap::bed::SANDBOX_IMAGE])
            .output();
        Setup {
            rt,
            receiver,
            stack,
            image,
            layers,
        }
    });
    (guard, s)
}

fn docker_ok(s: &Setup, args: &[&str]) -> String {
    let what = format!("docker {args:?}");
    run_ok(s.stack.bed.docker(&s.stack.docker).args(args), &what, s)
}

/// Runs `cmd` (stdin closed), which must succeed; its stdout.
fn run_ok(cmd: &mut std::process::Command, what: &str, s: &Setup) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what} ({}): {}",
        s.stack.bed.versions(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The spans whose parent is `parent`, in its trace.
fn children_of<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|c| c.parent_span_id == parent.span_id && c.trace_id == parent.trace_id)
        .collect()
}

/// The `kind` layer span of layer `id` among `children` of `parent`: INTERNAL, inside its
/// parent, with the registry's blob `size` as its bytes (for a download). Printed.
fn layer_span<'a>(
    children: &[&'a ReceivedSpan],
    parent: &ReceivedSpan,
    kind: &str,
    id: &str,
    size: u64,
    versions: &str,
) -> &'a ReceivedSpan {
    let span = children
        .iter()
        .find(|c| c.name == kind && str_attr(c, "runtime_tap.image.layer.id") == Some(id))
        .unwrap_or_else(|| panic!("no {kind} of {id} ({versions}) under {parent:?}: {children:?}"));
    assert_eq!(span.kind, KIND_INTERNAL);
    assert!(parent.start_ns <= span.start_ns && span.start_ns <= span.end_ns && span.end_ns <= parent.end_ns);
    assert_eq!(
        int_attr(span, "runtime_tap.image.layer.bytes"),
        Some(size as i64),
        "{kind} of {id}: the registry's blob size ({versions})"
    );
    eprintln!(
        "{kind} {id} ({versions}): {:?} bytes (registry {size}), {:.2} ms, {:?} B/s",
        int_attr(span, "runtime_tap.image.layer.bytes"),
        (span.end_ns - span.start_ns) as f64 / 1e6,
        double_attr(span, "runtime_tap.image.layer.bytes_per_second")
    );
    span
}

/// `docker pull` of the two-layer image: `POST /images/create` has a `layer download` and a
/// `layer extract` child per layer, whose bytes are the registry's blob sizes, and the totals.
#[test]
fn docker_pull_shows_each_layers_download_and_extract_with_the_registrys_blob_sizes() {
    let (_serial, s) = setup();
    // The push left the layers in dockerd; without the image the pull downloads them again.
    let _ = s.stack.bed.docker(&s.stack.docker).args(["rmi", &s.image]).output();
    docker_ok(s, &["pull", &s.image]);
    let (name, _) = s.image.rsplit_once(':').unwrap();
    let is_pull =
        |x: &ReceivedSpan| x.name == "POST /images/create" && str_attr(x, "container.image.name") == Some(name);
    let spans = s.receiver.wait_spans("docker pull with its layer spans", |sp| {
        sp.iter()
            .filter(|p| is_pull(p))
            .any(|p| sp.iter().filter(|c| c.parent_span_id == p.span_id).count() >= 4)
    });
    let pull = spans.iter().rev().find(|x| is_pull(x)).unwrap();
    let versions = s.stack.bed.versions();
    assert_ne!(pull.status_code, STATUS_ERROR, "{pull:?}");
    assert_eq!(pull.attributes.get("http.response.status_code"), Some(&Val::Int(200)));
    let children = children_of(&spans, pull);
    let mut total = 0;
    for (digest, size) in &s.layers {
        // dockerd names a layer by its digest's first 12 hex digits.
        let id = &digest["sha256:".len().."sha256:".len() + 12];
        for kind in ["layer download", "layer extract"] {
            layer_span(&children, pull, kind, id, *size, &versions.to_string());
        }
        total += *size as i64;
    }
    // The containerd calls dockerd made for the pull are children too; of the layer spans,
    // two per layer and no more.
    let layer_spans = children.iter().filter(|c| c.name.starts_with("layer ")).count();
    assert_eq!(layer_spans, 4, "{children:?}");
    // Counted where the span accounting of /metrics can balance them.
    assert!(
        s.stack
            .tap
            .metric("runtime_tap_child_spans_total")
            .is_some_and(|n| n >= 4)
    );
    assert_eq!(int_attr(pull, "runtime_tap.image.layers"), Some(2));
    assert_eq!(int_attr(pull, "runtime_tap.image.bytes"), Some(total));
    assert_eq!(str_attr(pull, "runtime_tap.image.progress"), Some("layers"));
    let first_byte = double_attr(pull, "runtime_tap.image.first_byte_ms").expect("first byte");
    assert!(
        first_byte > 0.0 && first_byte <= (pull.end_ns - pull.start_ns) as f64 / 1e6,
        "{first_byte}"
    );
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
    // containerd pulls inside and answers once: no layer breakdown, and it says so.
    assert_eq!(str_attr(pull, "runtime_tap.image.progress"), Some("none"), "{pull:?}");
    assert!(
        !spans
            .iter()
            .any(|c| c.parent_span_id == pull.span_id && c.name.starts_with("layer "))
    );
    // The size is on the ImageStatus that follows, as kubelet asks it: the image's unpacked
    // size as containerd reports it (at least the compressed layers).
    let sock = s.stack.containerd.clone();
    let image = s.image.clone();
    let status = s.rt.block_on(async move {
        let mut c = GrpcClient::connect(&sock).await;
        c.unary(
            "runtime.v1.ImageService/ImageStatus",
            json!({"image": {"image": image}}),
            &[],
        )
        .await
        .unwrap()
    });
    let size: i64 = status["image"]["size"]
        .as_str()
        .map(|v| v.parse().unwrap())
        .or_else(|| status["image"]["size"].as_i64())
        .unwrap_or_else(|| panic!("ImageStatus size: {status}"));
    let compressed: u64 = s.layers.iter().map(|(_, n)| n).sum();
    assert!(size >= compressed as i64, "{size} < {compressed}");
    let spans = s.receiver.wait_spans("CRI ImageStatus with its size", |sp| {
        sp.iter().any(|x| {
            x.name == "runtime.v1.ImageService/ImageStatus" && x.attributes.contains_key("runtime_tap.image.bytes")
        })
    });
    let st = spans
        .iter()
        .find(|x| {
            x.name == "runtime.v1.ImageService/ImageStatus" && x.attributes.contains_key("runtime_tap.image.bytes")
        })
        .unwrap();
    assert_eq!(int_attr(st, "runtime_tap.image.bytes"), Some(size));
    eprintln!(
        "CRI PullImage ({}): image size {size} (compressed layers {compressed})",
        s.stack.bed.versions()
    );
}

/// containerd 2.x: `ctr images pull` of the two-layer image goes through Transfer/Transfer,
/// whose progress arrives on the Streaming/Stream it names (its child). That stream's span has
/// a `layer download` child per layer, whose bytes are the registry's blob sizes (containerd
/// reports no per-layer unpack: no `layer extract`), and the totals. containerd 1.6/1.7 have no
/// Transfer service: skipped there.
#[test]
fn ctr_pull_on_containerd_2_shows_each_layers_download_under_the_transfers_progress_stream() {
    let (_serial, s) = setup();
    let bed = &s.stack.bed;
    let versions = bed.versions();
    if bed.generation() != runtime_tap::bed::Generation::Sid {
        eprintln!("skipped: ctr images pull uses Transfer on containerd 2.x only ({versions})");
        return;
    }
    // A namespace of its own, emptied first: its image is pulled again each run.
    let ns = "rtap-transfer-pull";
    let _ = bed
        .ctr(&s.stack.containerd)
        .args(["-n", ns, "images", "rm", &s.image])
        .output();
    run_ok(
        bed.ctr(&s.stack.containerd)
            .args(["-n", ns, "images", "pull", "--plain-http", &s.image]),
        "ctr images pull",
        s,
    );
    const STREAM: &str = "containerd.services.streaming.v1.Streaming/Stream";
    const TRANSFER: &str = "containerd.services.transfer.v1.Transfer/Transfer";
    let downloads = |sp: &[ReceivedSpan], parent: &ReceivedSpan| {
        sp.iter()
            .filter(|c| c.parent_span_id == parent.span_id && c.name == "layer download")
            .count()
    };
    let spans = s
        .receiver
        .wait_spans("ctr pull's progress stream with its layer spans", |sp| {
            sp.iter().any(|p| p.name == STREAM && downloads(sp, p) >= 2)
        });
    let stream = spans
        .iter()
        .find(|p| p.name == STREAM && downloads(&spans, p) >= 2)
        .unwrap();
    let transfer = spans
        .iter()
        .find(|t| t.name == TRANSFER && t.span_id == stream.parent_span_id)
        .unwrap_or_else(|| panic!("the progress stream's parent is no Transfer ({versions}): {stream:?}"));
    assert_eq!(
        str_attr(transfer, "containerd.transfer.progress_stream"),
        str_attr(stream, "containerd.stream.id")
    );
    let children = children_of(&spans, stream);
    let mut total = 0;
    for (digest, size) in &s.layers {
        layer_span(
            &children,
            stream,
            "layer download",
            digest,
            *size,
            &versions.to_string(),
        );
        total += *size as i64;
    }
    assert_eq!(
        children.iter().filter(|c| c.name.starts_with("layer ")).count(),
        2,
        "{children:?}"
    );
    assert_eq!(int_attr(stream, "runtime_tap.image.layers"), Some(2));
    assert_eq!(int_attr(stream, "runtime_tap.image.bytes"), Some(total));
    assert_eq!(str_attr(stream, "runtime_tap.image.progress"), Some("layers"));
    // Only a `downloading` event gives a time to first byte: a layer fetched within one of
    // containerd's progress ticks has none.
    let first_byte = double_attr(stream, "runtime_tap.image.first_byte_ms");
    if let Some(ms) = first_byte {
        assert!(
            ms >= 0.0 && ms <= (stream.end_ns - stream.start_ns) as f64 / 1e6,
            "{ms}"
        );
    }
    eprintln!(
        "ctr pull ({versions}): Transfer {:.2} ms, stream {:.2} ms, first byte {first_byte:?} ms",
        (transfer.end_ns - transfer.start_ns) as f64 / 1e6,
        (stream.end_ns - stream.start_ns) as f64 / 1e6
    );
}
