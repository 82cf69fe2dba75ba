//! Workload `growth`: runtime-tap alone (`tap-export`) under a long run of unary
//! `Version/Version` calls on one HTTP/2 connection, its RSS sampled every so many calls. The
//! claim it checks (issue 6): no growth over a 1,000,000-call run. Each sample is taken at
//! rest: after the spans of every call so far have arrived at the receiver (the export queue
//! empty), so spans waiting to go out are not mistaken for growth.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::meter::Meter;
use crate::otlp::Receiver;
use crate::procfs;
use crate::report::{dur, mib, percentile_us};
use crate::scrape::{self, TapCounters};
use crate::targets::{Relay, Target};
use crate::watch::Watch;
use crate::workloads;

/// Calls in flight on the one connection.
const CONCURRENCY: usize = 32;
/// Growth after the warm-up that still counts as none, KiB. 2 MiB over 900,000 calls would be
/// ~2.3 bytes a call: any per-call or per-stream leak is larger; the allocator's own steps
/// (arenas, freed pages not returned) are smaller.
pub const TOLERANCE_KIB: i64 = 2048;
/// Runs shorter than this get no verdict (`--quick`): runtime-tap's correlator keeps up to
/// 57,344 finished calls as parent candidates, so its memory still grows, by design, over
/// the first ~100,000 calls.
const MIN_CALLS_FOR_VERDICT: u64 = 200_000;
/// Before a sample: the spans so far must arrive, or stand still this long, at most the timeout.
const SPAN_QUIET: Duration = Duration::from_secs(1);
const SPAN_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the whole workload may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// The workload's size.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub calls: u64,
    /// RSS is sampled after every this many calls.
    pub sample_every: u64,
    /// Calls before the reference sample (a multiple of `sample_every`).
    pub warmup: u64,
}

impl Plan {
    pub fn description(self) -> String {
        format!(
            "containerd Version/Version through tap-export alone, {CONCURRENCY} in flight on one HTTP/2 connection, {} calls, RSS at rest every {} calls, growth counted after the first {}; run once",
            self.calls, self.sample_every, self.warmup
        )
    }
}

/// One RSS sample.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RssPoint {
    /// Calls made before the sample.
    pub calls: u64,
    /// The tree's summed VmRSS at rest, KiB.
    pub rss_kib: u64,
    /// Since the previous sample (every 100 ms): the largest tree RSS, KiB, and the deepest
    /// export queue, spans. None for the first sample.
    pub rss_between_peak_kib: Option<u64>,
    pub export_queue_peak: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GrowthReport {
    pub workload: String,
    pub description: String,
    pub target: String,
    pub error: Option<String>,
    pub calls_planned: u64,
    pub concurrency: usize,
    pub sample_every: u64,
    pub warmup_calls: u64,
    pub tolerance_kib: i64,
    pub calls_ok: u64,
    /// Time spent calling (the waits before each sample left out).
    pub elapsed_s: f64,
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// RSS before the connection, then after every `sample_every` calls.
    pub rss_idle_kib: Option<u64>,
    pub series: Vec<RssPoint>,
    pub rss_after_warmup_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// The largest RSS at rest in the series.
    pub rss_max_kib: Option<u64>,
    /// End minus after warm-up (negative: it shrank).
    pub growth_kib: Option<i64>,
    pub growth_per_100k_calls_kib: Option<f64>,
    /// The tree's VmHWM over the calls (reset at their start), and the sampler's largest RSS.
    pub rss_peak_kib: Option<u64>,
    pub relay_cpu_per_call_us: Option<f64>,
    pub spans_arrived: u64,
    /// runtime-tap's /metrics at the end (the whole run: no warm-up outside it).
    pub tap: TapCounters,
    /// Held: growth after the warm-up within `tolerance_kib`.
    pub held: bool,
    pub verdict: String,
}

impl GrowthReport {
    fn planned(plan: Plan) -> GrowthReport {
        GrowthReport {
            workload: "growth".into(),
            description: plan.description(),
            target: Target::TapExport.name().into(),
            calls_planned: plan.calls,
            concurrency: CONCURRENCY,
            sample_every: plan.sample_every,
            warmup_calls: plan.warmup,
            tolerance_kib: TOLERANCE_KIB,
            ..GrowthReport::default()
        }
    }
}

/// The report of a run that could not start (`error`: why).
pub fn not_run(plan: Plan, error: String) -> GrowthReport {
    let mut r = GrowthReport::planned(plan);
    r.error = Some(error);
    (r.held, r.verdict) = verdict(&r);
    r
}

