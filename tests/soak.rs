//! Soak: mixed CRI, containerd and Docker traffic through one runtime-tap process, as fast as
//! the machine goes, for `SOAK_SECONDS` (default 60; the long run is `SOAK_SECONDS=3600`).
//!
//! The stack is the real one (tests/support/stack.rs): a private containerd and dockerd with
//! runtime-tap in front of both and dockerd's `--containerd` on the containerd intercept.
//! The test's own clients go through intercepts of their own, so that what they made can be
//! compared call for call with what runtime-tap observed, apart from dockerd's calls:
//! `cri` (CRI client -> containerd's CRI plugin), `containerd-api` (containerd API client),
//! `dockerd` (the docker CLI and a keep-alive HTTP client), `echo` (an opaque byte stream to
//! an echo server). Spans go over OTLP to the in-process receiver, with the default sampling
//! rules (polls thinned, counted `sampled_out`).
//!
//! At the end it asserts: every byte-checked path returned the same bytes on both sides;
//! no client saw an error; the span accounting on /metrics balances and the receiver got
//! exactly the exported spans; per intercept and method, runtime-tap observed exactly the
//! calls the test made; RSS did not grow after warm-up; runtime-tap's descriptors are back
//! to the baseline. It prints a table of figures (run with `--nocapture` to see it).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::cri::GrpcClient;
use support::http1::KeepAlive;
use support::otlp::OtlpReceiver;
use support::stack::Stack;
use support::{Tap, hex};

/// The CI variant's length; `SOAK_SECONDS` overrides it.
const DEFAULT_SECONDS: u64 = 60;
/// RSS may grow by this much from the middle third's peak to the last third's peak. What
/// legitimately grows after warm-up is bounded well below it: the correlator's tables reach
/// their steady state within `RETAIN` (3 s) of each call and its dropped-trace set within
/// 4096 sampled-out traces (seconds at these rates), RED series are capped per intercept, the
/// export queue drains every 200 ms. What remains is allocator noise (per-thread arenas,
/// fragmentation): 0.02 to 1.2 MiB measured in 60 s runs, 0.06 MiB in 900 s. At the ~3000 calls/s
/// reached here, a leak of 140 bytes per call crosses the bound in the CI variant, of 3 bytes
/// per call in the one-hour run.
const RSS_GROWTH_BOUND_KIB: u64 = 8 * 1024;
/// Calls still settling after the traffic stops: held children (`MAX_EXPORT_DELAY`, 10 s),
/// pod roots (`POD_QUIET_PERIOD`, 5 s), export batches (200 ms).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);

const RS: &str = "runtime.v1.RuntimeService";
const IS: &str = "runtime.v1.ImageService";
const PAUSE: &str = "registry.k8s.io/pause:3.6";

/// What the test's clients did.
#[derive(Default)]
struct Tally {
    /// Successful calls per (intercept, span name).
    calls: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Every failure a client saw.
    errors: Mutex<Vec<String>>,
    /// Byte-checked paths: (transfers, bytes, mismatches).
    checked: Mutex<BTreeMap<&'static str, (u64, u64, u64)>>,
    /// `docker run` invocations that succeeded.
    docker_runs: Mutex<u64>,
    /// Opaque connections and the bytes written to and read from them.
    echo: Mutex<(u64, u64, u64)>,
}

impl Tally {
    fn ok(&self, intercept: &'static str, name: &str) {
        *self
            .calls
            .lock()
            .unwrap()
            .entry((intercept, name.to_string()))
            .or_default() += 1;
    }

    fn err(&self, what: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 100 {
            errors.push(what);
        }
    }

    fn check(&self, path: &'static str, bytes: usize, equal: bool, what: impl FnOnce() -> String) {
        let mut checked = self.checked.lock().unwrap();
        let e = checked.entry(path).or_default();
        e.0 += 1;
        e.1 += bytes as u64;
        if !equal {
            e.2 += 1;
            drop(checked);
            self.err(format!("{path}: bytes differ: {}", what()));
        }
    }
}

