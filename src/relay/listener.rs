//! Listening sockets: bound by runtime-tap (unix or tcp) or handed over by a service manager.
//! Who created a socket decides who may touch it: runtime-tap removes and chmods only the
//! socket files it bound itself, never a file it did not create, never a live socket, and never
//! a socket a service manager owns.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::stream::Stream;
use crate::config::Endpoint;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: another process is listening on this socket; refusing to replace it")]
    InUse { path: PathBuf },
    #[error("{path}: cannot create parent directory: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path}: cannot remove stale socket: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("{endpoint}: cannot bind: {source}")]
    Bind { endpoint: String, source: io::Error },
}

/// Who owns the socket file of a listener, and so who may remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// runtime-tap bound it: it sets its mode and removes it at exit.
    Us,
    /// A service manager handed it over: runtime-tap never touches the file.
    ServiceManager,
}

/// A bound listener, unix or tcp. Dropping one that runtime-tap bound removes its socket
/// file, so a start that fails after binding (admin port taken, a bad capture directory)
/// leaves nothing behind.
pub struct Listener {
    kind: Kind,
    owner: Owner,
}

enum Kind {
    Unix {
        listener: UnixListener,
        path: Option<PathBuf>,
        /// Device and inode of the socket file we bound: only that file is ever removed,
        /// never one another process put at the same path since.
        file: Option<(u64, u64)>,
    },
    Tcp(TcpListener),
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.remove_own_socket();
    }
}

impl Listener {
    /// Bind `endpoint` ourselves. For a unix path: create parent directories, clear a stale
    /// socket file (a socket nobody listens on), refuse anything else that is there.
    ///
    /// # Errors
    /// When the path holds a regular file or a live socket, or binding fails.
    pub async fn bind(endpoint: &Endpoint) -> Result<Listener, ListenError> {
        match endpoint {
            Endpoint::Unix(path) => {
                prepare_unix_path(path).await?;
                let listener = UnixListener::bind(path).map_err(|source| ListenError::Bind {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
                Ok(Listener {
                    kind: Kind::Unix {
                        listener,
                        path: Some(path.clone()),
                        file: file_identity(path),
                    },
                    owner: Owner::Us,
                })
            }
            Endpoint::Tcp(addr) => {
                let listener = TcpListener::bind(addr.as_str())
                    .await
                    .map_err(|source| ListenError::Bind {
                        endpoint: endpoint.to_string(),
                        source,
                    })?;
                Ok(Listener {
                    kind: Kind::Tcp(listener),
                    owner: Owner::Us,
                })
            }
        }
    }

    /// Wrap a listener handed over by a service manager.
    pub fn from_activation(activated: super::activation::Activated) -> io::Result<Listener> {
        let kind = match activated {
            super::activation::Activated::Unix(l) => {
                l.set_nonblocking(true)?;
                let path = l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
                Kind::Unix {
                    listener: UnixListener::from_std(l)?,
                    path,
                    file: None,
                }
            }
            super::activation::Activated::Tcp(l) => {
                l.set_nonblocking(true)?;
                Kind::Tcp(TcpListener::from_std(l)?)
            }
        };
        Ok(Listener {
            kind,
            owner: Owner::ServiceManager,
        })
    }

    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// The socket file path, for a unix listener.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Unix { path, .. } => path.as_deref(),
            Kind::Tcp(_) => None,
        }
    }

    /// Accept one connection.
    ///
    /// # Cancel safety
    /// Cancel safe, as tokio's accept.
    pub async fn accept(&self) -> io::Result<Stream> {
        match &self.kind {
            Kind::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
                Ok(Stream::Unix(s))
            }
            Kind::Tcp(listener) => {
                let (s, _) = listener.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// Remove the socket file if we created it and it is still the one we bound. Called when
    /// accepting stops, and on drop (a failed start); a second call finds nothing to do.
    pub fn remove_own_socket(&self) {
        if self.owner != Owner::Us {
            return;
        }
        let Kind::Unix {
            path: Some(path),
            file: Some(bound),
            ..
        } = &self.kind
        else {
            return;
        };
        if file_identity(path) == Some(*bound)
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove listening socket");
        }
    }
}

/// Device and inode of the socket file at `path` (not following a symlink), if it is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

async fn prepare_unix_path(path: &Path) -> Result<(), ListenError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| ListenError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Bind {
                endpoint: path.display().to_string(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket { path: path.to_owned() });
    }
    // A socket file: live if someone accepts on it, stale if the connect is refused.
    match UnixStream::connect(path).await {
        Ok(_) => Err(ListenError::InUse { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket nobody listens on");
            std::fs::remove_file(path).map_err(|source| ListenError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(ListenError::Bind {
            endpoint: path.display().to_string(),
            source,
        }),
    }
}

/// Connect to an upstream endpoint within `timeout` (a timeout is an error of kind
/// `TimedOut`). Only the connect is bounded: a connected upstream may take its time.
pub async fn connect_within(endpoint: &Endpoint, timeout: std::time::Duration) -> io::Result<Stream> {
    tokio::time::timeout(timeout, connect(endpoint))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?}"),
            ))
        })
}

/// Connect to an upstream endpoint.
pub async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
    match endpoint {
        Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(addr.as_str()).await?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Tcp(s))
        }
    }
}
