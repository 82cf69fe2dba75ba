//! Access to a listening socket runtime-tap created: never wider than the socket it fronts.
//! By default the owner, group and mode are copied from the upstream socket; explicit
//! settings override. An upstream that is not there yet leaves the socket at 0600 (root's
//! only) until it appears, and its access is copied then.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};

/// How often a missing upstream socket is looked for.
const UPSTREAM_POLL: Duration = Duration::from_millis(500);
/// The mode of a listening socket with nothing to copy from and nothing configured.
pub const FALLBACK_MODE: u32 = 0o600;

/// Explicit settings from the config; `None` means "copy from upstream".
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Why configured access could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("socket_owner {0:?}: no such user")]
    NoUser(String),
    #[error("socket_group {0:?}: no such group")]
    NoGroup(String),
}

impl Access {
    /// Resolve user and group names (or numeric ids) from the config.
    pub fn resolve(mode: Option<u32>, owner: Option<&str>, group: Option<&str>) -> Result<Access, AccessError> {
        let uid = match owner {
            None => None,
            Some(o) => Some(match o.parse::<u32>() {
                Ok(n) => n,
                Err(_) => User::from_name(o)
                    .ok()
                    .flatten()
                    .ok_or_else(|| AccessError::NoUser(o.to_string()))?
                    .uid
                    .as_raw(),
            }),
        };
        let gid = match group {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| AccessError::NoGroup(g.to_string()))?
                    .gid
                    .as_raw(),
            }),
        };
        Ok(Access { mode, uid, gid })
    }

    fn fully_configured(&self) -> bool {
        self.mode.is_some() && self.uid.is_some() && self.gid.is_some()
    }
}

/// Apply access to `listen` now; when the upstream socket is missing and something must be
/// copied from it, keep looking for it in the background and apply it when it appears.
///
/// # Errors
/// When an owner or group given in the config (`socket_owner`, `socket_group`) cannot be set
/// (without CAP_CHOWN): the message names the socket and the missing capability. An owner
/// copied from the upstream that cannot be set is only logged: the socket then stays the
/// proxy's own, which grants no one more than before.
pub async fn apply(listen: PathBuf, upstream: Option<PathBuf>, access: Access) -> Result<(), String> {
    let upstream_meta = upstream.as_deref().and_then(|p| std::fs::metadata(p).ok());
    set(&listen, &access, upstream_meta.as_ref())?;
    if upstream_meta.is_some() || access.fully_configured() {
        return Ok(());
    }
    let Some(upstream) = upstream else { return Ok(()) };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPSTREAM_POLL).await;
            if !listen.exists() {
                return; // our socket is gone (shutdown): stop looking
            }
            if let Ok(meta) = std::fs::metadata(&upstream) {
                tracing::info!(listen = %listen.display(), upstream = %upstream.display(), "upstream socket appeared; copying its access");
                if let Err(e) = set(&listen, &access, Some(&meta)) {
                    tracing::error!(error = %e, "socket access not applied");
                }
                return;
            }
        }
    });
    Ok(())
}

fn set(listen: &Path, access: &Access, upstream: Option<&std::fs::Metadata>) -> Result<(), String> {
    let mode = access
        .mode
        .or(upstream.map(|m| m.mode() & 0o777))
        .unwrap_or(FALLBACK_MODE);
    let uid = access.uid.or(upstream.map(MetadataExt::uid));
    let gid = access.gid.or(upstream.map(MetadataExt::gid));
    if (uid.is_some() || gid.is_some())
        && let Err(e) = nix::unistd::chown(listen, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
    {
        let hint = if e == nix::errno::Errno::EPERM {
            " (needs CAP_CHOWN: run as root, or grant it, e.g. AmbientCapabilities=CAP_CHOWN)"
        } else {
            ""
        };
        let message = format!(
            "{}: cannot set socket owner uid {} group gid {}: {e}{hint}",
            listen.display(),
            uid.map_or("-".to_string(), |u| u.to_string()),
            gid.map_or("-".to_string(), |g| g.to_string()),
        );
        if access.uid.is_some() || access.gid.is_some() {
            return Err(message);
        }
        tracing::warn!(error = %message, "socket keeps runtime-tap's own owner, not the upstream's");
    }
    if let Err(e) = std::fs::set_permissions(listen, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %listen.display(), error = %e, "cannot set socket mode");
    }
    tracing::debug!(path = %listen.display(), mode = format!("{mode:o}"), ?uid, ?gid, "socket access set");
    Ok(())
}
