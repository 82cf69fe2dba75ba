//! Workload `accounting`: runtime-tap alone (`tap-export`: decoding and OTLP export on, the
//! export queue at its defaults) under unary `Version/Version` calls paced open-loop at a fixed
//! rate. The claim it checks (issue 6): every call is exported or counted as dropped, and at
//! that rate none is dropped. Pacing is by schedule, not by answers: call `i` is due at
//! `i / rate` from the start, a tick every [`TICK`] sends every call due by then (a late tick
//! catches up), so a slow relay shows as a lower achieved rate and a longer issue lag instead
//! of silently slowing the client down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::meter::Meter;
use crate::otlp::Receiver;
use crate::report::{dur, mib, percentile_us};
use crate::scrape::{self, TapCounters};
use crate::targets::{Relay, Target};
use crate::watch::Watch;
use crate::workloads::{self, H2};

/// The pacing tick: calls due are sent in bursts at most this far apart.
const TICK: Duration = Duration::from_millis(1);
/// HTTP/2 connections the calls go over, round robin (a node's clients share one or a few).
const CONNECTIONS: usize = 2;
/// Calls allowed in flight at once, over all connections: far above what the rate needs
/// (10,000 calls/s at ~0.2 ms is ~2 in flight), so the client is never the limit. Reaching it
/// would hold the pacing back and show as issue lag.
const MAX_IN_FLIGHT: usize = 4096;
/// Untimed calls per connection before the paced part (their spans are waited for and left
/// out of the counts).
const WARMUP_CALLS: u64 = 100;
/// How long runtime-tap's counts may take to settle after the calls (export queue empty).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Span waits around the warm-up.
const SPAN_QUIET: Duration = Duration::from_secs(1);
const SPAN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the whole workload may take past its planned duration.
const OVERRUN: Duration = Duration::from_secs(120);

/// The workload's size.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Calls per second asked.
    pub rate: u64,
    pub duration: Duration,
}

impl Plan {
    pub fn calls(self) -> u64 {
        (self.rate as f64 * self.duration.as_secs_f64()).round() as u64
    }

    pub fn description(self) -> String {
        format!(
            "containerd Version/Version through tap-export alone, open loop at {} calls/s for {} s ({} calls) on {CONNECTIONS} HTTP/2 connections, a tick every {} ms; run once",
            self.rate,
            self.duration.as_secs(),
            self.calls(),
            TICK.as_millis()
        )
    }
}

/// What the run did and what runtime-tap says about it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AccountingReport {
    pub workload: String,
    pub description: String,
    pub target: String,
    /// The run could not be made (relay, connection or scrape failure).
    pub error: Option<String>,
    pub rate_asked: u64,
    pub duration_s: f64,
    pub connections: usize,
    pub max_in_flight: usize,
    pub calls_issued: u64,
    pub calls_ok: u64,
    pub calls_failed: u64,
    pub first_failure: Option<String>,
    /// From the first due time to the last answer.
    pub elapsed_s: f64,
    /// Ok calls per second over `elapsed_s`.
    pub rate: f64,
    /// How late calls started against their due time (tick granularity, runtime scheduling,
    /// the in-flight cap): p99 and max, µs.
    pub issue_lag_p99_us: f64,
    pub issue_lag_max_us: f64,
    /// Most calls in flight at once.
    pub in_flight_peak: usize,
    /// Latency per ok call, from its start to its trailers.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Spans the benchmark's OTLP receiver got for the paced calls.
    pub spans_arrived: u64,
    /// runtime-tap's /metrics for the paced calls (after minus before; the queue as it ended).
    pub tap: TapCounters,
    /// runtime-tap's export caught up (queue empty, submitted = exported + dropped) in time.
    pub tap_settled: bool,
    /// Deepest export queue seen during the paced calls (/metrics every 100 ms), and the
    /// default queue's capacity it is measured against (runtime-tap's `DEFAULT_MAX_QUEUE`).
    pub export_queue_peak: Option<u64>,
    pub export_queue_capacity: usize,
    pub relay_cpu_s: Option<f64>,
    pub relay_cpu_per_call_us: Option<f64>,
    pub client_cpu_per_call_us: f64,
    pub rss_idle_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// Spans arrived = ok calls and nothing dropped.
    pub held: bool,
    pub verdict: String,
}