/// Everything the workers share.
struct Ctx {
    tally: Tally,
    stop: AtomicBool,
    cri: PathBuf,
    containerd_api: PathBuf,
    docker: PathBuf,
    echo: PathBuf,
    bed_dir: PathBuf,
    docker_config: PathBuf,
    /// Every blob of the imported images, digest first.
    blobs: Vec<String>,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

#[test]
fn soak_mixed_traffic_keeps_bytes_accounting_memory_and_descriptors() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let wall = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = rt.block_on(OtlpReceiver::start_counting());
    let stack = Stack::start_custom("soak", "", |bed| {
        let tap = bed.dir.join("tap");
        let containerd = bed.containerd_socket();
        let intercept = |name: &str, listen: &Path, upstream: &Path| {
            format!(
                "[[intercept]]\nname = \"{name}\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n\n",
                listen.display(),
                upstream.display()
            )
        };
        intercept("cri", &tap.join("cri.sock"), &containerd)
            + &intercept("containerd-api", &tap.join("containerd-api.sock"), &containerd)
            + &intercept("echo", &tap.join("echo.sock"), &bed.dir.join("echo-upstream.sock"))
            + &format!("[export]\nendpoint = \"{}\"\n", receiver.endpoint())
    });
    let bed = &stack.bed;
    support::echo_server(&bed.dir.join("echo-upstream.sock"));
    // CRI's sandbox image in k8s.io, imported directly (not through the intercepts).
    let import = bed
        .ctr(&bed.containerd_socket())
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&stack.images_tar)
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let blobs = rt.block_on(image_blobs(&bed.containerd_socket()));
    let ctx = Arc::new(Ctx {
        tally: Tally::default(),
        stop: AtomicBool::new(false),
        cri: bed.dir.join("tap/cri.sock"),
        containerd_api: bed.dir.join("tap/containerd-api.sock"),
        docker: stack.docker.clone(),
        echo: bed.dir.join("tap/echo.sock"),
        bed_dir: bed.dir.clone(),
        docker_config: bed.docker_config_dir(),
        blobs,
    });
    // One docker run before the baseline: dockerd's connections to containerd are open.
    rt.block_on(docker_run(&ctx, 1024));
    assert!(ctx.tally.errors.lock().unwrap().is_empty(), "{:?}", ctx.tally.errors);
    let tap = &stack.tap;
    let setup_time = wall.elapsed();

    // Baseline, then the traffic, sampling runtime-tap's RSS meanwhile.
    let fds_before = usual_fds_beside_connections(tap);
    let before = tap.metrics();
    let cpu_before = tap.cpu_time();
    *ctx.tally.docker_runs.lock().unwrap() = 0;
    ctx.tally.calls.lock().unwrap().clear();
    ctx.tally.checked.lock().unwrap().clear();
    let started = Instant::now();
    let interval = Duration::from_secs((seconds / 60).clamp(1, 10));
    let rss = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            while ctx.running() {
                samples.push((started.elapsed(), tap.rss_kib()));
                std::thread::sleep(interval);
            }
            samples
        });
        rt.block_on(async {
            let mut workers = Vec::new();
            for _ in 0..2 {
                workers.push(tokio::spawn(cri_polls(ctx.clone())));
                workers.push(tokio::spawn(docker_polls(ctx.clone())));
            }
            workers.push(tokio::spawn(cri_pods(ctx.clone())));
            workers.push(tokio::spawn(containerd_api(ctx.clone())));
            workers.push(tokio::spawn(docker_runs(ctx.clone())));
            workers.push(tokio::spawn(echo_streams(ctx.clone())));
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            ctx.stop.store(true, Ordering::Relaxed);
            for w in workers {
                if let Err(e) = w.await {
                    ctx.tally.err(format!("worker panicked: {e}"));
                }
            }
        });
        sampler.join().unwrap()
    });
    let duration = started.elapsed();
    let cpu = tap.cpu_time() - cpu_before;

    // Let held calls, pod roots and export batches settle, then read the accounting.
    //    Each pod the test started ends as one `pod start` root, after its quiet period.
    let pods_started = ctx
        .tally
        .calls
        .lock()
        .unwrap()
        .get(&("cri", format!("{RS}/RunPodSandbox")))
        .copied()
        .unwrap_or(0);
    let pods_before = Accounts::of(&before).pods;
    let settle = Instant::now();
    let mut last = None;
    let (after, received) = loop {
        let now = (tap.metrics(), receiver.span_count());
        let a = Accounts::of(&now.0);
        let settled =
            a.balanced() && a.exported == now.1 && a.pods - pods_before == pods_started && last.as_ref() == Some(&now);
        if settled || settle.elapsed() > SETTLE_TIMEOUT {
            break now;
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(500));
    };
    let fds_after = wait_fds(tap, fds_before);

    let acc = Accounts::of(&after);
    let tally = &ctx.tally;
    let made = tally.calls.lock().unwrap().clone();
    let observed_delta = red_counts(&after, &red_counts(&before, &BTreeMap::new()));
    let runs = *tally.docker_runs.lock().unwrap();
    let echo = *tally.echo.lock().unwrap();
    let checked = tally.checked.lock().unwrap().clone();
    let calls_delta = acc.calls - Accounts::of(&before).calls;

    // The figures first, so that a failure below comes with them.
    let rss_summary = RssSummary::of(&rss);
    let secs = duration.as_secs_f64();
    println!("\n=== soak figures ===");
    println!(
        "duration            {secs:.1} s (setup {:.1} s)",
        setup_time.as_secs_f64()
    );
    println!(
        "calls observed      {calls_delta} ({:.0}/s, dockerd's own included)",
        calls_delta as f64 / secs
    );
    println!("calls per second, by intercept and method (the test's own clients):");
    for ((intercept, name), n) in &made {
        println!("  {intercept:<15} {name:<55} {n:>8}  {:>8.1}/s", *n as f64 / secs);
    }
    for ((intercept, name), n) in observed_delta.iter().filter(|((i, _), _)| i == "containerd") {
        println!(
            "  {intercept:<15} {name:<55} {n:>8}  {:>8.1}/s  (dockerd)",
            *n as f64 / secs
        );
    }
    let relayed: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("runtime_tap_bytes_total{"))
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0.0))
        .sum();
    println!(
        "bytes relayed       {:.1} MiB (all intercepts, both directions)",
        relayed / 1048576.0
    );
    println!("docker run -i cat   {runs}");
    println!("byte-checked paths (transfers, bytes, mismatches):");
    for (path, (n, bytes, bad)) in &checked {
        println!("  {path:<22} {n:>7} {:>10.1} MiB {bad:>3}", *bytes as f64 / 1048576.0);
    }
    println!(
        "opaque echo         {} connections, {:.1} MiB each way",
        echo.0,
        echo.1 as f64 / 1048576.0
    );
    println!("{rss_summary}");
    println!(
        "spans               submitted {} exported {} received {received}; dropped: queue_full {} export_failed {} shutdown {} sampled_out {} not_sampled {}",
        acc.submitted, acc.exported, acc.queue_full, acc.export_failed, acc.shutdown, acc.sampled_out, acc.not_sampled
    );
    println!(
        "                    calls {} (incomplete {}), event spans {}, pod spans {}",
        acc.calls,
        after.get("runtime_tap_calls_incomplete_total").copied().unwrap_or(0.0),
        acc.events,
        acc.pods
    );
    println!(
        "runtime-tap CPU     {:.1} s = {:.0} us per call ({:.0}% of one core)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / calls_delta.max(1) as f64,
        100.0 * cpu.as_secs_f64() / secs
    );
    println!(
        "fds                 before {fds_before} after {fds_after} (besides TCP and two per open connection: dockerd's to containerd)"
    );
    println!("wall time           {:.1} s", wall.elapsed().as_secs_f64());

    // 1. No client saw an error, and every byte-checked path returned what went in.
    let errors = tally.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:#?}");
    for path in ["docker run -i cat", "containerd Content/Read", "opaque echo"] {
        let (n, bytes, bad) = checked.get(path).copied().unwrap_or_default();
        assert!(n > 0 && bytes > 0, "{path}: nothing was checked");
        assert_eq!(bad, 0, "{path}: {bad} transfers differ");
    }
    assert!(pods_started > 0, "no pod was started");

    // 2. Span accounting: every call observed is one submitted span or a counted drop, and
    //    every submitted span is exported or dropped by reason; the receiver got the exported.
    assert_eq!(acc.queued, 0, "spans still queued after {SETTLE_TIMEOUT:?}");
    assert_eq!(
        acc.calls + acc.events + acc.pods + acc.children + acc.clients - acc.sampled_out - acc.not_sampled,
        acc.submitted,
        "calls + event spans + pod spans + child spans + client spans - sampled out - not sampled = submitted: {acc:?}"
    );
    assert_eq!(
        acc.exported + acc.queue_full + acc.export_failed + acc.shutdown,
        acc.submitted,
        "exported + dropped by reason = submitted: {acc:?}"
    );
    assert_eq!(received, acc.exported, "the receiver got exactly the exported spans");
    assert!(acc.sampled_out > 0, "the default rules thinned the polls");
    assert_eq!(acc.pods - pods_before, pods_started, "one pod start span per pod");

    // 3. Per intercept and method, runtime-tap observed exactly the calls the test made.
    for intercept in ["cri", "containerd-api"] {
        let mine: BTreeMap<&String, u64> = made
            .iter()
            .filter(|((i, _), _)| *i == intercept)
            .map(|((_, n), c)| (n, *c))
            .collect();
        let seen: BTreeMap<&String, u64> = observed_delta
            .iter()
            .filter(|((i, _), _)| i == intercept)
            .map(|((_, n), c)| (n, *c))
            .collect();
        assert_eq!(seen, mine, "{intercept}: observed vs made");
    }
    let docker_seen = |name: &str| {
        observed_delta
            .get(&("dockerd".to_string(), name.to_string()))
            .copied()
            .unwrap_or(0)
    };
    for route in ["GET /_ping", "GET /containers/json", "GET /images/json"] {
        let mine = made.get(&("dockerd", route.to_string())).copied().unwrap_or(0);
        assert!(mine > 0, "{route} was called");
        assert_eq!(docker_seen(route), mine, "dockerd: {route} observed vs made");
    }
    assert!(runs > 0, "docker run happened");
    for route in ["POST /containers/create", "POST /containers/{id}/start"] {
        assert_eq!(docker_seen(route), runs, "dockerd: {route} once per docker run");
    }
    let task_starts = observed_delta
        .get(&(
            "containerd".to_string(),
            "containerd.services.tasks.v1.Tasks/Start".to_string(),
        ))
        .copied()
        .unwrap_or(0);
    assert_eq!(task_starts, runs, "dockerd started one containerd task per docker run");
    // Every call of a method no rule thins arrived as one span.
    let counts = receiver.counts();
    if acc.queue_full + acc.export_failed + acc.shutdown == 0 {
        for ((intercept, name), n) in &made {
            if runtime_tap::trace::sample::POLLS.contains(&name.as_str()) {
                continue;
            }
            let got = counts.get(&(intercept.to_string(), name.clone())).copied().unwrap_or(0);
            assert_eq!(got, *n, "{intercept} {name}: spans received vs calls made");
        }
    }
    // The opaque stream: every connection sniffed as opaque, every byte counted both ways.
    let delta = |series: &str| after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0);
    assert_eq!(
        delta("runtime_tap_protocols_sniffed_total{intercept=\"echo\",protocol=\"opaque\"}") as u64,
        echo.0
    );
    assert_eq!(
        delta("runtime_tap_bytes_total{intercept=\"echo\",direction=\"c2s\"}") as u64,
        echo.1
    );
    assert_eq!(
        delta("runtime_tap_bytes_total{intercept=\"echo\",direction=\"s2c\"}") as u64,
        echo.2
    );
    assert_eq!(echo.1, echo.2, "the echo returned every byte");
    for intercept in ["cri", "containerd-api", "dockerd", "echo"] {
        assert_eq!(
            after.get(&format!("runtime_tap_connections_active{{intercept=\"{intercept}\"}}")),
            Some(&0.0),
            "{intercept}: connections left open"
        );
    }

    // 4. RSS flat after warm-up.
    assert!(
        rss_summary.growth_kib <= RSS_GROWTH_BOUND_KIB,
        "RSS grew by {} KiB after warm-up (bound {RSS_GROWTH_BOUND_KIB} KiB): {rss_summary}",
        rss_summary.growth_kib
    );

    // 5. Descriptors back to the baseline.
    assert_eq!(
        fds_after, fds_before,
        "runtime-tap's descriptors besides its open connections, after vs before the soak"
    );
}

