//! Each intercept's share of the one export queue. All intercepts share one queue and one
//! batching task (a trace's spans from dockerd and containerd leave in the same batch, which a
//! tail-sampling collector needs), so without shares a noisy intercept could fill the queue
//! and cost a quiet one its spans. Once the queue is half full, an intercept holding more
//! than its equal share has its new spans dropped (`queue_full`); below that, any intercept
//! may use the room.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Intercepts tracked; past this a service has no share of its own (it only meets the
/// queue's bound).
const SLOTS: usize = 32;

/// What [`Shares::admit`] decided.
pub enum Admission {
    /// Queue it; the slot it counts against, if its service has one.
    Admitted(Option<usize>),
    /// Its service holds more than its share of a queue at least half full: drop it.
    OverShare,
}

pub struct Shares {
    names: [OnceLock<Arc<str>>; SLOTS],
    queued: [AtomicU64; SLOTS],
    claimed: AtomicUsize,
    claim: Mutex<()>,
    capacity: u64,
}

impl Shares {
    pub fn new(capacity: usize) -> Shares {
        Shares {
            names: std::array::from_fn(|_| OnceLock::new()),
            queued: std::array::from_fn(|_| AtomicU64::new(0)),
            claimed: AtomicUsize::new(0),
            claim: Mutex::new(()),
            capacity: capacity as u64,
        }
    }

    /// The slot `service` has claimed, if any.
    fn find(&self, service: &Arc<str>) -> Option<usize> {
        let n = self.claimed.load(Ordering::Acquire);
        (0..n).find(|&i| {
            self.names[i]
                .get()
                .is_some_and(|s| Arc::ptr_eq(s, service) || **s == **service)
        })
    }

    /// The slot of `service`, claimed on its first span; `None` once every slot is taken.
    fn slot(&self, service: &Arc<str>) -> Option<usize> {
        if let Some(i) = self.find(service) {
            return Some(i);
        }
        // First span of this service: claim a slot (rare; once per intercept).
        let _guard = self.claim.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.find(service) {
            return Some(i);
        }
        let n = self.claimed.load(Ordering::Acquire);
        if n == SLOTS {
            return None;
        }
        let _ = self.names[n].set(Arc::clone(service));
        self.claimed.store(n + 1, Ordering::Release);
        Some(n)
    }

    /// Whether a span of `service` may be queued now that `queued` spans wait. An admitted
    /// span counts against its share until [`Shares::taken`] (or [`Shares::unadmit`]).
    pub fn admit(&self, service: &Arc<str>, queued: u64) -> Admission {
        let Some(slot) = self.slot(service) else {
            return Admission::Admitted(None);
        };
        let services = self.claimed.load(Ordering::Acquire).max(1) as u64;
        let mine = self.queued[slot].load(Ordering::Relaxed);
        if queued * 2 >= self.capacity && mine >= self.capacity / services {
            return Admission::OverShare;
        }
        self.queued[slot].fetch_add(1, Ordering::Relaxed);
        Admission::Admitted(Some(slot))
    }

    /// An admitted span was not queued after all.
    pub fn unadmit(&self, slot: Option<usize>) {
        if let Some(q) = slot.and_then(|i| self.queued.get(i)) {
            q.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The export task took a span of `service` off the queue.
    pub fn taken(&self, service: &Arc<str>) {
        if let Some(i) = self.find(service) {
            // Saturating: a span queued before its slot was claimed is not counted.
            let _ = self.queued[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_service_is_held_to_its_share_once_the_queue_is_half_full() {
        let shares = Shares::new(100);
        let (noisy, quiet): (Arc<str>, Arc<str>) = (Arc::from("dockerd"), Arc::from("containerd"));
        assert!(matches!(shares.admit(&quiet, 0), Admission::Admitted(Some(_))));
        let mut queued = 1;
        while let Admission::Admitted(_) = shares.admit(&noisy, queued) {
            queued += 1;
            assert!(queued <= 100);
        }
        assert_eq!(queued, 51, "the noisy one got its half, the queue is half full");
        assert!(matches!(shares.admit(&quiet, queued), Admission::Admitted(Some(_))));
        shares.taken(&noisy);
        assert!(matches!(shares.admit(&noisy, queued), Admission::Admitted(Some(_))));
    }

    #[test]
    fn alone_a_service_may_fill_the_queue() {
        let shares = Shares::new(10);
        let one: Arc<str> = Arc::from("containerd");
        for q in 0..10 {
            assert!(matches!(shares.admit(&one, q), Admission::Admitted(Some(0))));
        }
    }
}