impl AccountingReport {
    fn planned(plan: Plan) -> AccountingReport {
        AccountingReport {
            workload: "accounting".into(),
            description: plan.description(),
            target: Target::TapExport.name().into(),
            rate_asked: plan.rate,
            duration_s: plan.duration.as_secs_f64(),
            connections: CONNECTIONS,
            max_in_flight: MAX_IN_FLIGHT,
            export_queue_capacity: runtime_tap::trace::export::DEFAULT_MAX_QUEUE,
            ..AccountingReport::default()
        }
    }
}

/// The report of a run that could not start (`error`: why).
pub fn not_run(plan: Plan, error: String) -> AccountingReport {
    let mut r = AccountingReport::planned(plan);
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
) -> AccountingReport {
    let mut r = AccountingReport::planned(plan);
    r.rss_idle_kib = relay
        .pid()
        .map(|p| crate::procfs::tree_mem(&crate::procfs::tree(p)).rss_kib);
    let (sock, pid, receiver) = (relay.socket.clone(), relay.pid(), receiver.clone());
    let result = workloads::run_bounded(rt, plan.duration + OVERRUN, drive(sock, pid, admin, receiver, plan));
    match result {
        Ok(m) => m.fill(&mut r),
        Err(e) => r.error = Some(format!("{e:#}")),
    }
    (r.held, r.verdict) = verdict(&r);
    r
}

/// What `drive` measured.
struct Measured {
    paced: Paced,
    spans: u64,
    tap: TapCounters,
    tap_settled: bool,
    export_queue_peak: Option<u64>,
    cost: crate::meter::Cost,
}

impl Measured {
    fn fill(mut self, r: &mut AccountingReport) {
        let p = &mut self.paced;
        p.latencies_ns.sort_unstable();
        p.lags_ns.sort_unstable();
        let ok = p.latencies_ns.len() as u64;
        r.calls_issued = p.issued;
        r.calls_ok = ok;
        r.calls_failed = p.failed;
        r.first_failure = p.first_failure.clone();
        r.elapsed_s = p.elapsed.as_secs_f64();
        r.rate = ok as f64 / r.elapsed_s;
        r.issue_lag_p99_us = percentile_us(&p.lags_ns, 99.0);
        r.issue_lag_max_us = percentile_us(&p.lags_ns, 100.0);
        r.in_flight_peak = p.in_flight_peak;
        r.p50_us = percentile_us(&p.latencies_ns, 50.0);
        r.p90_us = percentile_us(&p.latencies_ns, 90.0);
        r.p99_us = percentile_us(&p.latencies_ns, 99.0);
        r.max_us = percentile_us(&p.latencies_ns, 100.0);
        r.spans_arrived = self.spans;
        r.tap = self.tap;
        r.tap_settled = self.tap_settled;
        r.export_queue_peak = self.export_queue_peak;
        r.relay_cpu_s = self.cost.cpu_s;
        r.relay_cpu_per_call_us = self.cost.cpu_s.map(|s| s * 1e6 / p.issued.max(1) as f64);
        r.client_cpu_per_call_us = self.cost.client_cpu_s * 1e6 / p.issued.max(1) as f64;
        r.rss_peak_kib = self.cost.rss_peak_kib;
        r.rss_end_kib = self.cost.rss_end_kib;
    }
}