/// The span accounting on /metrics.
#[derive(Debug, Default, PartialEq)]
struct Accounts {
    calls: u64,
    events: u64,
    pods: u64,
    /// Per-layer spans of pulls (none here: the soak pulls nothing, but they are submitted).
    children: u64,
    /// CLIENT spans (none here: the soak runs with `client_spans` off, but they are submitted).
    clients: u64,
    submitted: u64,
    exported: u64,
    queue_full: u64,
    export_failed: u64,
    shutdown: u64,
    sampled_out: u64,
    not_sampled: u64,
    queued: u64,
}

impl Accounts {
    fn of(m: &BTreeMap<String, f64>) -> Accounts {
        let get = |s: &str| m.get(s).copied().unwrap_or_else(|| panic!("no {s} on /metrics")) as u64;
        let dropped = |r: &str| get(&format!("runtime_tap_spans_dropped_total{{reason=\"{r}\"}}"));
        Accounts {
            calls: get("runtime_tap_calls_total"),
            events: get("runtime_tap_event_spans_total"),
            pods: get("runtime_tap_pod_spans_total"),
            children: get("runtime_tap_child_spans_total"),
            clients: get("runtime_tap_client_spans_total"),
            submitted: get("runtime_tap_spans_submitted_total"),
            exported: get("runtime_tap_spans_exported_total"),
            queue_full: dropped("queue_full"),
            export_failed: dropped("export_failed"),
            shutdown: dropped("shutdown"),
            sampled_out: dropped("sampled_out"),
            not_sampled: dropped("not_sampled"),
            queued: get("runtime_tap_export_queue_spans"),
        }
    }

