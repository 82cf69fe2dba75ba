//! Workload `node-mix`: what runtime-tap costs on a node ("what does it cost me"). One
//! runtime-tap with the default sampling rules in front of the bed's containerd (CRI) and
//! dockerd, under the calls kubelet and the docker CLI make on a node: kubelet's timer-driven
//! polls at their real periods, a pod started (and, a few seconds later, stopped and removed)
//! every second, and a `docker run` every few seconds. Figures: runtime-tap's CPU time
//! (utime + stime from /proc, not wall time: the machine is shared) per call it observed, and
//! as a percentage of one core, at each pod count.
//!
//! The mix, from kubelet's source (kubernetes pkg/kubelet, v1.2x):
//! - pleg/generic.go + kubelet.go `genericPlegRelistPeriod = 1s`: each relist is
//!   `GetPods(all)` = ListPodSandbox + ListContainers; for each pod whose containers changed,
//!   `updateCache` -> kuberuntime `GetPodStatus` = PodSandboxStatus + ListContainers (filtered
//!   by sandbox) + ContainerStatus per container.
//! - kubelet.go `housekeepingPeriod = 2s`: HandlePodCleanups reads the runtime cache, which
//!   refreshes (ListPodSandbox + ListContainers) when older than about that period.
//! - kubelet.go `go wait.Until(kl.updateRuntimeUp, 5*time.Second, ...)`: Status every 5 s.
//! - syncNodeStatus every `nodeStatusUpdateFrequency` (10 s default): Version.
//! - `evictionMonitoringPeriod = 10s`: the eviction manager's summary from the CRI stats
//!   provider: ListPodSandbox + ListContainers + ListContainerStats + ImageFsInfo.
//! - metrics-server's scrape of /metrics/resource (15 s resolution): ListPodSandbox +
//!   ListContainers + ListContainerStats.
//! - A pod start as kuberuntime SyncPod makes it: RunPodSandbox, ImageStatus, CreateContainer,
//!   StartContainer; a stop: StopContainer, StopPodSandbox, RemoveContainer, RemovePodSandbox.
//!
//! None of these periods depends on the pod count: kubelet's *call rate* at 1,000 pods is the
//! one at 100 (plus the churn, here fixed at one pod start a second, and exec probes, which
//! this mix leaves out). What grows with the pod count is the size of the List and stats
//! answers, which runtime-tap decodes. So each level really has up to N pod sandboxes and N
//! containers in containerd (stopped sandboxes and created containers: listed by the CRI
//! plugin, no process each), as many as the populating budget allows; the report gives how
//! many it reached, the answer sizes measured, and the sizes projected at N.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use runtime_tap::bed::cri::GrpcClient;
use serde::Serialize;
use serde_json::json;

use crate::otlp::Receiver;
use crate::procfs;
use crate::scrape;
use crate::targets::Relay;

const RS: &str = "runtime.v1.RuntimeService";
const IS: &str = "runtime.v1.ImageService";
/// The image every pod and `docker run` uses: the bed's busybox (imported, never pulled;
/// the CRI plugin resolves the short name as docker does).
const IMAGE: &str = "bb:latest";
/// How long a started pod lives before kubelet would stop it.
const POD_LIFETIME: Duration = Duration::from_secs(5);
/// Concurrent populating calls (containerd is the limit; two cores).
const POPULATE_CONCURRENCY: usize = 4;
/// How long runtime-tap's export may take to settle after a level.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The workload's size.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Pods per node, one level each.
    pub levels: [u64; 2],
    /// Timed part per level.
    pub duration: Duration,
    /// Seconds between two `docker run`s.
    pub docker_every: Duration,
    /// Longest the populating before a level may take (stopped sandboxes and created
    /// containers up to the level's pod count).
    pub populate_budget: Duration,
}