/// Connects, warms up, takes runtime-tap's counts as the baseline, runs the paced calls,
/// waits for the spans and for runtime-tap's counts to settle, then closes.
async fn drive(
    sock: PathBuf,
    pid: Option<u32>,
    admin: SocketAddr,
    receiver: Arc<Receiver>,
    plan: Plan,
) -> anyhow::Result<Measured> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    let mut drivers = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let (send, driver) = workloads::h2_connect(&sock).await?;
        conns.push(send);
        drivers.push(driver);
    }
    let before_warmup = receiver.spans();
    for send in &conns {
        workloads::version_batch(send, 1, WARMUP_CALLS)
            .await
            .context("warm-up")?;
    }
    // The warm-up's spans out and counted, so that what follows is the paced calls' alone.
    let (baseline, mut meter) = tokio::task::block_in_place(|| {
        receiver.settle(
            before_warmup,
            WARMUP_CALLS * CONNECTIONS as u64,
            SPAN_QUIET,
            SPAN_TIMEOUT,
        );
        let (baseline, _) = scrape::settle(admin, SETTLE_TIMEOUT)?;
        anyhow::Ok((baseline, Meter::new(pid, Some(receiver.clone()))))
    })?;
    meter.begin();
    let watch = pid.map(|p| Watch::start(p, admin));
    let paced = paced(&conns, plan).await?;
    let export_queue_peak = watch.map(|w| w.take().export_queue);
    let (tap, tap_settled) = tokio::task::block_in_place(|| {
        meter.end(paced.issued);
        scrape::settle(admin, SETTLE_TIMEOUT)
    })?;
    drop(conns);
    for d in drivers {
        d.abort();
        let _ = d.await;
    }
    tokio::task::block_in_place(|| meter.closed());
    Ok(Measured {
        spans: meter.cost.spans.unwrap_or(0),
        tap: tap.since(&baseline),
        tap_settled,
        export_queue_peak,
        cost: meter.cost.clone(),
        paced,
    })
}

/// The paced part's raw figures.
#[derive(Default)]
struct Paced {
    issued: u64,
    failed: u64,
    first_failure: Option<String>,
    /// Per ok call, ns.
    latencies_ns: Vec<u64>,
    /// Per call, how late it started against its due time, ns.
    lags_ns: Vec<u64>,
    in_flight_peak: usize,
    /// From the start (call 0's due time) to the last answer.
    elapsed: Duration,
}

/// Sends `plan.calls()` Version calls, call `i` due at `i / rate` from the start, spread
/// round robin over `conns`; returns once every call has answered.
async fn paced(conns: &[H2], plan: Plan) -> anyhow::Result<Paced> {
    let total = plan.calls();
    let rate = plan.rate as f64;
    let tally = Arc::new(Mutex::new(Paced {
        latencies_ns: Vec::with_capacity(total as usize),
        lags_ns: Vec::with_capacity(total as usize),
        ..Paced::default()
    }));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut in_flight_peak = 0;
    let mut tick = tokio::time::interval(TICK);
    // A late tick sends everything due by then; the ticks it missed are not replayed.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut issued: u64 = 0;
    while issued < total {
        tick.tick().await;
        // Call i is due at i / rate: calls 0..=floor(t * rate) are due by t.
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while issued < due {
            let slot = slots.clone().acquire_owned().await?;
            in_flight_peak = in_flight_peak.max(MAX_IN_FLIGHT - slots.available_permits());
            let due_at = Duration::from_secs_f64(issued as f64 / rate);
            let send = conns[issued as usize % conns.len()].clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let lag = t.duration_since(start).saturating_sub(due_at);
                let result = workloads::version(&send).await;
                let latency = t.elapsed();
                let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                tally.lags_ns.push(lag.as_nanos() as u64);
                match result {
                    Ok(()) => tally.latencies_ns.push(latency.as_nanos() as u64),
                    Err(e) => {
                        tally.failed += 1;
                        tally.first_failure.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                tally.elapsed = tally.elapsed.max(start.elapsed());
                drop(slot);
            });
            issued += 1;
        }
    }
    // Every call answered: all the slots are back.
    let _all = slots.acquire_many(MAX_IN_FLIGHT as u32).await?;
    let mut p = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    p.issued = issued;
    p.in_flight_peak = in_flight_peak;
    Ok(p)
}

