//! runtime-tap's side-by-side benchmark: the direct socket, socat, HAProxy, nginx and
//! runtime-tap (decoding and export on; decoding off), each a separate process in front of
//! the same upstream (a private containerd and dockerd, or the benchmark's own byte servers),
//! run interleaved (rounds × targets in rotated order) so machine drift cancels out; medians
//! across rounds. Two more workloads measure runtime-tap alone, once: span accounting under a
//! paced rate, and RSS growth over a long run. See benches/README.md.
//!
//!     cargo bench --bench runtime-tap-bench -- [--quick] [--rounds N] [--only W,..] [--targets T,..]

mod accounting;
mod growth;
mod meter;
mod nodemix;
mod otlp;
mod procfs;
mod report;
mod scrape;
mod targets;
mod watch;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use sha2::Digest as _;

use meter::Meter;
use report::{Run, TargetRuns, Unit, WorkloadReport};
use targets::{Relay, Target};

#[derive(Parser, Debug)]
#[command(
    name = "runtime-tap-bench",
    about = "runtime-tap beside the direct socket, socat, HAProxy and nginx"
)]
struct Opts {
    /// Smoke test: 2000 calls, 16 MiB bulk, 32 MiB blob, 100 idle connections held 1 s, 1 round;
    /// accounting at 1,000 calls/s for 5 s, growth over 20,000 calls.
    #[arg(long)]
    quick: bool,
    /// Rounds (each runs every target once, in rotated order). Default 5 (quick: 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Workloads to run (comma-separated): unary-c1, unary-c32, docker-ping, bulk-sink,
    /// bulk-echo, content-read, idle, accounting, growth, node-mix; or the groups unary, bulk,
    /// soak (accounting and growth). Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Targets (comma-separated): direct, socat, haproxy, nginx, tap-export, tap-relay.
    /// Default: all. direct is always added (ratios are against it).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// JSON output file. Default: benches/results/<date>-<label>.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Label of the run, in the JSON file's name. Default: "run" (quick: "quick").
    #[arg(long)]
    label: Option<String>,
    /// The OTLP collector tap-export sends to: ok (answers at once), slow (answers each export
    /// after 1 s), down (nothing listens), blackhole (accepts and never answers). The other
    /// modes measure what a collector in trouble costs the clients (issue: reliability).
    #[arg(long, default_value = "ok")]
    collector: otlp::Mode,
    /// A runtime-tap binary to measure instead of building target/release/runtime-tap.
    #[arg(long)]
    tap_bin: Option<PathBuf>,
    /// A second runtime-tap binary, run as target tap-export-b beside tap-export (an A/B of
    /// two builds in one interleaved run). Adds tap-export-b to the targets.
    #[arg(long)]
    tap_bin_b: Option<PathBuf>,
    /// Environment for target tap-export-b only, `KEY=VALUE` (repeatable; comma-separated):
    /// an A/B of one build under two settings, e.g. `--tap-env-b TOKIO_WORKER_THREADS=1`.
    /// Without `--tap-bin-b`, tap-export-b runs the same binary as tap-export.
    #[arg(long, value_delimiter = ',')]
    tap_env_b: Vec<String>,
    /// Internal: serve the bulk sink and echo sockets (the benchmark starts itself so).
    #[arg(long, num_args = 2, hide = true)]
    serve_bulk: Option<Vec<PathBuf>>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    UnaryC1,
    UnaryC32,
    DockerPing,
    BulkSink,
    BulkEcho,
    ContentRead,
    Idle,
    /// runtime-tap alone, once: span accounting at a paced rate.
    Accounting,
    /// runtime-tap alone, once: RSS over a long run.
    Growth,
    /// runtime-tap alone, once, default sampling: a node's kubelet and docker CLI calls.
    NodeMix,
}