/// One level's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Level {
    pub pods: u64,
    /// Pod sandboxes and containers containerd held during the level (aim: `pods` each).
    pub sandboxes: u64,
    pub containers: u64,
    /// Encoded answer sizes measured at that population, and projected at `pods` (per item
    /// times `pods`).
    pub list_sandbox_bytes: u64,
    pub list_containers_bytes: u64,
    pub list_container_stats_bytes: u64,
    pub list_sandbox_bytes_at_n: u64,
    pub list_containers_bytes_at_n: u64,
    pub list_container_stats_bytes_at_n: u64,
    pub elapsed_s: f64,
    /// Calls the clients made: CRI (kubelet's polls and pod lifecycle) and `docker run`s.
    pub cri_calls: u64,
    pub cri_failed: u64,
    pub docker_runs: u64,
    pub docker_failed: u64,
    /// runtime-tap's count of calls observed (CRI and Docker API, after minus before).
    pub tap_calls: u64,
    pub tap_spans_submitted: u64,
    pub tap_spans_dropped: std::collections::BTreeMap<String, u64>,
    pub spans_arrived: u64,
    /// runtime-tap's CPU (utime + stime) over the level, per call observed, and as a
    /// percentage of one core over the level's wall time.
    pub tap_cpu_s: f64,
    pub cpu_per_call_us: Option<f64>,
    pub core_pct: f64,
    pub rss_end_kib: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeMixReport {
    pub workload: String,
    pub description: String,
    pub error: Option<String>,
    pub levels: Vec<Level>,
}

impl Plan {
    pub fn description(self) -> String {
        format!(
            "kubelet's CRI polls at their periods (relist 1 s, cache 2 s, Status 5 s, Version 10 s, eviction stats 10 s, metrics-server 15 s) + a pod start every 1 s (stopped and removed after {} s) + `docker run --rm` every {} s, through one runtime-tap with default sampling; {} s per level at {} and {} pods",
            POD_LIFETIME.as_secs(),
            self.docker_every.as_secs(),
            self.duration.as_secs(),
            self.levels[0],
            self.levels[1]
        )
    }
}

/// What the workload needs from the bed.
pub struct Node<'a> {
    pub containerd: PathBuf,
    pub dockerd: PathBuf,
    /// The docker CLI against a socket (the bed's `docker`).
    pub docker: &'a dyn Fn(&Path) -> std::process::Command,
    pub dir: PathBuf,
    pub tap_bin: &'a Path,
    pub admin: SocketAddr,
}

/// Runs both levels on one fresh runtime-tap.
pub fn run(rt: &tokio::runtime::Runtime, node: &Node, receiver: &Arc<Receiver>, plan: Plan) -> NodeMixReport {
    let mut report = NodeMixReport {
        workload: "node-mix".into(),
        description: plan.description(),
        ..NodeMixReport::default()
    };
    let cri = node.dir.join("cri.sock");
    let docker = node.dir.join("docker.sock");
    let config = node.dir.join("node-mix.toml");
    // Default sampling: no [sampling] section.
    let text = format!(
        "[[intercept]]\nname = \"containerd\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\ndecode = true\n\n[[intercept]]\nname = \"dockerd\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\ndecode = true\n\n[admin]\nlisten = \"{}\"\n\n[relay]\ngrace_period_secs = 1\n\n[export]\nendpoint = \"{}\"\nconsole = false\n",
        cri.display(),
        node.containerd.display(),
        docker.display(),
        node.dockerd.display(),
        node.admin,
        receiver.endpoint
    );
    if let Err(e) = std::fs::write(&config, text) {
        report.error = Some(format!("write {}: {e}", config.display()));
        return report;
    }
    let mut relay = match Relay::start_tap(node.tap_bin, &config, cri.clone(), node.dir.join("node-mix.log")) {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            return report;
        }
    };
    let pid = relay.pid().expect("runtime-tap runs");
    // Populated sandboxes/containers, kept across levels (the second level adds to the first).
    let mut population = Population::default();
    for &pods in &plan.levels {
        let level = rt
            .block_on(level(node, &cri, &docker, pid, receiver, plan, pods, &mut population))
            .unwrap_or_else(|e| Level {
                pods,
                error: Some(format!("{e:#}")),
                ..Level::default()
            });
        eprintln!(
            "node-mix {pods} pods: {} calls, {} µs/call, {:.3} % of a core{}",
            level.tap_calls,
            level.cpu_per_call_us.map_or("-".into(), |c| format!("{c:.1}")),
            level.core_pct,
            level.error.as_ref().map_or(String::new(), |e| format!(" ERROR {e}"))
        );
        report.levels.push(level);
    }
    relay.stop();
    report
}

