//! The owner and group names a config may give a listening socket (`socket_owner`,
//! `socket_group`), resolved on this machine. Checked at load, so check-config catches a
//! typo; the relay applies the ids when it creates the socket.

use nix::unistd::{Group, User};

/// Why configured access could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("socket_owner {0:?}: no such user")]
    NoUser(String),
    #[error("socket_group {0:?}: no such group")]
    NoGroup(String),
}

/// A `socket_owner` value: a numeric uid, or a user name that exists on this machine.
pub fn resolve_user(owner: &str) -> Result<u32, AccessError> {
    if let Ok(n) = owner.parse::<u32>() {
        return Ok(n);
    }
    User::from_name(owner)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| AccessError::NoUser(owner.to_string()))
}

/// A `socket_group` value: a numeric gid, or a group name that exists on this machine.
pub fn resolve_group(group: &str) -> Result<u32, AccessError> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| AccessError::NoGroup(group.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_do_not_exist_are_refused_and_ids_pass() {
        assert!(matches!(resolve_user("no-such-user-rtap"), Err(AccessError::NoUser(_))));
        assert!(matches!(
            resolve_group("no-such-group-rtap"),
            Err(AccessError::NoGroup(_))
        ));
        assert_eq!(resolve_user("root").unwrap(), 0);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
    }
}
