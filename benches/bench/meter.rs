//! What one run costs the relay: CPU ticks of its process tree between `begin` and `end`,
//! its peak memory over the run, its memory at `end`, and (decoding and export on) the spans
//! the receiver got for the run's calls.

use std::sync::Arc;
use std::time::Duration;

use crate::otlp::Receiver;
use crate::procfs;

/// RSS sampling period during a run (the peak is also read from VmHWM, reset at `begin`).
const SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// How long the span count must stand still before a run's export is taken as done.
const SPAN_QUIET: Duration = Duration::from_millis(1000);
const SPAN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub struct Cost {
    /// CPU seconds of the relay tree over the run; none for the direct socket.
    pub cpu_s: Option<f64>,
    /// CPU seconds of the benchmark process over the run (client, receiver, sampler).
    pub client_cpu_s: f64,
    /// Largest of: the summed VmHWM of the tree at `end` (reset at `begin`), and the largest
    /// summed VmRSS the sampler saw. KiB.
    pub rss_peak_kib: Option<u64>,
    /// Summed VmRSS at `end`, connections still open. KiB.
    pub rss_end_kib: Option<u64>,
    /// Summed Pss at `end` (socat's children share most pages). KiB.
    pub pss_end_kib: Option<u64>,
    /// Processes in the tree at `end`.
    pub procs_end: Option<usize>,
    /// Spans received for the run (decoding and export on only), and how many calls it made.
    pub spans: Option<u64>,
    pub expected_spans: Option<u64>,
    /// Of `spans`, those that arrived only after the client closed its connections.
    pub spans_after_close: Option<u64>,
    pub peak_reset: bool,
    /// Processes in the tree before the run (socat and nginx: before any connection).
    pub procs_base: usize,
}

pub struct Meter {
    pid: Option<u32>,
    receiver: Option<Arc<Receiver>>,
    spans_before: u64,
    cpu_start: u64,
    client_start: u64,
    sampler: Option<procfs::Sampler>,
    pub cost: Cost,
}

impl Meter {
    /// A meter for the relay `pid` (none: direct). With `receiver`, spans are counted from now.
    pub fn new(pid: Option<u32>, receiver: Option<Arc<Receiver>>) -> Meter {
        let spans_before = receiver.as_ref().map_or(0, |r| r.spans());
        Meter {
            pid,
            receiver,
            spans_before,
            cpu_start: 0,
            client_start: 0,
            sampler: None,
            cost: Cost::default(),
        }
    }

    /// The timed part starts.
    pub fn begin(&mut self) {
        self.client_start = procfs::self_cpu_ticks();
        if let Some(pid) = self.pid {
            let pids = procfs::tree(pid);
            self.cost.peak_reset = procfs::reset_peak(&pids);
            self.cost.procs_base = pids.len();
            self.sampler = Some(procfs::Sampler::start(pid, SAMPLE_PERIOD));
            self.cpu_start = procfs::tree_cpu_ticks(&pids);
        }
    }

    /// The timed part ended, connections still open: wait for the run's spans (`calls` were
    /// made since `new`) and read the relay's memory.
    pub fn end(&mut self, calls: u64) {
        if let Some(r) = &self.receiver {
            self.cost.spans = Some(r.settle(self.spans_before, calls, SPAN_QUIET, SPAN_TIMEOUT));
            self.cost.expected_spans = Some(calls);
        }
        if let Some(pid) = self.pid {
            let pids = procfs::tree(pid);
            let mem = procfs::tree_mem(&pids);
            let sampled = self.sampler.take().map_or(0, procfs::Sampler::finish);
            self.cost.rss_peak_kib = Some(mem.hwm_kib.max(sampled).max(mem.rss_kib));
            self.cost.rss_end_kib = Some(mem.rss_kib);
            self.cost.pss_end_kib = Some(procfs::tree_pss_kib(&pids));
            self.cost.procs_end = Some(pids.len());
        }
    }

    /// The client closed its connections: spans that only come at close (counted apart), then
    /// the CPU the run cost, teardown and deferred export included.
    pub fn closed(&mut self) {
        if let (Some(r), Some(expected), Some(got)) = (&self.receiver, self.cost.expected_spans, self.cost.spans)
            && got < expected
        {
            let after = r.settle(self.spans_before, expected, SPAN_QUIET, SPAN_TIMEOUT);
            self.cost.spans_after_close = Some(after - got);
            self.cost.spans = Some(after);
        }
        if let Some(pid) = self.pid {
            // socat's child ends after the connection: its CPU moves to the parent's cutime
            // once reaped. Give it the moment.
            let start = std::time::Instant::now();
            while procfs::tree(pid).len() > self.cost.procs_base && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let cpu = procfs::tree_cpu_ticks(&procfs::tree(pid));
            self.cost.cpu_s = Some(cpu.saturating_sub(self.cpu_start) as f64 / procfs::TICKS_PER_SEC);
        }
        self.cost.client_cpu_s =
            procfs::self_cpu_ticks().saturating_sub(self.client_start) as f64 / procfs::TICKS_PER_SEC;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(s) = self.sampler.take() {
            s.finish();
        }
    }
}
