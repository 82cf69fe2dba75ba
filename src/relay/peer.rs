//! Who is on each end of a connection: the client process (SO_PEERCRED on the accepted
//! socket) and the process serving the upstream socket. Under socket activation SO_PEERCRED
//! on the upstream names the service manager (pid 1), so the server is found instead as the
//! process that holds the upstream's listening socket (/proc/net/unix, then /proc/*/fd).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long a found holder is trusted without looking again at /proc/net/unix. Within it
/// only "is the process still there" is checked (one stat), so a daemon that exits is never
/// credited; past it the holder must still hold the listening socket's inode.
pub const HOLDER_TTL: Duration = Duration::from_secs(5);

/// Finds and caches the process serving each socket-activated upstream.
#[derive(Debug, Default)]
pub struct ServerResolver {
    /// By canonical upstream path. Only found holders are kept, never the pid-1 fallback: a
    /// daemon the service manager starts on demand is found by the next connection.
    cache: Mutex<HashMap<PathBuf, Holder>>,
}

/// The process found holding an upstream's listening socket, and when that was last checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub process: Process,
    /// The listening socket's inode (from /proc/net/unix).
    pub inode: u64,
    pub checked: Instant,
}

/// What to do with a cached holder (see [`HOLDER_TTL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheVerdict {
    /// Trust it.
    Use,
    /// Old: trust it only if it still holds the same listening inode.
    Recheck,
    /// Nothing usable: search /proc.
    Search,
}

/// The decision on a cached holder, given whether its process is still alive.
pub fn cache_verdict(cached: Option<&Holder>, now: Instant, alive: bool) -> CacheVerdict {
    match cached {
        None => CacheVerdict::Search,
        Some(_) if !alive => CacheVerdict::Search,
        Some(h) if now.saturating_duration_since(h.checked) < HOLDER_TTL => CacheVerdict::Use,
        Some(_) => CacheVerdict::Recheck,
    }
}

impl ServerResolver {
    /// The process serving `upstream`, given SO_PEERCRED of a connection to it.
    pub fn resolve(&self, upstream: &Path, cred: Cred) -> Option<Process> {
        let peer = Process::from_cred(cred)?;
        if peer.pid != 1 {
            return Some(peer);
        }
        // pid 1 is the service manager that created the socket (socket activation).
        let path = crate::config::canonical_path(upstream);
        let now = Instant::now();
        let cached = self.lock().get(&path).cloned();
        let alive = cached
            .as_ref()
            .is_some_and(|h| Path::new(&format!("/proc/{}", h.process.pid)).exists());
        let found = match cache_verdict(cached.as_ref(), now, alive) {
            CacheVerdict::Use => return cached.map(|h| h.process),
            CacheVerdict::Recheck => cached
                .filter(|h| listening_inode(upstream, &path) == Some(h.inode) && holds(h.process.pid, h.inode))
                .map(|h| Holder { checked: now, ..h }),
            CacheVerdict::Search => None,
        };
        // The scan of /proc runs without the lock: connections to other upstreams go on.
        let found = found.or_else(|| {
            let inode = listening_inode(upstream, &path)?;
            Some(Holder {
                process: holder_of(inode)?,
                inode,
                checked: now,
            })
        });
        let mut cache = self.lock();
        match found {
            Some(h) => {
                cache.insert(path, h.clone());
                Some(h.process)
            }
            None => {
                cache.remove(&path);
                Some(peer)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Holder>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The process, other than pid 1, that holds the listening socket bound at `path`.
pub fn listening_holder(path: &Path) -> Option<Process> {
    holder_of(listening_inode(path, &crate::config::canonical_path(path))?)
}

fn socket_link(inode: u64) -> String {
    format!("socket:[{inode}]")
}

/// Whether process `pid` has the socket `inode` among its descriptors.
fn holds(pid: u32, inode: u64) -> bool {
    let needle = socket_link(inode);
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == needle.as_str()))
    })
}

/// The process, other than pid 1, that holds the socket `inode`.
fn holder_of(inode: u64) -> Option<Process> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == 1 || !holds(pid, inode) {
            continue;
        }
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
    None
}

