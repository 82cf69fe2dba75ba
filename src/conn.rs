//! Facts about one connection that every layer may read: which way a chunk went
//! ([`Direction`]), the socket addresses ([`Endpoint`], compared by [`canonical_path`]), the
//! processes on each end ([`Cred`], [`Process`]) and what every call of a connection shares
//! ([`ConnMeta`]). Rule it keeps: a leaf, plain data that imports no layer of the crate, so
//! that relay, observe, trace and config can all name these types without naming each other.
//! Looking the facts up (SO_PEERCRED, /proc) belongs to `relay::stream` and `relay::peer`.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which way a chunk travelled through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client (downstream) to server (upstream): requests.
    ClientToServer,
    /// Server (upstream) to client (downstream): responses.
    ServerToClient,
}

impl Direction {
    /// Short label used in logs and metrics (`c2s`, `s2c`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "c2s",
            Direction::ServerToClient => "s2c",
        }
    }

    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// Index 0 for c2s, 1 for s2c, for per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// Credentials of a peer process, as SO_PEERCRED gives them.
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

/// The HTTP/2 streams of one connection that its decoder knows to be event subscriptions
/// (containerd `Events/Subscribe`, CRI `GetContainerEvents`): they end only when the client
/// stops watching, so the shutdown drain does not wait for them (the client subscribes again
/// on its new connection). Written by the connection's observer, read by its relay; shared
/// through the tap, so neither layer knows the other.
#[derive(Clone, Debug, Default)]
pub struct LongLived(Arc<std::sync::Mutex<Vec<u32>>>);

impl LongLived {
    /// Most streams remembered per connection: a client holds one or two subscriptions.
    pub const MAX: usize = 64;

    pub fn mark(&self, stream: u32) {
        if let Ok(mut s) = self.0.lock()
            && s.len() < Self::MAX
            && !s.contains(&stream)
        {
            s.push(stream);
        }
    }

    pub fn unmark(&self, stream: u32) {
        if let Ok(mut s) = self.0.lock() {
            s.retain(|&x| x != stream);
        }
    }

    pub fn contains(&self, stream: u32) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(&stream))
    }
}

/// What every call of one connection shares: who is on each end, and through which intercept.
#[derive(Debug)]
pub struct ConnMeta {
    pub id: u64,
    /// The intercept's name: `service.name` of its spans.
    pub service: Arc<str>,
    /// `unix` or `tcp`.
    pub transport: &'static str,
    /// The intercept's listen address, as configured.
    pub listen: String,
    /// The upstream address, as configured.
    pub upstream: String,
    pub client: Option<Process>,
    pub server: Option<Process>,
    /// Payload capture is on for this intercept (opt-in).
    pub capture_payloads: bool,
}

/// A socket address in URL form: `unix:///run/x.sock` or `tcp://127.0.0.1:2375`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// The endpoint with a unix path in [`canonical_path`] form, for comparing two endpoints:
    /// `/var/run/x.sock` and `/run/x.sock` are one socket when /var/run links to /run.
    pub fn canonical(&self) -> Endpoint {
        match self {
            Endpoint::Unix(p) => Endpoint::Unix(canonical_path(p)),
            Endpoint::Tcp(a) => Endpoint::Tcp(a.clone()),
        }
    }

    /// The transport name used in spans (`network.transport`).
    pub fn transport(&self) -> &'static str {
        match self {
            Endpoint::Unix(_) => "unix",
            Endpoint::Tcp(_) => "tcp",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("{s:?}: a unix socket path must be absolute (unix:///path)"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            // A host name is allowed; only the shape is checked here.
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    return Ok(Endpoint::Tcp(addr.to_string()));
                }
                _ => return Err(format!("{s:?}: expected tcp://host:port")),
            }
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        Err(format!("{s:?}: expected unix:///path or tcp://host:port"))
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The path a socket at `path` really has: symlinks resolved in every part that exists,
/// `.` and `..` applied to the rest as bind(2) would after creating the missing directories.
/// The socket file itself need not exist (a listen path before the first start).
pub fn canonical_path(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let Some(parent) = path.parent() else {
        return path.to_path_buf();
    };
    let base = canonical_path(parent);
    match path.components().next_back() {
        Some(Component::ParentDir) => base.parent().map(Path::to_path_buf).unwrap_or(base),
        Some(Component::Normal(name)) => base.join(name),
        _ => base,
    }
}
