//! Listeners handed over by a service manager (systemd socket activation: `LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, descriptors from 3 on). The manager owns these sockets:
//! they keep accepting (queueing) while runtime-tap restarts, and runtime-tap never creates,
//! chmods or removes them.
//!
//! This is the one module with `unsafe`: taking ownership of an inherited descriptor number
//! cannot be expressed safely. Each number is taken at most once, and only after the
//! `LISTEN_PID` check proves the descriptors were passed to this process.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

/// The first descriptor a service manager passes (after stdin, stdout, stderr).
const SD_LISTEN_FDS_START: RawFd = 3;
/// More than this many passed descriptors is surely a mistake; refuse rather than take them.
const MAX_ACTIVATED: usize = 256;

/// A listening socket handed over, by transport.
#[derive(Debug)]
pub enum Activated {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// Why handed-over sockets could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("LISTEN_FDS={0} is more than {MAX_ACTIVATED}")]
    TooMany(usize),
    #[error("passed descriptor {fd} (name {name:?}) is not a listening stream socket")]
    NotAListener { fd: RawFd, name: String },
    #[error("passed descriptor {fd}: {source}")]
    Io { fd: RawFd, source: std::io::Error },
    #[error("the descriptors passed by the service manager were already taken")]
    AlreadyTaken,
}

/// Set by the first [`Handed::from_env`] that takes descriptors: a second call would make a
/// second `OwnedFd` for the same number (a double close, or closing someone else's file).
static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sockets passed by a service manager, keyed by their `LISTEN_FDNAMES` name (systemd's
/// `FileDescriptorName=`, by default the socket unit's name without `.socket`).
#[derive(Debug, Default)]
pub struct Handed {
    by_name: HashMap<String, Vec<Activated>>,
}

impl Handed {
    /// Take the descriptors passed to this process, if `LISTEN_PID` names it. Once per
    /// process: a second call that would take descriptors fails.
    ///
    /// # Errors
    /// When a passed descriptor is not a listening stream socket, or when they were taken.
    pub fn from_env() -> Result<Handed, ActivationError> {
        let Some((pid, count, names)) = crate::config::env::socket_activation() else {
            return Ok(Handed::default());
        };
        let passed = passed(pid, count, names.as_deref(), std::process::id())?;
        if !passed.is_empty() && TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(ActivationError::AlreadyTaken);
        }
        let mut handed = Handed::default();
        for (fd, name) in passed {
            // SAFETY: `passed` returns descriptors only when LISTEN_PID is our pid, so the
            // manager passed 3..3+LISTEN_FDS to this process; `TAKEN` makes this the only
            // call that takes them, and each number appears once in `passed`: each is owned
            // exactly once from now on.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let activated = classify(owned).map_err(|e| match e {
                Some(source) => ActivationError::Io { fd, source },
                None => ActivationError::NotAListener { fd, name: name.clone() },
            })?;
            tracing::info!(fd, name = %name, "using listener handed over by the service manager");
            handed.add(name, activated);
        }
        Ok(handed)
    }

    /// Add a handed-over listener under `name`.
    pub fn add(&mut self, name: String, activated: Activated) {
        self.by_name.entry(name).or_default().push(activated);
    }

    /// Take the listener handed over under `name`, if any.
    pub fn take(&mut self, name: &str) -> Option<Activated> {
        let list = self.by_name.get_mut(name)?;
        let l = list.pop();
        if list.is_empty() {
            self.by_name.remove(name);
        }
        l
    }

    /// Names passed but matched by no intercept (worth a warning).
    pub fn unused(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// The descriptors a service manager passed and their names, from the values of
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`; none unless `listen_pid` is `our_pid`
/// (the variables were meant for another process and merely inherited). A descriptor with no
/// name in `LISTEN_FDNAMES` is named `unknown`, as systemd does.
///
/// # Errors
/// When `LISTEN_FDS` is more than [`MAX_ACTIVATED`].
pub fn passed(
    listen_pid: u32,
    count: usize,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Vec<(RawFd, String)>, ActivationError> {
    if listen_pid != our_pid {
        return Ok(Vec::new());
    }
    if count > MAX_ACTIVATED {
        return Err(ActivationError::TooMany(count));
    }
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    Ok((0..count)
        .map(|i| {
            let name = names.get(i).copied().filter(|n| !n.is_empty()).unwrap_or("unknown");
            (SD_LISTEN_FDS_START + i as RawFd, name.to_string())
        })
        .collect())
}

fn classify(fd: OwnedFd) -> Result<Activated, Option<std::io::Error>> {
    let socket = Socket::from(fd);
    if socket.r#type().map_err(Some)? != Type::STREAM || !socket.is_listener().map_err(Some)? {
        return Err(None);
    }
    match socket.domain().map_err(Some)? {
        Domain::UNIX => Ok(Activated::Unix(socket.into())),
        Domain::IPV4 | Domain::IPV6 => Ok(Activated::Tcp(socket.into())),
        _ => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_for_another_pid_are_not_taken() {
        assert!(passed(4242, 2, Some("containerd:dockerd"), 77).unwrap().is_empty());
        // Even a count that would be refused: nothing of it is ours to judge.
        assert!(passed(4242, 10_000, None, 77).unwrap().is_empty());
    }

    #[test]
    fn descriptors_are_named_in_order_from_3() {
        assert_eq!(
            passed(77, 3, Some("containerd:dockerd"), 77).unwrap(),
            vec![
                (3, "containerd".to_string()),
                (4, "dockerd".to_string()),
                (5, "unknown".to_string())
            ]
        );
        assert_eq!(passed(77, 1, None, 77).unwrap(), vec![(3, "unknown".to_string())]);
        assert!(matches!(passed(77, 257, None, 77), Err(ActivationError::TooMany(257))));
    }

    #[test]
    fn listeners_are_matched_by_name_and_the_rest_reported_unused() {
        let dir = std::env::temp_dir().join(format!("rtap-act-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bind = |n: &str| Activated::Unix(std::os::unix::net::UnixListener::bind(dir.join(n)).unwrap());
        let mut handed = Handed::default();
        handed.add("containerd".into(), bind("a.sock"));
        handed.add("stray".into(), bind("b.sock"));
        assert!(handed.take("containerd").is_some());
        assert!(handed.take("containerd").is_none(), "each listener is taken once");
        assert!(handed.take("dockerd").is_none());
        // A name no intercept took is what runtime-tap warns about (app.rs), not an error.
        assert_eq!(handed.unused().collect::<Vec<_>>(), vec!["stray"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