const WORKLOADS: [Workload; 10] = [
    Workload::UnaryC1,
    Workload::UnaryC32,
    Workload::DockerPing,
    Workload::BulkSink,
    Workload::BulkEcho,
    Workload::ContentRead,
    Workload::Idle,
    Workload::Accounting,
    Workload::Growth,
    Workload::NodeMix,
];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::UnaryC1 => "unary-c1",
            Workload::UnaryC32 => "unary-c32",
            Workload::DockerPing => "docker-ping",
            Workload::BulkSink => "bulk-sink",
            Workload::BulkEcho => "bulk-echo",
            Workload::ContentRead => "content-read",
            Workload::Idle => "idle",
            Workload::Accounting => "accounting",
            Workload::Growth => "growth",
            Workload::NodeMix => "node-mix",
        }
    }

    /// Runs once against tap-export alone (its claim is about runtime-tap, not a comparison),
    /// after the paired workloads.
    fn alone(self) -> bool {
        matches!(self, Workload::Accounting | Workload::Growth | Workload::NodeMix)
    }

    fn unit(self) -> Unit {
        match self {
            Workload::BulkSink | Workload::BulkEcho | Workload::ContentRead => Unit::Bytes,
            Workload::Idle => Unit::Conns,
            _ => Unit::Calls,
        }
    }
}

/// Sizes of a run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    unary_c1_calls: u64,
    unary_c32_calls: u64,
    ping_calls: u64,
    warmup_calls: u64,
    bulk_bytes: u64,
    blob_bytes: u64,
    idle_conns: usize,
    idle_hold: Duration,
    accounting: accounting::Plan,
    growth: growth::Plan,
    node_mix: nodemix::Plan,
}

/// The full run: about 10-15 minutes on 2 cores (see benches/README.md).
const FULL: Sizes = Sizes {
    unary_c1_calls: 20_000,
    unary_c32_calls: 60_000,
    ping_calls: 20_000,
    warmup_calls: 200,
    bulk_bytes: 1 << 30,
    blob_bytes: 256 << 20,
    idle_conns: 1000,
    idle_hold: Duration::from_secs(5),
    accounting: accounting::Plan {
        rate: 10_000,
        duration: Duration::from_secs(60),
    },
    growth: growth::Plan {
        calls: 1_000_000,
        sample_every: 50_000,
        // Half the run: see benches/README.md ("growth") for why the first half is warm-up.
        warmup: 500_000,
    },
    node_mix: nodemix::Plan {
        levels: [100, 1000],
        duration: Duration::from_secs(60),
        docker_every: Duration::from_secs(5),
        populate_budget: Duration::from_secs(150),
    },
};