    fn balanced(&self) -> bool {
        self.queued == 0
            && self.calls + self.events + self.pods + self.children + self.clients
                == self.submitted + self.sampled_out + self.not_sampled
            && self.exported + self.queue_full + self.export_failed + self.shutdown == self.submitted
    }
}

/// Calls per (intercept, method) from the RED histogram's `_count` series, all statuses,
/// minus `base`.
fn red_counts(m: &BTreeMap<String, f64>, base: &BTreeMap<(String, String), u64>) -> BTreeMap<(String, String), u64> {
    let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (series, v) in m {
        let Some(labels) = series.strip_prefix("runtime_tap_call_duration_seconds_count{") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        *out.entry((label("intercept"), label("method"))).or_default() += *v as u64;
    }
    for (k, v) in out.iter_mut() {
        *v -= base.get(k).copied().unwrap_or(0);
    }
    out.retain(|_, v| *v > 0);
    out
}

/// RSS samples: start, after warm-up (the first third), end, max, and the growth over the
/// last third (its peak minus the middle third's).
struct RssSummary {
    samples: usize,
    start: u64,
    warm: u64,
    end: u64,
    max: u64,
    middle_max: u64,
    last_max: u64,
    growth_kib: u64,
}

impl RssSummary {
    fn of(samples: &[(Duration, u64)]) -> RssSummary {
        assert!(samples.len() >= 6, "too few RSS samples: {samples:?}");
        let third = samples.len() / 3;
        let kib: Vec<u64> = samples.iter().map(|s| s.1).collect();
        let middle_max = *kib[third..2 * third].iter().max().unwrap();
        let last_max = *kib[2 * third..].iter().max().unwrap();
        RssSummary {
            samples: kib.len(),
            start: kib[0],
            warm: kib[third],
            end: *kib.last().unwrap(),
            max: *kib.iter().max().unwrap(),
            middle_max,
            last_max,
            growth_kib: last_max.saturating_sub(middle_max),
        }
    }
}

