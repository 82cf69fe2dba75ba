//! Who may have written a file runtime-tap trusts (its config, descriptor sets it loads).
//! Rule it keeps: a file others can write is refused before it is read, since whoever can
//! write the config decides which sockets are relayed and where spans go. World-writable is
//! always refused; group-writable is refused unless the group is root's (gid 0), whose
//! members can already act as root on most nodes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why a file's permissions are refused, with how to fix them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PermissionError {
    #[error("{path}: mode {mode:04o} lets any user write it; refusing to use it (fix: chmod o-w {path})")]
    WorldWritable { path: String, mode: u32 },
    #[error(
        "{path}: mode {mode:04o} lets group {gid} write it; refusing to use it (fix: chmod g-w {path}, or chgrp root {path})"
    )]
    GroupWritable { path: String, mode: u32, gid: u32 },
}

/// Judge a file's permission bits and group: world-writable never, group-writable only for
/// the root group.
pub fn judge(path: &Path, mode: u32, gid: u32) -> Result<(), PermissionError> {
    let mode = mode & 0o7777;
    let path = path.display().to_string();
    if mode & 0o002 != 0 {
        return Err(PermissionError::WorldWritable { path, mode });
    }
    if mode & 0o020 != 0 && gid != 0 {
        return Err(PermissionError::GroupWritable { path, mode, gid });
    }
    Ok(())
}

/// Check a file on disk (following symlinks: the file that will be read is the one judged).
///
/// # Errors
/// `Ok(Err(..))` when its permissions are refused; `Err` when it cannot be examined.
pub fn check(path: &Path) -> std::io::Result<Result<(), PermissionError>> {
    let meta = std::fs::metadata(path)?;
    Ok(judge(path, meta.mode(), meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_writable_is_refused_with_the_fix() {
        let e = judge(Path::new("/etc/rt.toml"), 0o100666, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/rt.toml: mode 0666 lets any user write it; refusing to use it (fix: chmod o-w /etc/rt.toml)"
        );
        assert!(judge(Path::new("/x"), 0o602, 0).is_err());
    }

    #[test]
    fn group_writable_only_for_the_root_group() {
        assert_eq!(judge(Path::new("/x"), 0o664, 0), Ok(()));
        let e = judge(Path::new("/x"), 0o660, 999).unwrap_err().to_string();
        assert!(e.contains("mode 0660 lets group 999 write it"), "{e}");
        assert!(e.contains("chmod g-w /x"), "{e}");
    }

    #[test]
    fn owner_writable_and_read_only_are_fine() {
        for mode in [0o600, 0o644, 0o640, 0o444, 0o400] {
            assert_eq!(judge(Path::new("/x"), mode, 1000), Ok(()), "{mode:o}");
        }
    }
}
