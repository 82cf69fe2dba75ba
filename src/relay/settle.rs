//! The first step of the shutdown drain: wait, still accepting and changing no byte, until no
//! connection other than HTTP/2 has something under way (an HTTP/1.1 exchange, a switched
//! protocol such as docker attach, an opaque stream), bounded by half the grace period; only
//! then does runtime-tap stop accepting and the drain proper begin (`wire::drain`:
//! `Connection: close`, GOAWAY).
//!
//! Why the order: a service manager starts the next process only once this one has exited,
//! and new connections wait in the listening socket meanwhile. A `docker run` in progress
//! holds an attach session that ends only when its container does, which takes dockerd's
//! calls to containerd; told to go away (GOAWAY) while the process lingers, dockerd's new
//! connection would wait in the socket, and dockerd gives a new connection one second to get
//! containerd's SETTINGS before failing every call for a while. And the run's `wait` holds
//! one CLI connection while its `start` needs a new one, which must still be accepted. So
//! every client is served as before (HTTP/1 keep-alive kept, new connections accepted) until
//! the rest has settled; then everything is drained at once and the process exits within
//! milliseconds.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct Counts {
    /// Connections accepted and not ended.
    open: usize,
    /// Of those, how many have said whether they are busy since the settling began.
    reported: usize,
    /// Of those, how many are busy.
    busy: usize,
}

/// Every connection of the process, counted for the settling.
#[derive(Default)]
pub struct Settle {
    counts: Mutex<Counts>,
    changed: Notify,
}

impl Settle {
    /// A new connection (called on the accept path, so that the count never misses one).
    pub fn opened(self: &Arc<Self>) -> Watch {
        if let Ok(mut c) = self.counts.lock() {
            c.open += 1;
        }
        Watch {
            settle: Arc::clone(self),
            reported: false,
            busy: false,
        }
    }

    /// Resolves once every open connection has reported since the settling began and none is
    /// busy.
    pub async fn quiet(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.counts.lock().is_ok_and(|c| c.reported >= c.open && c.busy == 0) {
                return;
            }
            changed.await;
        }
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
        self.changed.notify_waiters();
    }
}

/// One connection's entry; dropping it (the connection ended) takes it out.
pub struct Watch {
    settle: Arc<Settle>,
    reported: bool,
    busy: bool,
}

impl Watch {
    /// Whether the connection has something under way that is not HTTP/2; cheap when nothing
    /// changed.
    pub fn report(&mut self, busy: bool) {
        if self.reported && self.busy == busy {
            return;
        }
        let (was_reported, was_busy) = (self.reported, self.busy);
        self.reported = true;
        self.busy = busy;
        self.settle.update(|c| {
            c.reported += usize::from(!was_reported);
            c.busy = c.busy + usize::from(busy) - usize::from(was_busy);
        });
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let (reported, busy) = (self.reported, self.busy);
        self.settle.update(|c| {
            c.open -= 1;
            c.reported -= usize::from(reported);
            c.busy -= usize::from(busy);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn is_quiet(s: &Settle) -> bool {
        tokio::time::timeout(Duration::from_millis(20), s.quiet()).await.is_ok()
    }

    #[tokio::test]
    async fn quiet_once_every_connection_reported_and_none_is_busy() {
        let s = Arc::new(Settle::default());
        let mut a = s.opened();
        let mut b = s.opened();
        assert!(!is_quiet(&s).await, "nobody reported yet");
        a.report(false);
        assert!(!is_quiet(&s).await, "b has not reported");
        b.report(true);
        assert!(!is_quiet(&s).await, "b is busy");
        b.report(true);
        b.report(false);
        assert!(is_quiet(&s).await);
        a.report(true);
        assert!(!is_quiet(&s).await);
        drop(a);
        assert!(is_quiet(&s).await, "a busy connection that ends no longer counts");
        let _c = s.opened();
        assert!(!is_quiet(&s).await, "a new connection counts until it reports");
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_last_busy_connection_settles() {
        let s = Arc::new(Settle::default());
        let mut a = s.opened();
        a.report(true);
        let waiter = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.quiet().await }
        });
        tokio::task::yield_now().await;
        a.report(false);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
