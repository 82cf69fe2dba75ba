//! Splits an image reference into the parts the span contract names: `container.image.name`
//! (without tag or digest), `container.image.tags` and `container.image.id` (digest).
//! Rule it keeps: a registry port (`host:5000/img`) is never taken for a tag.

/// The parts of an image reference; each borrowed from the input, `None` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImageRef<'a> {
    /// `registry.k8s.io/pause` for `registry.k8s.io/pause:3.6`.
    pub name: Option<&'a str>,
    /// `3.6` for `registry.k8s.io/pause:3.6`.
    pub tag: Option<&'a str>,
    /// `sha256:...` for `img@sha256:...`, or for a bare image id `sha256:...`.
    pub digest: Option<&'a str>,
}

/// Shortest hex part of a bare `algorithm:hex` digest taken for an image id rather than a
/// `name:tag` (sha256 has 64; a tag is at most 128 characters but rarely all hex).
const MIN_DIGEST_HEX: usize = 32;

/// Splits `reference`: `[name][:tag][@digest]`, or a bare digest (`sha256:<hex>`, which CRI
/// uses as an image id).
pub fn parse(reference: &str) -> ImageRef<'_> {
    let reference = reference.trim();
    if is_digest(reference) {
        return ImageRef {
            digest: Some(reference),
            ..ImageRef::default()
        };
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, non_empty(digest)),
        None => (reference, None),
    };
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => (&rest[..colon], non_empty(&rest[colon + 1..])),
        _ => (rest, None),
    };
    ImageRef {
        name: non_empty(name),
        tag,
        digest,
    }
}

/// Whether a Docker image reference is an image id rather than a name: `sha256:` and hex
/// (full or a prefix, as `docker image inspect sha256:7cdd7cbb` takes), or 12 to 64 hex
/// digits alone (a short or full id as `docker images` prints it). dockerd resolves such a
/// reference by id, so it belongs in `container.image.id`, never split into name and tag.
pub fn is_docker_image_id(reference: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match reference.strip_prefix("sha256:") {
        Some(h) => (1..=64).contains(&h.len()) && hex(h),
        None => (12..=64).contains(&reference.len()) && hex(reference),
    }
}

/// `algorithm:hex` with a lowercase algorithm and at least [`MIN_DIGEST_HEX`] hex digits.
fn is_digest(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && hex.len() >= MIN_DIGEST_HEX
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
        let r = parse(s);
        (r.name, r.tag, r.digest)
    }

    const D: &str = "sha256:7cdd7cbbe2d02bbdbcf522648b1930bf8fd4fcd50a84d1ac1761a968de02a5f2";

    #[test]
    fn name_and_tag() {
        assert_eq!(
            p("registry.k8s.io/pause:3.6"),
            (Some("registry.k8s.io/pause"), Some("3.6"), None)
        );
        assert_eq!(p("busybox:latest"), (Some("busybox"), Some("latest"), None));
        assert_eq!(
            p("docker.io/library/bb:latest"),
            (Some("docker.io/library/bb"), Some("latest"), None)
        );
    }

    #[test]
    fn no_tag() {
        assert_eq!(p("busybox"), (Some("busybox"), None, None));
        assert_eq!(p("registry.k8s.io/pause"), (Some("registry.k8s.io/pause"), None, None));
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert_eq!(p("host:5000/img"), (Some("host:5000/img"), None, None));
        assert_eq!(p("host:5000/ns/img:1.2"), (Some("host:5000/ns/img"), Some("1.2"), None));
        assert_eq!(
            p("localhost:5000/img@sha256:abcd"),
            (Some("localhost:5000/img"), None, Some("sha256:abcd"))
        );
    }

    #[test]
    fn digests() {
        let with_digest = format!("img@{D}");
        assert_eq!(p(&with_digest), (Some("img"), None, Some(D)));
        let both = format!("host:5000/img:v1@{D}");
        assert_eq!(p(&both), (Some("host:5000/img"), Some("v1"), Some(D)));
        // CRI image ids are bare digests.
        assert_eq!(p(D), (None, None, Some(D)));
        // A short hex tag stays a tag.
        assert_eq!(p("img:deadbeef"), (Some("img"), Some("deadbeef"), None));
    }

    #[test]
    fn docker_image_ids() {
        for id in [D, "sha256:7cdd7cbb", "7cdd7cbbe2d0", &D[7..]] {
            assert!(is_docker_image_id(id), "{id}");
        }
        for name in [
            "busybox",
            "7cdd7cbb",
            "sha256:",
            "sha256:XYZ",
            "deadbeefcafe:1",
            "bb:7cdd7cbbe2d0",
        ] {
            assert!(!is_docker_image_id(name), "{name}");
        }
    }

    #[test]
    fn degenerate() {
        assert_eq!(p(""), (None, None, None));
        assert_eq!(p("img:"), (Some("img"), None, None));
        assert_eq!(p("img@"), (Some("img"), None, None));
        assert_eq!(p(":tag"), (None, Some("tag"), None));
    }
}
