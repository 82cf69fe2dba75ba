//! What an accept loop does when accept fails: count every failure, log once per episode (the
//! first failure, with its cause, and the first success after it), and back off so the loop
//! never spins while the condition lasts (out of descriptors, most often: the pending
//! connection stays in the backlog and accept fails again at once).

use std::io;
use std::time::{Duration, Instant};

/// How long to wait after a failed accept before the next.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The state of one listener's accept failures.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    /// The current episode: when it began and how many accepts failed in it.
    episode: Option<(Instant, u64)>,
}

impl AcceptErrors {
    pub fn new() -> AcceptErrors {
        AcceptErrors::default()
    }

    /// Note a failed accept on the listener `listen` of `intercept`: logs only the first
    /// failure of an episode. The caller counts it and then awaits [`backoff`].
    ///
    /// [`backoff`]: AcceptErrors::backoff
    pub fn failed(&mut self, intercept: &str, listen: &str, error: &io::Error) {
        match &mut self.episode {
            Some((_, n)) => {
                *n += 1;
                tracing::trace!(intercept, listen, error = %error, "accept failed again");
            }
            None => {
                self.episode = Some((Instant::now(), 1));
                tracing::error!(
                    intercept, listen, error = %error, cause = cause(error),
                    "accept failed; existing connections go on, new ones wait in the backlog; retrying every {ACCEPT_ERROR_BACKOFF:?}, logging again when accepting resumes"
                );
            }
        }
    }

    /// Note a successful accept: ends an episode, with one log line saying how long it lasted.
    pub fn accepted(&mut self, intercept: &str, listen: &str) {
        if let Some((since, failures)) = self.episode.take() {
            tracing::warn!(intercept, listen, failures, lasted = ?since.elapsed(), "accepting again after accept failures");
        }
    }

    /// Wait before the next accept.
    pub async fn backoff(&self) {
        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
    }
}

/// A short name for the usual causes, so the log says what to do about it.
fn cause(error: &io::Error) -> &'static str {
    use nix::errno::Errno;
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE) => "too many open files: the process hit RLIMIT_NOFILE (raise LimitNOFILE= or ulimit -n)",
        Some(Errno::ENFILE) => "too many open files in the system (fs.file-max)",
        Some(Errno::ENOBUFS | Errno::ENOMEM) => "out of kernel memory for sockets",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_descriptor_exhaustion() {
        assert!(cause(&io::Error::from_raw_os_error(24)).starts_with("too many open files"));
        assert_eq!(cause(&io::Error::other("x")), "other");
    }

    #[test]
    fn an_episode_ends_at_the_next_success() {
        let mut errors = AcceptErrors::new();
        let e = io::Error::from_raw_os_error(24);
        errors.failed("i", "unix:///x", &e);
        errors.failed("i", "unix:///x", &e);
        assert_eq!(errors.episode.map(|(_, n)| n), Some(2));
        errors.accepted("i", "unix:///x");
        assert!(errors.episode.is_none());
    }
}
