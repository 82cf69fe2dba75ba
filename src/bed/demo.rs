//! `runtime-tap demo`: a private containerd and dockerd with runtime-tap in front of both,
//! a docker container and a CRI pod run through it, each finished trace shown as a waterfall
//! (and exported too when an OTLP endpoint is set), and directions for sending more traffic;
//! runs until Ctrl-C, or exits after the sample with `--once`. Everything it writes is below
//! the bed's private directory.

use std::path::PathBuf;

use anyhow::Context as _;

use super::Bed;
use crate::app::Hooks;
use crate::config::{Admin, Config, Endpoint, Export, Intercept, Relay};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Run the sample container, print what happened, and exit instead of staying up.
    #[arg(long)]
    pub once: bool,
    /// Admin endpoint address, or "off". Port 0 (the default) picks a free port, printed at
    /// the end: the usual 9464 may be taken by a runtime-tap already running on this node.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: String,
    /// Which daemons to run: bookworm's containerd 1.6 and dockerd 20.10 (the machine's own
    /// packages, installed when missing), or trixie's (1.7, 26.1) or sid's (2.x, 28.x),
    /// downloaded once from the mirror apt already uses and unpacked into a cache folder
    /// (RUNTIME_TAP_DAEMON_CACHE, default /var/cache/runtime-tap/daemons), never installed.
    #[arg(long, value_enum, default_value_t = super::Generation::Bookworm)]
    pub runtime: super::Generation,
    /// Only make sure the --runtime daemons are there (fetching them when needed), print their
    /// versions, and exit.
    #[arg(long)]
    pub versions: bool,
}

