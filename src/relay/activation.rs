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
}

/// Sockets passed by a service manager, keyed by their `LISTEN_FDNAMES` name (systemd's
/// `FileDescriptorName=`, by default the socket unit's name without `.socket`).
#[derive(Debug, Default)]
pub struct Handed {
    by_name: HashMap<String, Vec<Activated>>,
}

impl Handed {
    /// Take the descriptors passed to this process, if `LISTEN_PID` names it.
    ///
    /// # Errors
    /// When a passed descriptor is not a listening stream socket.
    pub fn from_env() -> Result<Handed, ActivationError> {
        let Some((pid, count, names)) = crate::config::env::socket_activation() else {
            return Ok(Handed::default());
        };
        if pid != std::process::id() {
            // Meant for another process (we were started by one that inherited the variables).
            return Ok(Handed::default());
        }
        if count > MAX_ACTIVATED {
            return Err(ActivationError::TooMany(count));
        }
        let names: Vec<String> = names
            .map(|n| n.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        let mut handed = Handed::default();
        for i in 0..count {
            let fd = SD_LISTEN_FDS_START + i as RawFd;
            let name = names.get(i).cloned().unwrap_or_else(|| "unknown".to_string());
            // SAFETY: LISTEN_PID is our pid, so the manager passed descriptors 3..3+LISTEN_FDS
            // to this process; each is taken exactly once here and owned from now on.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let activated = classify(owned).map_err(|e| match e {
                Some(source) => ActivationError::Io { fd, source },
                None => ActivationError::NotAListener { fd, name: name.clone() },
            })?;
            tracing::info!(fd, name = %name, "using listener handed over by the service manager");
            handed.by_name.entry(name).or_default().push(activated);
        }
        Ok(handed)
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