impl std::fmt::Display for RssSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |k: u64| k as f64 / 1024.0;
        write!(
            f,
            "RSS (MiB)           start {:.1}, after warm-up {:.1}, end {:.1}, max {:.1}; peak of middle third {:.1}, of last third {:.1}: growth {:.2} ({} samples)",
            mib(self.start),
            mib(self.warm),
            mib(self.end),
            mib(self.max),
            mib(self.middle_max),
            mib(self.last_max),
            mib(self.growth_kib),
            self.samples
        )
    }
}

/// runtime-tap's descriptors besides the two of each open connection (dockerd opens and
/// closes its own connections to containerd when it likes) and its TCP sockets (the admin
/// endpoint, and the OTLP client's connections to the collector, whose pool grows with load
/// within its own bound): what the intercepts' connections leave behind.
fn fds_beside_connections(tap: &Tap) -> i64 {
    let pid = tap.pid();
    let tcp: Vec<String> = ["tcp", "tcp6"]
        .iter()
        .flat_map(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9).map(|i| format!("socket:[{i}]")))
                .collect::<Vec<_>>()
        })
        .collect();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| !tcp.contains(&l.display().to_string()))
                .count()
        })
        .unwrap_or(0) as i64;
    let active: f64 = tap
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("runtime_tap_connections_active{"))
        .map(|(_, v)| v)
        .sum();
    fds - 2 * active as i64
}