#[derive(Default)]
struct Population {
    sandboxes: u64,
    containers: u64,
    /// The running sandbox the populated containers are created in.
    holder: Option<String>,
}

fn sandbox_config(name: &str, log_dir: &Path) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "node-mix", "uid": format!("uid-{name}"), "attempt": 0},
        "log_directory": log_dir,
        "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
    })
}

fn status_err(e: runtime_tap::bed::cri::Status) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Up to `pods` stopped sandboxes and `pods` created containers in containerd (directly, not
/// through runtime-tap), within `budget`.
async fn populate(
    containerd: &Path,
    log_dir: &Path,
    pods: u64,
    budget: Duration,
    pop: &mut Population,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut c = GrpcClient::connect(containerd).await.map_err(status_err)?;
    if pop.holder.is_none() {
        let cfg = sandbox_config("holder", log_dir);
        let run = c
            .unary(&format!("{RS}/RunPodSandbox"), json!({"config": cfg}), &[])
            .await
            .map_err(status_err)?;
        pop.holder = run["podSandboxId"].as_str().map(str::to_string);
    }
    let holder = pop.holder.clone().context("holder sandbox id")?;
    let sandboxes = Arc::new(AtomicU64::new(pop.sandboxes));
    let containers = Arc::new(AtomicU64::new(pop.containers));
    let mut tasks = Vec::new();
    for _ in 0..POPULATE_CONCURRENCY {
        let (sandboxes, containers) = (sandboxes.clone(), containers.clone());
        let (sock, log_dir, holder) = (containerd.to_path_buf(), log_dir.to_path_buf(), holder.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = GrpcClient::connect(&sock).await.map_err(status_err)?;
            let holder_cfg = sandbox_config("holder", &log_dir);
            while start.elapsed() < budget {
                let s = sandboxes.fetch_add(1, Ordering::Relaxed);
                if s < pods {
                    let cfg = sandbox_config(&format!("pop-{s}"), &log_dir);
                    let run = c
                        .unary(&format!("{RS}/RunPodSandbox"), json!({"config": cfg}), &[])
                        .await
                        .map_err(status_err)?;
                    c.unary(&format!("{RS}/StopPodSandbox"), json!({"pod_sandbox_id": run["podSandboxId"]}), &[])
                        .await
                        .map_err(status_err)?;
                } else {
                    sandboxes.fetch_sub(1, Ordering::Relaxed);
                }
                let k = containers.fetch_add(1, Ordering::Relaxed);
                if k < pods {
                    c.unary(
                        &format!("{RS}/CreateContainer"),
                        json!({"pod_sandbox_id": holder, "config": {"metadata": {"name": format!("pop-{k}")}, "image": {"image": IMAGE}, "command": ["/bin/true"], "log_path": format!("pop-{k}.log"), "labels": {"io.kubernetes.container.name": format!("pop-{k}"), "io.kubernetes.pod.name": format!("pop-{k}"), "io.kubernetes.pod.namespace": "node-mix"}}, "sandbox_config": holder_cfg}),
                        &[],
                    )
                    .await
                    .map_err(status_err)?;
                } else {
                    containers.fetch_sub(1, Ordering::Relaxed);
                }
                if s >= pods && k >= pods {
                    break;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("populating task")??;
    }
    // The counters overshoot by the calls that found the budget spent; recount from containerd.
    let sandboxes = list_len(&mut c, "ListPodSandbox", "items").await?.0;
    let containers = list_len(&mut c, "ListContainers", "containers").await?.0;
    pop.sandboxes = sandboxes;
    pop.containers = containers;
    Ok(())
}

/// Items and encoded size of a List answer.
async fn list_len(c: &mut GrpcClient, method: &str, field: &str) -> anyhow::Result<(u64, u64)> {
    let replies = c
        .server_stream(&format!("{RS}/{method}"), json!({}), &[])
        .await
        .map_err(status_err)?;
    let reply = replies.into_iter().next().context("no answer")?;
    let items = reply
        .get_field_by_name(field)
        .map_or(0, |v| v.as_list().map_or(0, |l| l.len())) as u64;
    Ok((items, reply.encode_to_vec().len() as u64))
}

/// Counts a client's calls.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    async fn call(&self, c: &mut GrpcClient, method: &str, req: serde_json::Value) -> Option<serde_json::Value> {
        match c.unary(method, req, &[]).await {
            Ok(v) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// kubelet's timer-driven polls for `duration`: a tick a second.
async fn polls(sock: PathBuf, duration: Duration, tally: Arc<Tally>) -> anyhow::Result<()> {
    let mut c = GrpcClient::connect(&sock).await.map_err(status_err)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let start = Instant::now();
    let mut s = 0u64;
    while start.elapsed() < duration {
        tick.tick().await;
        let mut lists = 1; // PLEG relist
        if s.is_multiple_of(2) {
            lists += 1; // housekeeping's runtime cache
        }
        for _ in 0..lists {
            tally.call(&mut c, &format!("{RS}/ListPodSandbox"), json!({})).await;
            tally.call(&mut c, &format!("{RS}/ListContainers"), json!({})).await;
        }
        if s.is_multiple_of(5) {
            tally.call(&mut c, &format!("{RS}/Status"), json!({})).await;
        }
        if s.is_multiple_of(10) {
            tally.call(&mut c, &format!("{RS}/Version"), json!({})).await;
            // Eviction manager: the CRI stats provider's summary.
            tally.call(&mut c, &format!("{RS}/ListPodSandbox"), json!({})).await;
            tally.call(&mut c, &format!("{RS}/ListContainers"), json!({})).await;
            tally.call(&mut c, &format!("{RS}/ListContainerStats"), json!({})).await;
            tally.call(&mut c, &format!("{IS}/ImageFsInfo"), json!({})).await;
        }
        if s.is_multiple_of(15) {
            // metrics-server's scrape of /metrics/resource.
            tally.call(&mut c, &format!("{RS}/ListPodSandbox"), json!({})).await;
            tally.call(&mut c, &format!("{RS}/ListContainers"), json!({})).await;
            tally.call(&mut c, &format!("{RS}/ListContainerStats"), json!({})).await;
        }
        s += 1;
    }
    Ok(())
}

/// PLEG's `GetPodStatus` for one changed pod.
async fn pod_status(c: &mut GrpcClient, tally: &Tally, sandbox: &str, container: &str) {
    tally
        .call(c, &format!("{RS}/PodSandboxStatus"), json!({"pod_sandbox_id": sandbox}))
        .await;
    tally
        .call(
            c,
            &format!("{RS}/ListContainers"),
            json!({"filter": {"pod_sandbox_id": sandbox}}),
        )
        .await;
    tally
        .call(c, &format!("{RS}/ContainerStatus"), json!({"container_id": container}))
        .await;
}

/// A pod start every second for `duration`; each pod is stopped and removed `POD_LIFETIME`
/// later (and the ones still running at the end, then).
async fn pods(
    sock: PathBuf,
    log_dir: PathBuf,
    level: u64,
    duration: Duration,
    tally: Arc<Tally>,
) -> anyhow::Result<()> {
    let mut c = GrpcClient::connect(&sock).await.map_err(status_err)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let start = Instant::now();
    let mut live: std::collections::VecDeque<(Instant, String, String)> = Default::default();
    let mut i = 0u64;
    loop {
        tick.tick().await;
        let done = start.elapsed() >= duration;
        while let Some((at, _, _)) = live.front() {
            if !done && at.elapsed() < POD_LIFETIME {
                break;
            }
            let (_, sandbox, container) = live.pop_front().expect("front");
            tally
                .call(
                    &mut c,
                    &format!("{RS}/StopContainer"),
                    json!({"container_id": container, "timeout": 0}),
                )
                .await;
            tally
                .call(
                    &mut c,
                    &format!("{RS}/StopPodSandbox"),
                    json!({"pod_sandbox_id": sandbox}),
                )
                .await;
            pod_status(&mut c, &tally, &sandbox, &container).await;
            tally
                .call(
                    &mut c,
                    &format!("{RS}/RemoveContainer"),
                    json!({"container_id": container}),
                )
                .await;
            tally
                .call(
                    &mut c,
                    &format!("{RS}/RemovePodSandbox"),
                    json!({"pod_sandbox_id": sandbox}),
                )
                .await;
        }
        if done {
            return Ok(());
        }
        let cfg = sandbox_config(&format!("mix-{level}-{i}"), &log_dir);
        i += 1;
        let Some(run) = tally
            .call(&mut c, &format!("{RS}/RunPodSandbox"), json!({"config": cfg}))
            .await
        else {
            continue;
        };
        let sandbox = run["podSandboxId"].as_str().unwrap_or_default().to_string();
        tally
            .call(&mut c, &format!("{IS}/ImageStatus"), json!({"image": {"image": IMAGE}}))
            .await;
        let create = tally
            .call(
                &mut c,
                &format!("{RS}/CreateContainer"),
                json!({"pod_sandbox_id": sandbox, "config": {"metadata": {"name": "app"}, "image": {"image": IMAGE}, "command": ["/bin/sleep", "3600"], "log_path": "app.log"}, "sandbox_config": cfg}),
            )
            .await;
        let container = create
            .as_ref()
            .and_then(|v| v["containerId"].as_str())
            .unwrap_or_default()
            .to_string();
        tally
            .call(
                &mut c,
                &format!("{RS}/StartContainer"),
                json!({"container_id": container}),
            )
            .await;
        // The next relist sees the new sandbox and container.
        pod_status(&mut c, &tally, &sandbox, &container).await;
        live.push_back((Instant::now(), sandbox, container));
    }
}

#[allow(clippy::too_many_arguments)]
async fn level(
    node: &Node<'_>,
    cri: &Path,
    docker: &Path,
    pid: u32,
    receiver: &Arc<Receiver>,
    plan: Plan,
    pods_n: u64,
    pop: &mut Population,
) -> anyhow::Result<Level> {
    let log_dir = node.dir.join("pods");
    std::fs::create_dir_all(&log_dir)?;
    let started = Instant::now();
    populate(&node.containerd, &log_dir, pods_n, plan.populate_budget, pop).await?;
    eprintln!(
        "node-mix {pods_n} pods: populated {} sandboxes, {} containers in {:.0} s",
        pop.sandboxes,
        pop.containers,
        started.elapsed().as_secs_f64()
    );
    let mut c = GrpcClient::connect(&node.containerd).await.map_err(status_err)?;
    let (sb_items, sb_bytes) = list_len(&mut c, "ListPodSandbox", "items").await?;
    let (ct_items, ct_bytes) = list_len(&mut c, "ListContainers", "containers").await?;
    let (st_items, st_bytes) = list_len(&mut c, "ListContainerStats", "stats").await?;
    let at_n = |items: u64, bytes: u64| (bytes * pods_n).checked_div(items).unwrap_or(0);

    let before = scrape::scrape(node.admin)?;
    let spans_before = receiver.spans();
    let pids = procfs::tree(pid);
    let cpu_start = procfs::tree_cpu_ticks(&pids);
    let t0 = Instant::now();
    let tally = Arc::new(Tally::default());
    let poll_task = tokio::spawn(polls(cri.to_path_buf(), plan.duration, tally.clone()));
    let pod_task = tokio::spawn(pods(
        cri.to_path_buf(),
        log_dir.clone(),
        pods_n,
        plan.duration,
        tally.clone(),
    ));
    // `docker run` on a blocking thread, every `docker_every`.
    let docker_cmd: Vec<std::process::Command> = {
        let mut v = Vec::new();
        let runs = (plan.duration.as_secs_f64() / plan.docker_every.as_secs_f64()).floor() as usize;
        for _ in 0..runs {
            let mut cmd = (node.docker)(docker);
            cmd.args(["run", "--rm", "--network", "none", IMAGE, "/bin/true"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            v.push(cmd);
        }
        v
    };
    let every = plan.docker_every;
    let docker_task = tokio::task::spawn_blocking(move || {
        let (mut ok, mut failed) = (0u64, 0u64);
        let start = Instant::now();
        for (i, mut cmd) in docker_cmd.into_iter().enumerate() {
            let due = every * i as u32;
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            match cmd.status() {
                Ok(s) if s.success() => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    });
    poll_task.await.context("poll task")??;
    pod_task.await.context("pod task")??;
    let (docker_runs, docker_failed) = docker_task.await.context("docker task")?;
    let (after, _settled) = scrape::settle(node.admin, SETTLE_TIMEOUT)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let pids = procfs::tree(pid);
    let cpu_s = procfs::tree_cpu_ticks(&pids).saturating_sub(cpu_start) as f64 / procfs::TICKS_PER_SEC;
    let d = after.since(&before);
    Ok(Level {
        pods: pods_n,
        sandboxes: sb_items,
        containers: ct_items,
        list_sandbox_bytes: sb_bytes,
        list_containers_bytes: ct_bytes,
        list_container_stats_bytes: st_bytes,
        list_sandbox_bytes_at_n: at_n(sb_items, sb_bytes),
        list_containers_bytes_at_n: at_n(ct_items, ct_bytes),
        list_container_stats_bytes_at_n: at_n(st_items, st_bytes),
        elapsed_s: elapsed,
        cri_calls: tally.ok.load(Ordering::Relaxed),
        cri_failed: tally.failed.load(Ordering::Relaxed),
        docker_runs,
        docker_failed,
        tap_calls: d.calls,
        tap_spans_submitted: d.spans_submitted,
        tap_spans_dropped: d.spans_dropped.clone(),
        spans_arrived: receiver.spans().saturating_sub(spans_before),
        tap_cpu_s: cpu_s,
        cpu_per_call_us: (d.calls > 0).then(|| cpu_s * 1e6 / d.calls as f64),
        core_pct: cpu_s * 100.0 / elapsed,
        rss_end_kib: procfs::tree_mem(&pids).rss_kib,
        error: None,
    })
}

/// The report's table.
pub fn table(r: &NodeMixReport) -> String {
    let mut s = format!("node-mix: {}\n", r.description);
    if let Some(e) = &r.error {
        s += &format!("  ERROR {e}\n");
        return s;
    }
    s += &format!(
        "{:>6} {:>9} {:>9} {:>7} {:>8} {:>7} {:>9} {:>9} {:>8} {:>7} {:>12} {:>12}\n",
        "pods",
        "sandboxes",
        "ctrs",
        "calls",
        "calls/s",
        "docker",
        "CPU s",
        "CPU/call",
        "%core",
        "spans",
        "ListCtrs B",
        "B at N"
    );
    for l in &r.levels {
        if let Some(e) = &l.error {
            s += &format!("{:>6} ERROR {e}\n", l.pods);
            continue;
        }
        s += &format!(
            "{:>6} {:>9} {:>9} {:>7} {:>8.1} {:>7} {:>9.2} {:>9} {:>8.3} {:>7} {:>12} {:>12}\n",
            l.pods,
            l.sandboxes,
            l.containers,
            l.tap_calls,
            l.tap_calls as f64 / l.elapsed_s,
            format!("{}/{}", l.docker_runs, l.docker_runs + l.docker_failed),
            l.tap_cpu_s,
            l.cpu_per_call_us.map_or("-".into(), |c| format!("{c:.1} µs")),
            l.core_pct,
            l.spans_arrived,
            l.list_containers_bytes,
            l.list_containers_bytes_at_n
        );
        s += &format!(
            "       client: {} CRI calls ({} failed); tap: {} spans submitted, dropped {}; ListPodSandbox {} B ({} B at N), ListContainerStats {} B ({} B at N); RSS {} MiB\n",
            l.cri_calls,
            l.cri_failed,
            l.tap_spans_submitted,
            scrape::TapCounters::by_reason(&l.tap_spans_dropped),
            l.list_sandbox_bytes,
            l.list_sandbox_bytes_at_n,
            l.list_container_stats_bytes,
            l.list_container_stats_bytes_at_n,
            l.rss_end_kib / 1024
        );
    }
    s
}