const QUICK: Sizes = Sizes {
    unary_c1_calls: 2000,
    unary_c32_calls: 2000,
    ping_calls: 2000,
    warmup_calls: 50,
    bulk_bytes: 16 << 20,
    blob_bytes: 32 << 20,
    idle_conns: 100,
    idle_hold: Duration::from_secs(1),
    accounting: accounting::Plan {
        rate: 1000,
        duration: Duration::from_secs(5),
    },
    growth: growth::Plan {
        calls: 20_000,
        sample_every: 5000,
        warmup: 10_000,
    },
    node_mix: nodemix::Plan {
        levels: [100, 1000],
        duration: Duration::from_secs(10),
        docker_every: Duration::from_secs(5),
        populate_budget: Duration::from_secs(10),
    },
};

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    if let Some(paths) = &opts.serve_bulk {
        return workloads::serve_bulk(&paths[0], &paths[1]);
    }
    let started = Instant::now();
    let sizes = if opts.quick { QUICK } else { FULL };
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 5 }).max(1);
    let workloads = select_workloads(&opts.only)?;
    let ab = opts.tap_bin_b.is_some() || !opts.tap_env_b.is_empty();
    let targets = select_targets(&opts.targets, ab)?;
    let env_b = parse_env_b(&opts.tap_env_b)?;
    let (date, time) = report::now_utc();
    let label = opts
        .label
        .clone()
        .unwrap_or_else(|| if opts.quick { "quick" } else { "run" }.into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| manifest.join("benches/results").join(format!("{date}-{label}.json")));

    raise_nofile();
    targets::ensure_peers(&targets)?;
    let tap_bin = match &opts.tap_bin {
        Some(b) => b.clone(),
        None => build_tap(manifest)?,
    };
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // The upstreams: a private containerd (and dockerd on it), the bulk servers, the blob.
    let receiver = Arc::new(otlp::Receiver::start(opts.collector)?);
    let mut bed = runtime_tap::bed::Bed::new("bench")?;
    eprintln!("bed: {}", bed.dir.display());
    bed.start_containerd()?;
    if workloads.contains(&Workload::DockerPing) || workloads.contains(&Workload::NodeMix) {
        bed.start_dockerd(&bed.containerd_socket())?;
    }
    if workloads.contains(&Workload::NodeMix) {
        // bb:latest in dockerd, and in containerd's k8s.io namespace for the CRI pods.
        let tar = bed.make_images(&bed.docker_socket())?;
        bed.import_cri_images(&bed.containerd_socket(), &tar)?;
    }
    let scratch = bed.dir.join("bench");
    std::fs::create_dir_all(&scratch)?;
    let mut bulk_server = None;
    if workloads
        .iter()
        .any(|w| matches!(w, Workload::BulkSink | Workload::BulkEcho))
    {
        bulk_server = Some(BulkServer::start(&scratch)?);
    }
    let blob = if workloads.contains(&Workload::ContentRead) {
        Some(ingest_blob(&bed, sizes.blob_bytes)?)
    } else {
        None
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut reports = Vec::new();
    for w in workloads.iter().filter(|w| !w.alone()) {
        let (upstream, service, description, size, concurrency) = match w {
            Workload::UnaryC1 => (
                bed.containerd_socket(),
                "containerd",
                format!(
                    "containerd Version/Version, 1 in flight on one HTTP/2 connection, {} calls",
                    sizes.unary_c1_calls
                ),
                sizes.unary_c1_calls,
                1,
            ),
            Workload::UnaryC32 => (
                bed.containerd_socket(),
                "containerd",
                format!(
                    "containerd Version/Version, 32 in flight on one HTTP/2 connection, {} calls",
                    sizes.unary_c32_calls
                ),
                sizes.unary_c32_calls,
                32,
            ),
            Workload::DockerPing => (
                bed.docker_socket(),
                "dockerd",
                format!(
                    "dockerd GET /_ping, keep-alive HTTP/1.1, 1 in flight, {} calls",
                    sizes.ping_calls
                ),
                sizes.ping_calls,
                1,
            ),
            Workload::BulkSink => (
                bulk_server.as_ref().unwrap().sink.clone(),
                "bulk",
                format!("{} MiB to a sink through one opaque connection", sizes.bulk_bytes >> 20),
                sizes.bulk_bytes,
                1,
            ),
            Workload::BulkEcho => (
                bulk_server.as_ref().unwrap().echo.clone(),
                "bulk",
                format!(
                    "{} MiB through an echo server and back (rate: one direction)",
                    sizes.bulk_bytes >> 20
                ),
                sizes.bulk_bytes,
                1,
            ),
            Workload::ContentRead => (
                bed.containerd_socket(),
                "containerd",
                format!(
                    "containerd Content/Read of a {} MiB blob, one server stream",
                    sizes.blob_bytes >> 20
                ),
                sizes.blob_bytes,
                1,
            ),
            Workload::Idle => (
                bed.containerd_socket(),
                "containerd",
                format!(
                    "{} connections to containerd (h2 handshake + 1 Version call each, 8 opening at a time) held {} s; RSS at the end of the hold",
                    sizes.idle_conns,
                    sizes.idle_hold.as_secs()
                ),
                sizes.idle_conns as u64,
                sizes.idle_conns,
            ),
            Workload::Accounting | Workload::Growth | Workload::NodeMix => unreachable!("run alone, below"),
        };
        let dir = scratch.join(w.name());
        std::fs::create_dir_all(&dir)?;
        let env = targets::Env {
            dir: &dir,
            tap_bin: &tap_bin,
            tap_bin_b: Some(opts.tap_bin_b.as_deref().unwrap_or(&tap_bin)),
            env_b: &env_b,
            otlp_endpoint: &receiver.endpoint,
            service,
            admin: None,
        };
        // Every target in front of this workload's upstream, for all its rounds.
        let mut relays: Vec<(Target, Result<Relay, String>)> = Vec::new();
        for t in &targets {
            relays.push((*t, Relay::start(*t, &upstream, &env).map_err(|e| format!("{e:#}"))));
        }
        std::thread::sleep(Duration::from_millis(300));
        let rss_idle: Vec<(Target, Option<u64>)> = relays
            .iter()
            .map(|(t, r)| {
                let kib = r
                    .as_ref()
                    .ok()
                    .and_then(Relay::pid)
                    .map(|p| procfs::tree_mem(&procfs::tree(p)).rss_kib);
                (*t, kib)
            })
            .collect();
        let mut runs: Vec<(Target, Vec<Run>)> = targets.iter().map(|t| (*t, Vec::new())).collect();
        for round in 0..rounds {
            for i in 0..relays.len() {
                let k = (i + round) % relays.len();
                let (t, relay) = &relays[k];
                let run = match relay {
                    Err(e) => Run {
                        round,
                        error: Some(e.clone()),
                        ..Run::default()
                    },
                    Ok(relay) => {
                        let run = run_one(&rt, *w, sizes, relay, &receiver, blob.as_ref(), round);
                        quiesce(relay);
                        run
                    }
                };
                eprintln!(
                    "[{:>4}s] {} round {}/{} {:<10} {}",
                    started.elapsed().as_secs(),
                    w.name(),
                    round + 1,
                    rounds,
                    t.name(),
                    match &run.error {
                        Some(e) => format!("ERROR {e}"),
                        None => format!(
                            "{:.0} {}/s",
                            run.rate,
                            match w.unit() {
                                Unit::Calls => "calls",
                                Unit::Bytes => "MB",
                                Unit::Conns => "conns",
                            }
                        ),
                    }
                );
                runs[k].1.push(run);
            }
        }
        for (_, r) in &mut relays {
            if let Ok(r) = r {
                r.stop();
            }
        }
        let summaries = report::summarize(w.unit(), &runs, &rss_idle);
        let wr = WorkloadReport {
            workload: w.name().into(),
            description,
            unit: w.unit(),
            size,
            concurrency,
            summaries,
            runs: runs
                .into_iter()
                .map(|(t, runs)| TargetRuns {
                    target: t.name().into(),
                    runs,
                })
                .collect(),
        };
        reports.push(wr);
    }

    // runtime-tap alone, once each, on a fresh tap-export with its admin endpoint on.
    let mut accounting_report = None;
    let mut growth_report = None;
    let mut node_mix_report = None;
    for w in workloads.iter().filter(|w| w.alone()) {
        if *w == Workload::NodeMix {
            node_mix_report = Some(node_mix(&rt, &bed, &scratch, &tap_bin, &receiver, sizes.node_mix)?);
            eprintln!("[{:>4}s] node-mix done", started.elapsed().as_secs());
            continue;
        }
        if !targets.contains(&Target::TapExport) {
            eprintln!("{}: skipped (tap-export is not among the targets)", w.name());
            continue;
        }
        let dir = scratch.join(w.name());
        std::fs::create_dir_all(&dir)?;
        let admin = scrape::free_addr()?;
        let env = targets::Env {
            dir: &dir,
            tap_bin: &tap_bin,
            tap_bin_b: None,
            env_b: &[],
            otlp_endpoint: &receiver.endpoint,
            service: "containerd",
            admin: Some(admin),
        };
        let relay = Relay::start(Target::TapExport, &bed.containerd_socket(), &env).map_err(|e| format!("{e:#}"));
        let verdict = match w {
            Workload::Accounting => {
                let r = match relay {
                    Ok(relay) => accounting::run(&rt, &relay, admin, &receiver, sizes.accounting),
                    Err(e) => accounting::not_run(sizes.accounting, e),
                };
                accounting_report.insert(r).verdict.clone()
            }
            _ => {
                let r = match relay {
                    Ok(relay) => growth::run(&rt, &relay, admin, &receiver, sizes.growth),
                    Err(e) => growth::not_run(sizes.growth, e),
                };
                growth_report.insert(r).verdict.clone()
            }
        };
        eprintln!(
            "[{:>4}s] {} tap-export: {verdict}",
            started.elapsed().as_secs(),
            w.name()
        );
    }
    drop(rt);
    drop(bulk_server);
    bed.stop();

    // The table, then the JSON.
    let mut text = format!(
        "runtime-tap benchmark {date} {time}, {rounds} round(s){}, {}; medians across rounds; ×direct and +p50 against direct in the same round\n\n",
        if opts.quick { ", --quick" } else { "" },
        machine_line()
    );
    if let Some(r) = &node_mix_report {
        text += &nodemix::table(r);
        text.push('\n');
    }
    for r in &reports {
        text += &report::table(r);
        text.push('\n');
    }
    if let Some(r) = &accounting_report {
        text += &accounting::table(r);
        text.push('\n');
    }
    if let Some(r) = &growth_report {
        text += &growth::table(r);
        text.push('\n');
    }
    print!("{text}");
    let json = serde_json::json!({
        "date": date,
        "time": time,
        "label": label,
        "collector": format!("{:?}", opts.collector).to_lowercase(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "quick": opts.quick,
        "rounds": rounds,
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": machine(),
        "loadavg_start": load_start.trim(),
        "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "git": git_rev(manifest),
        "versions": targets::versions(&tap_bin).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "sizes": {
            "unary_c1_calls": sizes.unary_c1_calls,
            "unary_c32_calls": sizes.unary_c32_calls,
            "docker_ping_calls": sizes.ping_calls,
            "warmup_calls": sizes.warmup_calls,
            "bulk_bytes": sizes.bulk_bytes,
            "blob_bytes": sizes.blob_bytes,
            "idle_conns": sizes.idle_conns,
            "idle_hold_s": sizes.idle_hold.as_secs_f64(),
            "accounting_rate": sizes.accounting.rate,
            "accounting_duration_s": sizes.accounting.duration.as_secs_f64(),
            "growth_calls": sizes.growth.calls,
            "growth_sample_every": sizes.growth.sample_every,
            "growth_warmup_calls": sizes.growth.warmup,
            "node_mix": sizes.node_mix.description(),
        },
        "workloads": reports,
        "accounting": accounting_report,
        "growth": growth_report,
        "node_mix": node_mix_report,
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("write {}", out.display()))?;
    eprintln!("wrote {} ({} s)", out.display(), started.elapsed().as_secs());
    Ok(())
}

/// Workload `node-mix` on a runtime-tap of its own in front of the bed's containerd and dockerd.
fn node_mix(
    rt: &tokio::runtime::Runtime,
    bed: &runtime_tap::bed::Bed,
    scratch: &Path,
    tap_bin: &Path,
    receiver: &Arc<otlp::Receiver>,
    plan: nodemix::Plan,
) -> anyhow::Result<nodemix::NodeMixReport> {
    let dir = scratch.join(Workload::NodeMix.name());
    std::fs::create_dir_all(&dir)?;
    let docker = |s: &Path| bed.docker(s);
    let node = nodemix::Node {
        containerd: bed.containerd_socket(),
        dockerd: bed.docker_socket(),
        docker: &docker,
        dir,
        tap_bin,
        admin: scrape::free_addr()?,
    };
    Ok(nodemix::run(rt, &node, receiver, plan))
}

/// One timed run of one target: the workload's client against the relay's socket, metered.
fn run_one(
    rt: &tokio::runtime::Runtime,
    w: Workload,
    sizes: Sizes,
    relay: &Relay,
    receiver: &Arc<otlp::Receiver>,
    blob: Option<&(String, u64)>,
    round: usize,
) -> Run {
    let rx = relay.target.exports().then(|| receiver.clone());
    let mut meter = Meter::new(relay.pid(), rx);
    let sock = relay.socket.clone();
    let result = match w {
        Workload::BulkSink | Workload::BulkEcho => {
            workloads::bulk(&sock, w == Workload::BulkEcho, sizes.bulk_bytes, &mut meter).map(|s| (s, meter))
        }
        _ => {
            let blob = blob.cloned();
            rt.block_on(async move {
                let task = tokio::spawn(async move {
                    let s = match w {
                        Workload::UnaryC1 => {
                            workloads::unary(sock, 1, sizes.unary_c1_calls, sizes.warmup_calls, &mut meter).await
                        }
                        Workload::UnaryC32 => {
                            workloads::unary(sock, 32, sizes.unary_c32_calls, sizes.warmup_calls, &mut meter).await
                        }
                        Workload::DockerPing => {
                            workloads::docker_ping(sock, sizes.ping_calls, sizes.warmup_calls, &mut meter).await
                        }
                        Workload::ContentRead => {
                            let (digest, size) = blob.expect("blob ingested");
                            workloads::content_read(sock, digest, size, &mut meter).await
                        }
                        Workload::Idle => workloads::idle(sock, sizes.idle_conns, sizes.idle_hold, &mut meter).await,
                        _ => unreachable!(),
                    };
                    s.map(|s| (s, meter))
                });
                match tokio::time::timeout(Duration::from_secs(600), task).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(anyhow::anyhow!("client task: {e}")),
                    Err(_) => Err(anyhow::anyhow!("run timed out after 600 s")),
                }
            })
        }
    };
    let (mut sample, meter) = match result {
        Ok(x) => x,
        Err(e) => {
            return Run {
                round,
                error: Some(format!("{e:#}")),
                ..Run::default()
            };
        }
    };
    let cost = meter.cost.clone();
    sample.latencies_ns.sort_unstable();
    let secs = sample.elapsed.as_secs_f64();
    let unit = w.unit();
    let rate = match unit {
        Unit::Bytes => sample.bytes as f64 / 1e6 / secs,
        _ => sample.ops as f64 / secs,
    };
    // µs per call/connection, or ms per GiB.
    let per_op = |cpu_s: f64| match unit {
        Unit::Bytes => cpu_s * 1000.0 / (sample.bytes as f64 / (1u64 << 30) as f64),
        _ => cpu_s * 1e6 / sample.ops as f64,
    };
    Run {
        round,
        error: None,
        ops: sample.ops,
        bytes: sample.bytes,
        elapsed_s: secs,
        rate,
        p50_us: report::percentile_us(&sample.latencies_ns, 50.0),
        p90_us: report::percentile_us(&sample.latencies_ns, 90.0),
        p99_us: report::percentile_us(&sample.latencies_ns, 99.0),
        relay_cpu_s: cost.cpu_s,
        relay_cpu_per_op: cost.cpu_s.map(per_op),
        client_cpu_per_op: per_op(cost.client_cpu_s),
        rss_peak_kib: cost.rss_peak_kib,
        rss_end_kib: cost.rss_end_kib,
        pss_end_kib: cost.pss_end_kib,
        procs_end: cost.procs_end,
        peak_reset: cost.peak_reset,
        spans: cost.spans,
        expected_spans: cost.expected_spans,
        spans_after_close: cost.spans_after_close,
    }
}

/// After a run: let the relay's tree settle (socat's children exit, the upstream closes the
/// connections) before the next target starts.
fn quiesce(relay: &Relay) {
    let start = Instant::now();
    if let Some(pid) = relay.pid() {
        while procfs::tree(pid).len() > base_procs(relay.target) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// Processes in a target's tree with no connection open.
fn base_procs(t: Target) -> usize {
    match t {
        Target::Nginx => 2,
        _ => 1,
    }
}

fn select_workloads(only: &[String]) -> anyhow::Result<Vec<Workload>> {
    if only.is_empty() {
        return Ok(WORKLOADS.to_vec());
    }
    let mut out = Vec::new();
    for o in only {
        let o = o.trim();
        let found: Vec<Workload> = match o {
            "unary" => vec![Workload::UnaryC1, Workload::UnaryC32],
            "bulk" => vec![Workload::BulkSink, Workload::BulkEcho],
            "soak" => vec![Workload::Accounting, Workload::Growth],
            "node" => vec![Workload::NodeMix],
            _ => WORKLOADS.iter().copied().filter(|w| w.name() == o).collect(),
        };
        if found.is_empty() {
            bail!(
                "unknown workload {o:?}: one of {}, unary, bulk, soak",
                WORKLOADS.map(Workload::name).join(", ")
            );
        }
        out.extend(found);
    }
    Ok(WORKLOADS.iter().copied().filter(|w| out.contains(w)).collect())
}

/// The targets named (all when none), direct always; tap-export-b exactly when there is a B
/// build to run.
fn select_targets(names: &[String], ab: bool) -> anyhow::Result<Vec<Target>> {
    let mut out = vec![Target::Direct];
    if names.is_empty() {
        out = targets::ALL.to_vec();
    }
    out.retain(|t| *t != Target::TapExportB);
    if ab {
        out.push(Target::TapExportB);
    }
    for n in names {
        let t = Target::parse(n.trim()).with_context(|| {
            format!(
                "unknown target {n:?}: one of {}",
                targets::ALL.map(Target::name).join(", ")
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.contains(&Target::TapExportB) && !ab {
        bail!("target tap-export-b needs --tap-bin-b PATH or --tap-env-b KEY=VALUE");
    }
    Ok(targets::ALL.iter().copied().filter(|t| out.contains(t)).collect())
}

/// `--tap-env-b` values: `KEY=VALUE` each.
fn parse_env_b(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--tap-env-b {kv:?}: not KEY=VALUE"))?;
            Ok((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Two descriptors per relayed connection, 1,000 connections: take what the hard limit allows
/// (children inherit it).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Builds the release binary beside this benchmark (same target directory) and returns it.
fn build_tap(manifest: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/release/deps/runtime_tap_bench-HASH -> target/release/runtime-tap
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("benchmark binary has no target directory")?
        .join("runtime-tap");
    eprintln!(
        "building {} (cargo build --release --bin runtime-tap)...",
        bin.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--bin", "runtime-tap"])
        .current_dir(manifest);
    if std::env::var_os("CARGO_TARGET_DIR").is_none()
        && let Some(target_dir) = bin.parent().and_then(Path::parent)
    {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release --bin runtime-tap failed ({status})");
    }
    if !bin.is_file() {
        bail!("{} missing after the build; pass --tap-bin", bin.display());
    }
    Ok(bin)
}

/// The bulk sink and echo servers, in a process of their own (this binary, `--serve-bulk`).
struct BulkServer {
    child: Child,
    sink: PathBuf,
    echo: PathBuf,
}

impl BulkServer {
    fn start(dir: &Path) -> anyhow::Result<BulkServer> {
        let sink = dir.join("sink.sock");
        let echo = dir.join("echo.sock");
        let child = Command::new(std::env::current_exe()?)
            .arg("--serve-bulk")
            .arg(&sink)
            .arg(&echo)
            .stdin(Stdio::piped())
            .spawn()
            .context("start the bulk servers")?;
        let start = Instant::now();
        while !(sink.exists() && echo.exists()) {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("bulk servers did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(BulkServer { child, sink, echo })
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        // Closing its stdin ends it; SIGKILL (by pid) if it does not go.
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a pseudo-random blob of `size` bytes into containerd's content store (namespace
/// `bench`, labelled as a GC root) with `ctr content ingest`; its digest and size.
fn ingest_blob(bed: &runtime_tap::bed::Bed, size: u64) -> anyhow::Result<(String, u64)> {
    let file = bed.dir.join("blob");
    let mut hash = sha2::Sha256::new();
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut block = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for c in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            hash.update(&block[..n]);
            left -= n as u64;
        }
        f.flush()?;
    }
    let digest = format!("sha256:{:x}", hash.finalize());
    let sock = bed.containerd_socket();
    let status = bed
        .ctr(&sock)
        .args(["-n", workloads::NAMESPACE, "content", "ingest"])
        .arg(format!("--expected-size={size}"))
        .arg(format!("--expected-digest={digest}"))
        .arg("runtime-tap-bench-blob")
        .stdin(std::fs::File::open(&file)?)
        .status()
        .context("ctr content ingest")?;
    if !status.success() {
        bail!("ctr content ingest failed ({status})");
    }
    runtime_tap::bed::run(
        bed.ctr(&sock)
            .args(["-n", workloads::NAMESPACE, "content", "label"])
            .arg(&digest)
            .arg("containerd.io/gc.root=runtime-tap-bench"),
    )?;
    let _ = std::fs::remove_file(&file);
    eprintln!(
        "blob {digest} ({} MiB) in containerd namespace {}",
        size >> 20,
        workloads::NAMESPACE
    );
    Ok((digest, size))
}

fn cpuinfo_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn mem_total_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn machine() -> serde_json::Value {
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpuinfo_model(),
        "mem_mib": mem_total_mib(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "os": std::fs::read_to_string("/etc/debian_version").map(|v| format!("Debian {}", v.trim())).unwrap_or_default(),
    })
}

fn machine_line() -> String {
    format!(
        "{} × {}, {} MiB, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpuinfo_model(),
        mem_total_mib(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}

fn git_rev(manifest: &Path) -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let rev = out(&["rev-parse", "--short", "HEAD"]);
    let dirty = !out(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{rev}-dirty") } else { rev }
}