/// The demo's config: runtime-tap on its own paths in front of the bed's daemons.
pub fn config(bed: &Bed, admin: String) -> Config {
    let tap = bed.dir.join("tap");
    let intercept = |name: &str, listen: PathBuf, upstream: PathBuf| {
        Intercept::new(name, Endpoint::Unix(listen), Endpoint::Unix(upstream))
    };
    Config {
        intercepts: vec![
            intercept("containerd", tap.join("containerd.sock"), bed.containerd_socket()),
            intercept("dockerd", tap.join("docker.sock"), bed.docker_socket()),
        ],
        admin: Admin { listen: admin },
        // dockerd keeps its containerd connections open until it stops, after runtime-tap:
        // a short grace period so that `--once` and Ctrl-C do not wait the default for them.
        relay: Relay {
            grace_period_secs: 2,
            ..Relay::default()
        },
        // The waterfall is what the demo is for: keep it on when an OTLP endpoint (from the
        // environment) is set too, where the console view would otherwise be off.
        export: Export {
            console: Some(true),
            ..Export::default()
        },
        descriptor_sets: Vec::new(),
        sampling: Default::default(),
        correlation: Default::default(),
        redact: Default::default(),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let generation = args.runtime;
    if args.versions {
        return tokio::task::spawn_blocking(move || print_versions(generation)).await?;
    }
    let mut bed = tokio::task::spawn_blocking(move || -> anyhow::Result<Bed> {
        let mut bed = Bed::with_generation("demo", generation)?;
        bed.start_containerd()?;
        Ok(bed)
    })
    .await??;
    let admin = admin_address(&args.admin).context("--admin")?;
    let config = config(&bed, admin.clone());
    let (Endpoint::Unix(tap_containerd), Endpoint::Unix(tap_docker)) =
        (config.intercepts[0].listen.clone(), config.intercepts[1].listen.clone())
    else {
        unreachable!("demo intercepts are unix sockets")
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let hooks = Hooks {
        ready: Some(ready_tx),
        ..Hooks::default()
    };
    let stop = hooks.stop.clone();
    let proxy = tokio::spawn(crate::app::run(config, hooks));
    ready_rx.await.context("runtime-tap did not start")?;

    let (bed_back, sample) = tokio::task::spawn_blocking(move || {
        let result = (|| -> anyhow::Result<String> {
            // dockerd's containerd calls go through the containerd intercept.
            bed.start_dockerd(&tap_containerd)?;
            let images = bed.make_images(&tap_docker)?;
            // The CRI plugin works in containerd's k8s.io namespace and needs its sandbox image.
            super::run(
                bed.ctr(&tap_containerd)
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(&images),
            )?;
            let image = pull_from_registry(&mut bed, &tap_docker)?;
            let out = super::run(bed.docker(&tap_docker).args([
                "run",
                "--rm",
                "--network",
                "none",
                &image,
                "echo",
                "hello from a container, through runtime-tap",
            ]))?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })();
        (bed, result)
    })
    .await?;
    bed = bed_back;
    let sample = sample?;
    let pod = cri_pod(&bed.dir.join("tap/containerd.sock"), &bed.dir.join("pods"))
        .await
        .context("CRI pod through runtime-tap")?;
    let tap = bed.dir.join("tap");
    println!(
        "\nruntime-tap is in front of a private containerd and dockerd ({}: {}).\n\
         A container ran through it and printed: {}\n\
         A CRI pod started and stopped through it, as kubelet does: sandbox {}\n\
         Their traces are the waterfalls above (stderr); OTEL_EXPORTER_OTLP_ENDPOINT sends them on.\n\
         Send more traffic through it:\n  \
           export DOCKER_HOST=unix://{}/docker.sock DOCKER_CONFIG={}\n  \
           docker run --rm --network none {} echo hi\n  \
           {} -a {}/containerd.sock -n moby containers ls\n\
         {}\n",
        bed.generation(),
        bed.versions(),
        sample.trim(),
        &pod[..pod.len().min(12)],
        tap.display(),
        bed.docker_config_dir().display(),
        bed.registry()
            .map_or_else(|| "bb:latest".to_string(), |r| format!("{r}/{DEMO_IMAGE}")),
        if bed.generation() == super::Generation::Bookworm {
            "ctr".into()
        } else {
            bed.ctr_path().display().to_string()
        },
        tap.display(),
        if admin == "off" {
            "Metrics: off (--admin off)".to_string()
        } else {
            format!("Metrics: curl -s http://{admin}/metrics")
        }
    );
    if args.once {
        // The pod's `pod start` root ends only after a quiet period, and the waterfall shows a
        // trace once it is quiet: wait for both, so the pod's trace is shown before the exit
        // rather than flushed at shutdown.
        let settle = crate::trace::correlate::POD_QUIET_PERIOD
            + crate::trace::export::trace_buffer::QUIET
            + std::time::Duration::from_secs(1);
        println!(
            "Waiting {}s for the pod's trace to settle, then stopping (--once).",
            settle.as_secs()
        );
        tokio::time::sleep(settle).await;
        stop.cancel();
    } else {
        println!("Ctrl-C stops runtime-tap and the private daemons.");
    }
    let result = proxy.await.context("runtime-tap task")?;
    tokio::task::spawn_blocking(move || drop(bed)).await?;
    result
}

/// The image the demo pulls from the bed's registry, below its host.
const DEMO_IMAGE: &str = "demo/bb:1";

/// Start the bed's registry, push a two-layer image to it, remove every local name of its
/// layers and pull it through runtime-tap, so that the first traces include a real pull with
/// its per-layer breakdown. Returns the pulled reference. The image is made on dockerd's own
/// socket: its `docker run` and push are set-up, not traces a new user came to see.
fn pull_from_registry(bed: &mut Bed, tap_docker: &std::path::Path) -> anyhow::Result<String> {
    bed.start_registry()?;
    let own = bed.docker_socket();
    let image = bed.push_two_layer_image(&own, DEMO_IMAGE)?;
    super::run(
        bed.docker(&own)
            .args(["rmi", "bb:latest", super::SANDBOX_IMAGE, &image]),
    )?;
    super::run(bed.docker(tap_docker).args(["pull", "--quiet", &image]))?;
    Ok(image)
}

/// `demo --versions`: the generation's daemons made sure of, and their versions on stdout.
fn print_versions(generation: super::Generation) -> anyhow::Result<()> {
    let binaries = generation.ensure()?;
    println!("{generation}: {}", binaries.version("containerd"));
    println!("{generation}: {}", binaries.version("dockerd"));
    println!("{generation}: {} (the machine's)", binaries.version("runc"));
    Ok(())
}

/// The admin address to listen on: `off` as it is, a port 0 replaced by a free port (bound
/// and released here; app::run binds it again right after, so it can be printed).
fn admin_address(given: &str) -> anyhow::Result<String> {
    if given == "off" {
        return Ok(given.to_string());
    }
    let addr: std::net::SocketAddr = given
        .parse()
        .with_context(|| format!("{given:?}: expected host:port or off"))?;
    if addr.port() != 0 {
        return Ok(given.to_string());
    }
    let free = std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .with_context(|| format!("find a free port on {}", addr.ip()))?;
    Ok(free.to_string())
}

/// Start a pod as kubelet does (sandbox, container, start), then stop and remove it, through
/// the containerd intercept; the sandbox id. The pod's logs go below `log_dir` (the bed's
/// private directory), never to a shared place such as /tmp.
async fn cri_pod(socket: &std::path::Path, log_dir: &std::path::Path) -> anyhow::Result<String> {
    use serde_json::json;
    std::fs::create_dir_all(log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let mut c = super::cri::GrpcClient::connect(socket).await?;
    let rs = "runtime.v1.RuntimeService";
    c.unary(&format!("{rs}/Version"), json!({}), &[]).await?;
    let config = json!({
        "metadata": {"name": "demo-pod", "namespace": "demo", "uid": "demo-pod-uid", "attempt": 0},
        "log_directory": log_dir,
        "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
    });
    let run = c
        .unary(&format!("{rs}/RunPodSandbox"), json!({"config": config.clone()}), &[])
        .await?;
    let sandbox = run["podSandboxId"].as_str().unwrap_or_default().to_string();
    // kubelet checks a container's image once the sandbox runs, then creates the container.
    c.unary(
        "runtime.v1.ImageService/ImageStatus",
        json!({"image": {"image": "registry.k8s.io/pause:3.6"}}),
        &[],
    )
    .await?;
    let create = c
        .unary(
            &format!("{rs}/CreateContainer"),
            json!({
                "pod_sandbox_id": sandbox,
                "config": {
                    "metadata": {"name": "hello"},
                    "image": {"image": "registry.k8s.io/pause:3.6"},
                    // Runs until the pod is stopped, as a pod's container does: a container
                    // that exits by itself can race StopPodSandbox's kill of it ("ttrpc:
                    // closed" from a shim on its way out).
                    "command": ["/bin/sh", "-c", "echo hello from a pod; exec sleep 3600"],
                    "log_path": "hello.log"
                },
                "sandbox_config": config
            }),
            &[],
        )
        .await?;
    let container = create["containerId"].as_str().unwrap_or_default().to_string();
    c.unary(&format!("{rs}/StartContainer"), json!({"container_id": container}), &[])
        .await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.unary(
        &format!("{rs}/ContainerStatus"),
        json!({"container_id": container}),
        &[],
    )
    .await?;
    c.unary(&format!("{rs}/StopPodSandbox"), json!({"pod_sandbox_id": sandbox}), &[])
        .await?;
    c.unary(
        &format!("{rs}/RemovePodSandbox"),
        json!({"pod_sandbox_id": sandbox}),
        &[],
    )
    .await?;
    Ok(sandbox)
}
