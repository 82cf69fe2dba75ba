//! What a W3C `traceparent` sent by a client counts for, when runtime-tap also sees the
//! caller's own request on another socket.
//!
//! Why a policy at all: daemons send trace contexts they never export. dockerd 26 sends a
//! fresh `traceparent` on every containerd call with no OpenTelemetry configured (each call in
//! its own trace, under a parent span nobody exports); followed blindly, one `docker start`
//! becomes three orphaned traces and `POST /containers/{id}/start` has no children. dockerd 28
//! with its own tracing on exports its spans, but in its own trace, apart from runtime-tap's
//! span for the same request unless propagation tied them. The rule that is right on every
//! generation (README "Remote trace context"): what runtime-tap observed wins over a context
//! that names another trace, and the context is kept as a span link, so nothing is lost.
//!
//! The issue that asked for this suggested following a context that is in the observed
//! parent's own trace. That is wrong on dockerd 26 with propagation on: dockerd adopts the
//! `traceparent` runtime-tap injects, and its containerd calls then name dockerd's client
//! spans in runtime-tap's trace, spans dockerd never exports. runtime-tap cannot tell an
//! exporting client from one that is not, so wherever it saw the parent itself it uses that
//! one, and the client's span, same trace or not, is a link.

use serde::{Deserialize, Serialize};

/// How a client's `traceparent` is used (config `[correlation] remote_parent`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RemoteParentPolicy {
    /// Followed when runtime-tap sees no parent of its own for the call; where it sees one,
    /// that parent wins and the context becomes a span link.
    #[default]
    Observed,
    /// Always the parent, whatever runtime-tap observed (for clients whose tracing is known
    /// to export every span it propagates).
    Follow,
    /// Never a parent: a span link only; the call is correlated as if it carried none.
    Link,
}

/// The `[correlation]` config section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// What a client's W3C `traceparent` counts for: `observed` (default), `follow` or `link`.
    #[serde(default)]
    pub remote_parent: RemoteParentPolicy,
    /// Add a CLIENT span, in the client's resource, above each call from a client behind no
    /// other intercept (kubelet, docker, ctr), so that service graphs draw who calls whom.
    /// One more span per such call; default false.
    #[serde(default)]
    pub client_spans: bool,
}

/// What became of a call's incoming context: `runtime_tap.remote_parent` on its span, and
/// the `outcome` label of `runtime_tap_remote_parents_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// The parent, and runtime-tap saw no parent of its own: the client sent it and runtime-tap
    /// cannot know whether anyone exports that span.
    Followed,
    /// A span link, in the same trace as the parent runtime-tap observed (propagation made it
    /// so): the client's span may never be exported, the observed one is.
    Confirmed,
    /// A span link: runtime-tap observed the real parent in another trace.
    Replaced,
    /// A span link, by policy `link`.
    Linked,
}

impl RemoteOutcome {
    pub const ALL: [RemoteOutcome; 4] = [
        RemoteOutcome::Followed,
        RemoteOutcome::Confirmed,
        RemoteOutcome::Replaced,
        RemoteOutcome::Linked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemoteOutcome::Followed => "followed",
            RemoteOutcome::Confirmed => "confirmed",
            RemoteOutcome::Replaced => "replaced",
            RemoteOutcome::Linked => "linked",
        }
    }

    /// Whether the remote span is the call's parent (else it is a link).
    pub fn is_parent(self) -> bool {
        self == RemoteOutcome::Followed
    }
}

/// Calls per outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteCounts([u64; 4]);

impl RemoteCounts {
    pub fn add(&mut self, outcome: RemoteOutcome) {
        self.0[outcome as usize] += 1;
    }

    pub fn get(&self, outcome: RemoteOutcome) -> u64 {
        self.0[outcome as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_each_policy_and_defaults_to_observed() {
        let parse = |s: &str| toml::from_str::<CorrelationConfig>(s).map(|c| c.remote_parent);
        assert_eq!(parse("").unwrap(), RemoteParentPolicy::Observed);
        assert_eq!(parse("remote_parent = \"follow\"").unwrap(), RemoteParentPolicy::Follow);
        assert_eq!(parse("remote_parent = \"link\"").unwrap(), RemoteParentPolicy::Link);
        assert!(parse("remote_parent = \"always\"").is_err());
        assert!(parse("other = 1").is_err());
    }

    #[test]
    fn counts_are_kept_per_outcome() {
        let mut c = RemoteCounts::default();
        c.add(RemoteOutcome::Replaced);
        c.add(RemoteOutcome::Replaced);
        c.add(RemoteOutcome::Linked);
        assert_eq!(
            RemoteOutcome::ALL.map(|o| c.get(o)),
            [0, 0, 2, 1],
            "followed, confirmed, replaced, linked"
        );
    }
}
