//! While runtime-tap runs alone: the depth of its export queue (from /metrics) and its tree's
//! RSS, read every [`PERIOD`] on a thread, the peaks kept since the last look. They tell a
//! step in RSS at rest from a backlog that came and went (glibc keeps the pages a burst took).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{procfs, scrape};

/// Between two looks.
const PERIOD: Duration = Duration::from_millis(100);

/// Peaks since the last [`Watch::take`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Peaks {
    /// Spans waiting in the export queue (`runtime_tap_export_queue_spans`).
    pub export_queue: u64,
    /// The tree's summed VmRSS, KiB.
    pub rss_kib: u64,
}

pub struct Watch {
    stop: Arc<AtomicBool>,
    queue: Arc<AtomicU64>,
    rss: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Watches the tree of `pid` and the admin endpoint `admin` (a failed scrape is skipped).
    pub fn start(pid: u32, admin: SocketAddr) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let queue = Arc::new(AtomicU64::new(0));
        let rss = Arc::new(AtomicU64::new(0));
        let (s, q, r) = (stop.clone(), queue.clone(), rss.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(c) = scrape::scrape(admin) {
                    q.fetch_max(c.export_queue, Ordering::Relaxed);
                }
                r.fetch_max(procfs::tree_mem(&procfs::tree(pid)).rss_kib, Ordering::Relaxed);
                std::thread::sleep(PERIOD);
            }
        });
        Watch {
            stop,
            queue,
            rss,
            handle: Some(handle),
        }
    }

    /// The peaks since the last take (or the start); starts the next interval.
    pub fn take(&self) -> Peaks {
        Peaks {
            export_queue: self.queue.swap(0, Ordering::Relaxed),
            rss_kib: self.rss.swap(0, Ordering::Relaxed),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