/// Held when every ok call arrived as one span and runtime-tap dropped none; otherwise which.
fn verdict(r: &AccountingReport) -> (bool, String) {
    if let Some(e) = &r.error {
        return (false, format!("not measured: {e}"));
    }
    let mut why = Vec::new();
    if r.spans_arrived != r.calls_ok {
        why.push(format!("{} spans arrived for {} ok calls", r.spans_arrived, r.calls_ok));
    }
    if r.tap.dropped() > 0 {
        why.push(format!(
            "{} dropped ({})",
            r.tap.dropped(),
            TapCounters::by_reason(&r.tap.spans_dropped)
        ));
    }
    let give_ups: u64 = r.tap.tap_give_ups.values().sum();
    if give_ups > 0 {
        why.push(format!(
            "decoding given up on {give_ups} connection(s) ({})",
            TapCounters::by_reason(&r.tap.tap_give_ups)
        ));
    }
    let mut notes = Vec::new();
    if r.rate < 0.99 * r.rate_asked as f64 {
        notes.push(format!(
            "at {:.0} calls/s achieved, short of the {} asked",
            r.rate, r.rate_asked
        ));
    }
    if r.calls_failed > 0 {
        notes.push(format!(
            "{} calls failed (first: {})",
            r.calls_failed,
            r.first_failure.as_deref().unwrap_or("")
        ));
    }
    if !r.tap_settled {
        notes.push("runtime-tap's export had not caught up when counted".into());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    if why.is_empty() {
        (
            true,
            format!(
                "held: each of the {} ok calls arrived as one span, none dropped{notes}",
                r.calls_ok
            ),
        )
    } else {
        (false, format!("not held: {}{notes}", why.join("; ")))
    }
}

/// The workload's table, as printed.
pub fn table(r: &AccountingReport) -> String {
    let mut s = format!("== {}: {} ==\n", r.workload, r.description);
    if let Some(e) = &r.error {
        return s + &format!("{:<11} error: {e}\n", r.target);
    }
    s += &format!(
        "{:<11} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
        "target",
        "issued",
        "ok",
        "failed",
        "calls/s",
        "p50",
        "p99",
        "lag p99",
        "lag max",
        "CPU/call",
        "RSSidle",
        "RSSpeak",
        "spans arrived"
    );
    s += &format!(
        "{:<11} {:>8} {:>8} {:>6} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}/{}\n",
        r.target,
        r.calls_issued,
        r.calls_ok,
        r.calls_failed,
        r.rate,
        dur(Some(r.p50_us)),
        dur(Some(r.p99_us)),
        dur(Some(r.issue_lag_p99_us)),
        dur(Some(r.issue_lag_max_us)),
        r.relay_cpu_per_call_us.map_or("-".into(), |us| format!("{us:.1}µs")),
        mib(r.rss_idle_kib),
        mib(r.rss_peak_kib),
        r.spans_arrived,
        r.calls_ok
    );
    let t = &r.tap;
    s += &format!(
        "runtime-tap /metrics for these calls: calls {} (incomplete {}), spans submitted {}, exported {}, dropped {} ({}), export queue peak {} of {} (at end {}), tap give-ups {}{}\n",
        t.calls,
        t.calls_incomplete,
        t.spans_submitted,
        t.spans_exported,
        t.dropped(),
        TapCounters::by_reason(&t.spans_dropped),
        r.export_queue_peak.map_or("-".into(), |q| q.to_string()),
        r.export_queue_capacity,
        t.export_queue,
        TapCounters::by_reason(&t.tap_give_ups),
        if r.tap_settled { "" } else { " (not settled)" }
    );
    s += &format!("verdict: {}\n", r.verdict);
    s
}