/// Runs the workload against `relay` (tap-export, admin endpoint on `admin`).
pub fn run(
    rt: &tokio::runtime::Runtime,
    relay: &Relay,
    admin: SocketAddr,
    receiver: &Arc<Receiver>,
    plan: Plan,
) -> GrowthReport {
    let mut r = GrowthReport::planned(plan);
    r.rss_idle_kib = relay.pid().map(|p| procfs::tree_mem(&procfs::tree(p)).rss_kib);
    let (sock, pid, receiver) = (relay.socket.clone(), relay.pid(), receiver.clone());
    let result = workloads::run_bounded(rt, RUN_TIMEOUT, drive(sock, pid, admin, receiver, plan));
    match result {
        Ok(m) => m.fill(&mut r, plan),
        Err(e) => r.error = Some(format!("{e:#}")),
    }
    (r.held, r.verdict) = verdict(&r);
    r
}

struct Measured {
    latencies_ns: Vec<u64>,
    elapsed: Duration,
    series: Vec<RssPoint>,
    /// The calls stopped early on this failure (the series up to it is kept).
    failure: Option<String>,
    tap: TapCounters,
    cost: crate::meter::Cost,
}

impl Measured {
    fn fill(mut self, r: &mut GrowthReport, plan: Plan) {
        self.latencies_ns.sort_unstable();
        let ok = self.latencies_ns.len() as u64;
        r.error = self.failure.take();
        r.calls_ok = ok;
        r.elapsed_s = self.elapsed.as_secs_f64();
        r.rate = ok as f64 / r.elapsed_s;
        r.p50_us = percentile_us(&self.latencies_ns, 50.0);
        r.p99_us = percentile_us(&self.latencies_ns, 99.0);
        let after_warmup = self.series.iter().find(|p| p.calls >= plan.warmup && p.calls > 0);
        let end = self.series.last().filter(|p| p.calls > plan.warmup);
        r.rss_after_warmup_kib = after_warmup.map(|p| p.rss_kib);
        r.rss_end_kib = self.series.last().map(|p| p.rss_kib);
        r.rss_max_kib = self.series.iter().map(|p| p.rss_kib).max();
        if let (Some(a), Some(e)) = (after_warmup, end) {
            let growth = e.rss_kib as i64 - a.rss_kib as i64;
            r.growth_kib = Some(growth);
            r.growth_per_100k_calls_kib = Some(growth as f64 * 100_000.0 / (e.calls - a.calls) as f64);
        }
        r.series = self.series;
        r.rss_peak_kib = self.cost.rss_peak_kib;
        r.relay_cpu_per_call_us = self.cost.cpu_s.map(|s| s * 1e6 / ok.max(1) as f64);
        r.spans_arrived = self.cost.spans.unwrap_or(0);
        r.tap = self.tap;
    }
}

fn tree_rss_kib(pid: Option<u32>) -> u64 {
    pid.map_or(0, |p| procfs::tree_mem(&procfs::tree(p)).rss_kib)
}

/// Connects, then calls in slices of `sample_every`, an RSS sample at rest after each.
async fn drive(
    sock: PathBuf,
    pid: Option<u32>,
    admin: SocketAddr,
    receiver: Arc<Receiver>,
    plan: Plan,
) -> anyhow::Result<Measured> {
    let (send, driver) = workloads::h2_connect(&sock).await?;
    let mut meter = Meter::new(pid, Some(receiver.clone()));
    let spans_before = receiver.spans();
    let mut series = vec![RssPoint {
        calls: 0,
        rss_kib: tree_rss_kib(pid),
        rss_between_peak_kib: None,
        export_queue_peak: None,
    }];
    meter.begin();
    let watch = pid.map(|p| Watch::start(p, admin));
    let mut latencies_ns = Vec::with_capacity(plan.calls as usize);
    let mut elapsed = Duration::ZERO;
    let mut failure = None;
    let mut done = 0;
    while done < plan.calls {
        let n = plan.sample_every.min(plan.calls - done);
        let t = Instant::now();
        let slice = workloads::version_batch(&send, CONCURRENCY, n).await;
        elapsed += t.elapsed();
        match slice {
            Ok(l) => latencies_ns.extend(l),
            Err(e) => {
                failure = Some(format!("after {done} calls: {e:#}"));
                break;
            }
        }
        done += n;
        let rss_kib = tokio::task::block_in_place(|| {
            receiver.settle(spans_before, done, SPAN_QUIET, SPAN_TIMEOUT);
            tree_rss_kib(pid)
        });
        let between = watch.as_ref().map(Watch::take);
        series.push(RssPoint {
            calls: done,
            rss_kib,
            rss_between_peak_kib: between.map(|b| b.rss_kib),
            export_queue_peak: between.map(|b| b.export_queue),
        });
        eprintln!(
            "  growth: {done} calls, RSS at rest {:.1} MiB (peak since the last sample {:.1} MiB, export queue peak {})",
            rss_kib as f64 / 1024.0,
            between.map_or(0, |b| b.rss_kib) as f64 / 1024.0,
            between.map_or(0, |b| b.export_queue)
        );
    }
    drop(watch);
    let tap = tokio::task::block_in_place(|| {
        meter.end(done);
        scrape::settle(admin, SETTLE_TIMEOUT)
    })?
    .0;
    drop(send);
    driver.abort();
    let _ = driver.await;
    tokio::task::block_in_place(|| meter.closed());
    Ok(Measured {
        latencies_ns,
        elapsed,
        series,
        failure,
        tap,
        cost: meter.cost.clone(),
    })
}

