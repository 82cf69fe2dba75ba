//! Who is on each end of a connection: the client process (SO_PEERCRED on the accepted
//! socket) and the process serving the upstream socket. Under socket activation SO_PEERCRED
//! on the upstream names the service manager (pid 1), so the server is found instead as the
//! process that holds the upstream's listening socket (/proc/net/unix, then /proc/*/fd).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Credentials of a peer process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cred {
    pub pid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// A peer process: credentials and executable name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub executable: Option<String>,
}

impl Process {
    pub fn from_cred(cred: Cred) -> Option<Process> {
        let pid = cred.pid?;
        Some(Process {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            executable: executable(pid),
        })
    }
}

/// The executable's file name (`dockerd`), from /proc/PID/exe, else /proc/PID/comm.
pub fn executable(pid: u32) -> Option<String> {
    if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/exe"))
        && let Some(name) = target.file_name()
    {
        return Some(name.to_string_lossy().trim_end_matches(" (deleted)").to_string());
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Finds and caches the process serving each upstream socket.
#[derive(Debug, Default)]
pub struct ServerResolver {
    /// Keyed by the peer pid SO_PEERCRED gave, so a restarted daemon is looked up again.
    cache: Mutex<HashMap<(PathBuf, u32), Option<Process>>>,
}

impl ServerResolver {
    /// The process serving `upstream`, given SO_PEERCRED of a connection to it.
    pub fn resolve(&self, upstream: &Path, cred: Cred) -> Option<Process> {
        let peer = Process::from_cred(cred)?;
        if peer.pid != 1 {
            return Some(peer);
        }
        // pid 1 is the service manager that created the socket (socket activation).
        let key = (upstream.to_path_buf(), peer.pid);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| listening_holder(upstream).or(Some(peer)))
            .clone()
    }
}

/// The process, other than pid 1, that holds the listening socket bound at `path`.
pub fn listening_holder(path: &Path) -> Option<Process> {
    let inode = listening_inode(path)?;
    let needle = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == needle.as_str()) {
                let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                let id = |field: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(field))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0)
                };
                return Some(Process {
                    pid,
                    uid: id("Uid:"),
                    gid: id("Gid:"),
                    executable: executable(pid),
                });
            }
        }
    }
    None
}

/// The inode of the listening unix socket bound at `path`, from /proc/net/unix.
fn listening_inode(path: &Path) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let path = path.to_str()?;
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON (listening).
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 8 && f[7] == path && f[3] == "00010000")
            .then(|| f[6].parse().ok())
            .flatten()
    })
}