/// The inode of the listening unix socket bound at `path` (canonically `canonical`), from
/// /proc/net/unix. The table shows the path as the daemon bound it: systemd binds
/// /run/docker.sock while configs say /var/run/docker.sock, so a row matches by either form,
/// or when its own path resolves to the same file.
fn listening_inode(path: &Path, canonical: &Path) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    listening_inode_in(&table, path, canonical, &|p| {
        crate::config::canonical_path(Path::new(p))
    })
}

/// [`listening_inode`] on a table's text, with the path resolver given (for tests).
fn listening_inode_in(table: &str, path: &Path, canonical: &Path, resolve: &dyn Fn(&str) -> PathBuf) -> Option<u64> {
    let (written, canonical) = (path.to_str()?, canonical.to_str()?);
    let name = canonical.rsplit('/').next()?;
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON (listening).
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[3] != "00010000" {
            return None;
        }
        let bound = f[7];
        let same = bound == written
            || bound == canonical
            || (bound.rsplit('/').next() == Some(name) && resolve(bound).as_os_str() == canonical);
        same.then(|| f[6].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32, checked: Instant) -> Holder {
        Holder {
            process: Process {
                pid,
                uid: 0,
                gid: 0,
                executable: Some("dockerd".into()),
            },
            inode: 77,
            checked,
        }
    }

    #[test]
    fn a_fresh_live_holder_is_used() {
        let now = Instant::now();
        assert_eq!(cache_verdict(Some(&holder(42, now)), now, true), CacheVerdict::Use);
    }

    #[test]
    fn a_holder_that_exited_is_searched_again() {
        let now = Instant::now();
        assert_eq!(cache_verdict(Some(&holder(42, now)), now, false), CacheVerdict::Search);
    }

    #[test]
    fn an_old_holder_is_rechecked() {
        let then = Instant::now();
        let now = then + HOLDER_TTL + Duration::from_millis(1);
        assert_eq!(cache_verdict(Some(&holder(42, then)), now, true), CacheVerdict::Recheck);
        assert_eq!(cache_verdict(None, now, true), CacheVerdict::Search);
    }

    #[test]
    fn the_pid_1_fallback_is_not_cached() {
        // No process holds a socket at this path: the answer is pid 1, and nothing is kept.
        let r = ServerResolver::default();
        let cred = Cred {
            pid: Some(1),
            uid: 0,
            gid: 0,
        };
        let path = Path::new("/nonexistent/rtap-peer-test.sock");
        assert_eq!(r.resolve(path, cred).map(|p| p.pid), Some(1));
        assert!(r.lock().is_empty());
    }

    const TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/docker.sock\n\
        0000000000000000: 00000003 00000000 00000000 0001 03 1300 /run/docker.sock\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 999 /run/containerd/containerd.sock\n";

    #[test]
    fn a_symlinked_config_path_matches_the_bound_path() {
        let resolve = |p: &str| PathBuf::from(p.replace("/var/run/", "/run/"));
        let found = |written: &str| listening_inode_in(TABLE, Path::new(written), &resolve(written), &resolve);
        assert_eq!(found("/var/run/docker.sock"), Some(1234));
        assert_eq!(
            found("/run/docker.sock"),
            Some(1234),
            "the listening row, not the connected one"
        );
        assert_eq!(found("/var/run/other.sock"), None);
        // Bound through the link, configured by the real path.
        let table = TABLE.replace(
            " /run/docker.sock\n0000000000000000: 00000003",
            " /var/run/docker.sock\n0000000000000000: 00000003",
        );
        assert_eq!(
            listening_inode_in(
                &table,
                Path::new("/run/docker.sock"),
                Path::new("/run/docker.sock"),
                &resolve
            ),
            Some(1234)
        );
    }

    #[test]
    fn this_process_holds_its_own_listening_socket() {
        let dir = std::env::temp_dir().join(format!("rtap-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(dir.join("l.sock")).unwrap();
        let found = listening_holder(&dir.join("l.sock")).map(|p| p.pid);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, Some(std::process::id()));
    }
}