/// [`fds_beside_connections`] as it usually is over two seconds (the most frequent of 20
/// samples). One sample can catch a moment that is no leak: a connection accepted and not yet
/// connected upstream (one less), or a peer lookup of a new connection reading another
/// process's `/proc/<pid>/fd` beside the relay (one or two more); dockerd on containerd 2.x
/// opens connections while the baseline is taken, and a baseline of 18 against a steady 16
/// failed the run once.
fn usual_fds_beside_connections(tap: &Tap) -> i64 {
    let mut seen = std::collections::BTreeMap::<i64, usize>::new();
    for _ in 0..20 {
        *seen.entry(fds_beside_connections(tap)).or_default() += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    seen.into_iter()
        .max_by_key(|&(_, n)| n)
        .map(|(v, _)| v)
        .unwrap_or_default()
}

/// Waits (bounded) for [`fds_beside_connections`] to come back to `baseline`; its value then.
fn wait_fds(tap: &Tap, baseline: i64) -> i64 {
    let start = Instant::now();
    loop {
        let n = fds_beside_connections(tap);
        if n == baseline || start.elapsed() > Duration::from_secs(20) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Digests of every blob of the images in k8s.io (index, manifests, configs, layers),
/// following the image records from containerd's own socket.
async fn image_blobs(containerd: &Path) -> Vec<String> {
    let ns = [("containerd-namespace", "k8s.io")];
    let mut c = GrpcClient::connect(containerd).await;
    let images = c
        .unary("containerd.services.images.v1.Images/List", json!({}), &ns)
        .await
        .expect("Images/List");
    let mut todo: Vec<String> = images["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|i| i["target"]["digest"].as_str().map(str::to_string))
        .collect();
    let mut blobs = Vec::new();
    while let Some(d) = todo.pop() {
        if blobs.contains(&d) {
            continue;
        }
        let data = read_blob(&mut c, &d).await.expect("Content/Read");
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&data) {
            let mut refs: Vec<&serde_json::Value> = Vec::new();
            refs.extend(doc["manifests"].as_array().into_iter().flatten());
            refs.extend(doc["layers"].as_array().into_iter().flatten());
            refs.push(&doc["config"]);
            todo.extend(refs.iter().filter_map(|r| r["digest"].as_str().map(str::to_string)));
        }
        blobs.push(d);
    }
    assert!(blobs.len() >= 3, "image blobs: {blobs:?}");
    blobs
}

async fn read_blob(c: &mut GrpcClient, digest: &str) -> Result<Vec<u8>, String> {
    let replies = c
        .server_stream(
            "containerd.services.content.v1.Content/Read",
            json!({"digest": digest}),
            &[("containerd-namespace", "k8s.io")],
        )
        .await
        .map_err(|e| format!("Content/Read {digest}: {e}"))?;
    let mut data = Vec::new();
    for r in replies {
        if let Some(v) = r.get_field_by_name("data")
            && let Some(b) = v.as_bytes()
        {
            data.extend_from_slice(b);
        }
    }
    Ok(data)
}

/// CRI polls as kubelet makes them, back to back on one connection.
async fn cri_polls(ctx: Arc<Ctx>) {
    let mut c = GrpcClient::connect(&ctx.cri).await;
    while ctx.running() {
        for (method, req) in [
            (format!("{RS}/Version"), json!({})),
            (format!("{RS}/ListPodSandbox"), json!({})),
            (format!("{RS}/ListContainers"), json!({})),
            (format!("{IS}/ImageStatus"), json!({"image": {"image": PAUSE}})),
        ] {
            match c.unary(&method, req, &[]).await {
                Ok(_) => ctx.tally.ok("cri", &method),
                Err(e) => ctx.tally.err(format!("cri {method}: {e}")),
            }
        }
    }
}

/// Pod lifecycles: run a sandbox, create, start, stop and remove a container, stop and remove
/// the sandbox; a pause between cycles, as pods come and go on a node.
async fn cri_pods(ctx: Arc<Ctx>) {
    let mut c = GrpcClient::connect(&ctx.cri).await;
    let mut n = 0u64;
    while ctx.running() {
        n += 1;
        let name = format!("soak-{n}");
        let config = json!({
            "metadata": {"name": name, "namespace": "soak", "uid": format!("uid-{name}"), "attempt": 0},
            "log_directory": ctx.bed_dir.join("pods").join(&name),
            "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
        });
        let mut call = async |method: &str, req: serde_json::Value| {
            let method = format!("{RS}/{method}");
            match c.unary(&method, req, &[]).await {
                Ok(v) => {
                    ctx.tally.ok("cri", &method);
                    Some(v)
                }
                Err(e) => {
                    ctx.tally.err(format!("cri {method}: {e}"));
                    None
                }
            }
        };
        let Some(run) = call("RunPodSandbox", json!({"config": config})).await else {
            return;
        };
        let sandbox = run["podSandboxId"].as_str().unwrap_or_default().to_string();
        let create = json!({"pod_sandbox_id": sandbox, "config": {"metadata": {"name": "c"}, "image": {"image": PAUSE}, "command": ["/bin/echo", name], "log_path": "c.log"}, "sandbox_config": config});
        if let Some(created) = call("CreateContainer", create).await {
            let id = created["containerId"].as_str().unwrap_or_default().to_string();
            call("StartContainer", json!({"container_id": id})).await;
            // As kubelet does, stop only once the status says exited: a StopContainer racing
            // the task's own exit can fail inside containerd ("ttrpc: closed", its shim hop,
            // which runtime-tap does not see), seen once in 900 s.
            for _ in 0..200 {
                let status = call("ContainerStatus", json!({"container_id": id})).await;
                if status.is_none_or(|s| s["status"]["state"] == "CONTAINER_EXITED") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            call("StopContainer", json!({"container_id": id, "timeout": 1})).await;
            call("RemoveContainer", json!({"container_id": id})).await;
        }
        call("StopPodSandbox", json!({"pod_sandbox_id": sandbox})).await;
        call("RemovePodSandbox", json!({"pod_sandbox_id": sandbox})).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The containerd API: Version, Containers/List, and every image blob read back and hashed
/// against its digest. Responses stay protobuf: the JSON mapping cannot render containerd's
/// `Any` type URLs (`containerd.runc.v1.Options`, no `/`).
async fn containerd_api(ctx: Arc<Ctx>) {
    let ns = [("containerd-namespace", "k8s.io")];
    let mut c = GrpcClient::connect(&ctx.containerd_api).await;
    let mut i = 0;
    while ctx.running() {
        for method in [
            "containerd.services.version.v1.Version/Version",
            "containerd.services.containers.v1.Containers/List",
        ] {
            match c.server_stream(method, json!({}), &ns).await {
                Ok(_) => ctx.tally.ok("containerd-api", method),
                Err(e) => ctx.tally.err(format!("containerd {method}: {e}")),
            }
        }
        let digest = &ctx.blobs[i % ctx.blobs.len()];
        i += 1;
        match read_blob(&mut c, digest).await {
            Ok(data) => {
                ctx.tally
                    .ok("containerd-api", "containerd.services.content.v1.Content/Read");
                let got = format!("sha256:{}", hex(&Sha256::digest(&data)));
                ctx.tally
                    .check("containerd Content/Read", data.len(), &got == digest, || {
                        format!("{digest} read as {got}")
                    });
            }
            Err(e) => ctx.tally.err(e),
        }
    }
}

/// Docker's polls on a keep-alive connection, as a monitoring agent makes them.
async fn docker_polls(ctx: Arc<Ctx>) {
    let mut conn = match KeepAlive::connect(&ctx.docker).await {
        Ok(c) => c,
        Err(e) => return ctx.tally.err(format!("connect dockerd: {e}")),
    };
    while ctx.running() {
        for (path, route) in [
            ("/v1.41/_ping", "GET /_ping"),
            ("/v1.41/containers/json", "GET /containers/json"),
            ("/v1.41/images/json", "GET /images/json"),
        ] {
            match conn.get(path).await {
                Ok(r) if r.status == 200 && !r.body.is_empty() => ctx.tally.ok("dockerd", route),
                Ok(r) => ctx.tally.err(format!(
                    "{route}: status {} body {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )),
                Err(e) => return ctx.tally.err(format!("{route}: {e}")),
            }
        }
    }
}

/// `docker run --rm -i cat` with random stdin, its output hashed against it.
async fn docker_runs(ctx: Arc<Ctx>) {
    while ctx.running() {
        let size = rand::rng().random_range(1024..512 * 1024);
        docker_run(&ctx, size).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn docker_run(ctx: &Ctx, size: usize) {
    let mut input = vec![0u8; size];
    rand::rng().fill_bytes(&mut input);
    let mut cmd = tokio::process::Command::from(runtime_tap::bed::docker_command(&ctx.docker, &ctx.docker_config));
    cmd.args(["run", "--rm", "-i", "--network", "none", "bb:latest", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ctx.tally.err(format!("docker: {e}")),
    };
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&data).await;
    });
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => return ctx.tally.err(format!("docker run: {e}")),
    };
    let _ = writer.await;
    if !out.status.success() {
        return ctx.tally.err(format!(
            "docker run: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    *ctx.tally.docker_runs.lock().unwrap() += 1;
    ctx.tally
        .check("docker run -i cat", input.len(), out.stdout == input, || {
            format!("{} bytes in, {} out", input.len(), out.stdout.len())
        });
}

/// An opaque byte stream through the `echo` intercept: random bytes (after a first byte no
/// protocol starts with) written while the echo is read, both sides hashed.
async fn echo_streams(ctx: Arc<Ctx>) {
    while ctx.running() {
        let conn = match tokio::net::UnixStream::connect(&ctx.echo).await {
            Ok(c) => c,
            Err(e) => return ctx.tally.err(format!("connect echo: {e}")),
        };
        let (mut rd, mut wr) = conn.into_split();
        let total = rand::rng().random_range(64 * 1024..2 << 20);
        let writer = tokio::spawn(async move {
            let mut h = Sha256::new();
            let mut sent = 0;
            let mut chunk = vec![0u8; 16 * 1024];
            while sent < total {
                let n = chunk.len().min(total - sent);
                rand::rng().fill_bytes(&mut chunk[..n]);
                if sent == 0 {
                    chunk[0] = 0;
                }
                wr.write_all(&chunk[..n]).await?;
                h.update(&chunk[..n]);
                sent += n;
            }
            wr.shutdown().await?;
            Ok::<_, std::io::Error>((sent, h.finalize()))
        });
        let mut h = Sha256::new();
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let read = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    h.update(&buf[..n]);
                    got += n;
                }
                Err(e) => break Err(e),
            }
        };
        match (writer.await, read) {
            (Ok(Ok((sent, sent_hash))), Ok(())) => {
                let mut e = ctx.tally.echo.lock().unwrap();
                e.0 += 1;
                e.1 += sent as u64;
                e.2 += got as u64;
                drop(e);
                ctx.tally.check("opaque echo", sent, sent_hash == h.finalize(), || {
                    format!("{sent} bytes sent, {got} back")
                });
            }
            (w, r) => ctx.tally.err(format!("echo stream: write {w:?} read {r:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
