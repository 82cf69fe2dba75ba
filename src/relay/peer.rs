//! Who is on each end of a connection: the client process (SO_PEERCRED on the accepted
//! socket) and the process serving the upstream socket. Under socket activation SO_PEERCRED
//! on the upstream names the service manager (pid 1), so the server is found instead as the
//! process that holds the upstream's listening socket (/proc/net/unix, then /proc/*/fd).
//! Rule it keeps: every lookup here reads /proc and may block, so it runs off the byte path
//! ([`Lookup`], called from a blocking thread by the tap's consumer), never before a
//! connection's first byte; the types it fills in are `crate::conn`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::conn::{Cred, Endpoint, Process, canonical_path};

/// The process behind SO_PEERCRED credentials, its executable read from /proc.
pub fn process(cred: Cred) -> Option<Process> {
    let pid = cred.pid?;
    Some(Process {
        pid,
        uid: cred.uid,
        gid: cred.gid,
        executable: executable(pid),
    })
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

/// How long "no process but pid 1 holds this upstream's listening socket" is believed. A miss
/// costs a scan of every /proc/*/fd; remembered, a burst of connections to a socket-activated
/// upstream whose daemon is not running costs one scan a second, not one each. Short, since
/// a daemon the service manager starts on demand should be credited soon after it starts.
pub const MISS_TTL: Duration = Duration::from_secs(1);

/// At most this many upstreams are remembered (found or missed); past it the cache starts
/// over. Keys are configured upstream paths, so this is a bound that should never be reached.
const MAX_CACHED: usize = 256;

/// Finds and caches the process serving each socket-activated upstream. Blocking: it reads
/// /proc, so it runs off the byte path ([`Lookup`]).
#[derive(Debug, Default)]
pub struct ServerResolver {
    /// By canonical upstream path: a found holder, or when none was found.
    cache: Mutex<HashMap<PathBuf, Cached>>,
    /// Held while /proc is searched: connections that miss together wait for one search
    /// and take its answer from the cache, instead of each scanning every process.
    search: Mutex<()>,
}

/// What is known of one upstream's holder.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cached {
    Found(Holder),
    /// Only pid 1 held the socket when last searched, at this instant.
    Missing(Instant),
}

/// Who is on each end of one connection, looked up in /proc. Blocking (readlink, and for a
/// socket-activated upstream a search of every process's descriptors): the caller runs it on
/// a blocking thread, beside the relay, never before a connection's first byte.
pub trait Lookup: Send + Sync {
    /// The client process (from the accepted socket's credentials) and the process serving
    /// `upstream` (from the upstream connection's).
    fn peers(&self, upstream: &Endpoint, client: Option<Cred>, server: Option<Cred>) -> Peers;
}

/// The processes on both ends of a connection, as far as they could be found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    pub client: Option<Process>,
    pub server: Option<Process>,
}

impl Lookup for ServerResolver {
    fn peers(&self, upstream: &Endpoint, client: Option<Cred>, server: Option<Cred>) -> Peers {
        Peers {
            client: client.and_then(process),
            server: match (upstream, server) {
                (Endpoint::Unix(path), Some(cred)) => self.resolve(path, cred),
                _ => None,
            },
        }
    }
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
        let peer = process(cred)?;
        if peer.pid != 1 {
            return Some(peer);
        }
        // pid 1 is the service manager that created the socket (socket activation).
        let path = canonical_path(upstream);
        if let Some(known) = self.known(&path, Instant::now()) {
            return Some(known.unwrap_or(peer));
        }
        let _searching = self.search.lock().unwrap_or_else(|p| p.into_inner());
        // Another connection may have searched while this one waited.
        let now = Instant::now();
        if let Some(known) = self.known(&path, now) {
            return Some(known.unwrap_or(peer));
        }
        let cached = match self.lock().get(&path) {
            Some(Cached::Found(h)) => Some(h.clone()),
            _ => None,
        };
        let found = cached
            .filter(|h| listening_inode(upstream, &path) == Some(h.inode) && holds(h.process.pid, h.inode))
            .map(|h| Holder { checked: now, ..h })
            .or_else(|| {
                let inode = listening_inode(upstream, &path)?;
                Some(Holder {
                    process: holder_of(inode)?,
                    inode,
                    checked: now,
                })
            });
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(&path) {
            cache.clear();
        }
        match found {
            Some(h) => {
                cache.insert(path, Cached::Found(h.clone()));
                Some(h.process)
            }
            None => {
                cache.insert(path, Cached::Missing(now));
                Some(peer)
            }
        }
    }

    /// The answer the cache gives without touching /proc beyond one stat: `Some(Some(p))` a
    /// trusted holder, `Some(None)` a recent miss (the service manager it is), `None` when
    /// /proc must be looked at (nothing cached, an old miss, a holder to recheck or gone).
    fn known(&self, path: &Path, now: Instant) -> Option<Option<Process>> {
        let cached = self.lock().get(path).cloned()?;
        match cached {
            Cached::Missing(at) => (now.saturating_duration_since(at) < MISS_TTL).then_some(None),
            Cached::Found(h) => {
                let alive = Path::new(&format!("/proc/{}", h.process.pid)).exists();
                match cache_verdict(Some(&h), now, alive) {
                    CacheVerdict::Use => Some(Some(h.process)),
                    CacheVerdict::Recheck | CacheVerdict::Search => None,
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The process, other than pid 1, that holds the listening socket bound at `path`.
pub fn listening_holder(path: &Path) -> Option<Process> {
    holder_of(listening_inode(path, &canonical_path(path))?)
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
    listening_inode_in(&table, path, canonical, &|p| canonical_path(Path::new(p)))
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
    fn the_pid_1_fallback_is_remembered_briefly() {
        // No process holds a socket at this path: the answer is pid 1, remembered as a miss
        // for MISS_TTL so that the next connections do not scan /proc again.
        let r = ServerResolver::default();
        let cred = Cred {
            pid: Some(1),
            uid: 0,
            gid: 0,
        };
        let path = Path::new("/nonexistent/rtap-peer-test.sock");
        assert_eq!(r.resolve(path, cred).map(|p| p.pid), Some(1));
        let now = Instant::now();
        assert!(matches!(r.lock().get(&canonical_path(path)), Some(Cached::Missing(_))));
        assert_eq!(r.known(&canonical_path(path), now), Some(None));
        assert_eq!(
            r.known(&canonical_path(path), now + MISS_TTL),
            None,
            "an old miss is searched again"
        );
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