/// Held when RSS after the warm-up grew by at most [`TOLERANCE_KIB`] by the end.
fn verdict(r: &GrowthReport) -> (bool, String) {
    let Some(growth) = r.growth_kib else {
        return (
            false,
            format!(
                "not measured: {}",
                r.error.as_deref().unwrap_or("no sample after the warm-up")
            ),
        );
    };
    let mut text = format!(
        "{:+} KiB from {} to {} calls ({:+.0} KiB per 100k calls), tolerance {} KiB",
        growth,
        r.warmup_calls,
        r.series.last().map_or(0, |p| p.calls),
        r.growth_per_100k_calls_kib.unwrap_or(0.0),
        r.tolerance_kib
    );
    if let Some(e) = &r.error {
        text += &format!("; stopped early: {e}");
    }
    if r.spans_arrived != r.calls_ok {
        text += &format!("; {} spans arrived for {} calls", r.spans_arrived, r.calls_ok);
    }
    if r.calls_planned < MIN_CALLS_FOR_VERDICT {
        return (
            false,
            format!("not judged (a run this short ends while the working set still fills): {text}"),
        );
    }
    let held = growth <= r.tolerance_kib && r.error.is_none();
    (held, format!("{}: {text}", if held { "held" } else { "not held" }))
}

/// The workload's table, as printed: the figures, then the series.
pub fn table(r: &GrowthReport) -> String {
    let mut s = format!("== {}: {} ==\n", r.workload, r.description);
    if r.series.is_empty() {
        return s + &format!("{:<11} error: {}\n", r.target, r.error.clone().unwrap_or_default());
    }
    s += &format!(
        "{:<11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}  {}\n",
        "target",
        "calls",
        "calls/s",
        "p50",
        "p99",
        "CPU/call",
        "RSSidle",
        "RSSwarm",
        "RSSend",
        "RSSmax",
        "RSSpeak",
        "growth",
        "per 100k",
        "spans arrived"
    );
    s += &format!(
        "{:<11} {:>8} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}  {}/{}\n",
        r.target,
        r.calls_ok,
        r.rate,
        dur(Some(r.p50_us)),
        dur(Some(r.p99_us)),
        r.relay_cpu_per_call_us.map_or("-".into(), |us| format!("{us:.1}µs")),
        mib(r.rss_idle_kib),
        mib(r.rss_after_warmup_kib),
        mib(r.rss_end_kib),
        mib(r.rss_max_kib),
        mib(r.rss_peak_kib),
        r.growth_kib.map_or("-".into(), |g| format!("{g:+}KiB")),
        r.growth_per_100k_calls_kib
            .map_or("-".into(), |g| format!("{g:+.0}KiB")),
        r.spans_arrived,
        r.calls_ok
    );
    s += &format!(
        "{:>9} {:>12} {:>14} {:>12}\n",
        "calls", "RSS at rest", "peak between", "queue peak"
    );
    let kib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{k} KiB"));
    for p in &r.series {
        s += &format!(
            "{:>9} {:>12} {:>14} {:>12}\n",
            p.calls,
            kib(Some(p.rss_kib)),
            kib(p.rss_between_peak_kib),
            p.export_queue_peak.map_or("-".into(), |q| q.to_string())
        );
    }
    s += &format!(
        "runtime-tap /metrics: calls {}, spans submitted {}, exported {}, dropped {} ({})\n",
        r.tap.calls,
        r.tap.spans_submitted,
        r.tap.spans_exported,
        r.tap.dropped(),
        TapCounters::by_reason(&r.tap.spans_dropped)
    );
    s += &format!("verdict: {}\n", r.verdict);
    s
}
