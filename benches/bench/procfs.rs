//! What the kernel says a relay costs: CPU time (utime+stime, plus the reaped children's
//! cutime+cstime) and memory (VmRSS, VmHWM, Pss) summed over a process tree found by parent
//! pid in /proc (this kernel has no /proc/<pid>/task/*/children).

use std::collections::HashMap;

/// `USER_HZ`: /proc reports times in 1/100 s on every Linux architecture we run on.
pub const TICKS_PER_SEC: f64 = 100.0;

/// Every live pid whose ancestry leads to `root`, `root` first.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(st) = stat(pid) {
                children.entry(st.ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied());
        }
        i += 1;
    }
    out
}

/// The fields of /proc/<pid>/stat we use.
pub struct Stat {
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in ticks.
    pub cpu_ticks: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: n(4)? as u32,
        cpu_ticks: n(14)? + n(15)? + n(16)? + n(17)?,
    })
}

/// CPU ticks of the whole tree (live processes; reaped children are in their parent's cutime).
pub fn tree_cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| stat(*p)).map(|s| s.cpu_ticks).sum()
}

/// Memory of one process, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem(pid: u32) -> Option<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut m = Mem::default();
    for line in s.lines() {
        let kib = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if line.starts_with("VmRSS:") {
            m.rss_kib = kib();
        } else if line.starts_with("VmHWM:") {
            m.hwm_kib = kib();
        }
    }
    Some(m)
}

/// Summed over the tree.
pub fn tree_mem(pids: &[u32]) -> Mem {
    pids.iter().filter_map(|p| mem(*p)).fold(Mem::default(), |a, m| Mem {
        rss_kib: a.rss_kib + m.rss_kib,
        hwm_kib: a.hwm_kib + m.hwm_kib,
    })
}

/// Proportional set size summed over the tree (shared pages split between sharers), KiB.
pub fn tree_pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Resets VmHWM to the current RSS for every process of the tree (`echo 5 > clear_refs`,
/// Linux 4.0+), so a run's peak is its own. False when the kernel refused.
pub fn reset_peak(pids: &[u32]) -> bool {
    pids.iter()
        .all(|p| std::fs::write(format!("/proc/{p}/clear_refs"), "5").is_ok())
}

/// CPU ticks of this process (the benchmark's client side), threads included.
pub fn self_cpu_ticks() -> u64 {
    stat(std::process::id()).map_or(0, |s| s.cpu_ticks)
}

/// Samples the tree's summed VmRSS every `period` on a thread until stopped; the largest sum.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    pub fn start(root: u32, period: std::time::Duration) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(tree_mem(&tree(root)).rss_kib);
                std::thread::sleep(period);
            }
            peak
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the largest tree RSS seen, KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}
