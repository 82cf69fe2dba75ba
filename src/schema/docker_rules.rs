//! What becomes an attribute for the Docker Engine API, in one table: which routes' request
//! and response bodies and query parameters matter, how long their calls live, and what the
//! id registry learns from them. Plus the redaction rules of Docker requests: query
//! parameters and the bodies payload capture must never show.
//!
//! Rule it keeps: an allowlist. A body is looked at only when its route is in [`RULES`]
//! (or for the error `message` of a response >= 400); no header but `User-Agent`,
//! `traceparent` and `tracestate` is ever read.

use super::redact;

/// What a query parameter value becomes in `url.query` when redacted (the semantic
/// conventions' word for it).
pub const QUERY_REDACTED: &str = "REDACTED";

/// Query parameters redacted whatever their name says: JSON or Dockerfile text that can carry
/// secrets (`buildargs={"NPM_TOKEN":...}`, `changes=ENV PASSWORD=...`), and the registry
/// config of a build.
pub const SECRET_QUERY_PARAMS: &[&str] = &["buildargs", "changes", "registryconfig", "secrets"];

/// Routes whose bodies payload capture never buffers or shows (credentials, secret and config
/// data, swarm unlock keys, plugin settings as `KEY=value`), as (method, route).
pub const NEVER_CAPTURE: &[(&str, &str)] = &[
    ("POST", "/auth"),
    ("POST", "/secrets/create"),
    ("POST", "/secrets/{id}/update"),
    ("POST", "/configs/create"),
    ("POST", "/configs/{id}/update"),
    ("GET", "/configs"),
    ("GET", "/configs/{id}"),
    ("POST", "/swarm/unlock"),
    ("GET", "/swarm/unlockkey"),
    ("POST", "/swarm/init"),
    ("POST", "/swarm/join"),
    ("POST", "/plugins/pull"),
    ("POST", "/plugins/{name}/set"),
    ("POST", "/plugins/{name}/upgrade"),
];

/// A request body field that matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Container create: `Image` → `container.image.name`, `container.image.tags`,
    /// `container.image.id`. Nothing else of the body (its `Env`) is read.
    ContainerCreate,
}

/// A response body that matters (2xx responses only; a response >= 400 is read for its
/// `message` whatever its route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// `{"Id": ...}` of a container create → `container.id`, learned with `?name=`.
    ContainerCreated,
    /// Container inspect: `Id` and `Name` learned (never `Config.Env`); `Id` → `container.id`.
    ContainerInspect,
    /// Container list: each `Id` and `Names` learned.
    ContainerList,
    /// `{"Id": ...}` of an exec create → `container.exec.id`.
    ExecCreated,
    /// Exec inspect: `ContainerID` → `container.id`.
    ExecInspect,
    /// A JSON-lines progress stream (pull, build, push, load): a line with `errorDetail`
    /// makes the span an error. Scanned line by line, never buffered whole.
    Progress,
    /// The `/events` stream: each line is one event span.
    Events,
}

/// A query parameter that matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryRule {
    /// `?name=` of a container create → `container.name`.
    ContainerName,
    /// `?fromImage=` and `?tag=` of a pull → image attributes (`fromSrc` imports are not pulls).
    PullImage,
    /// `?name=` of a rename: the new name, learned on success.
    Rename,
}

/// How long a call on the route lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeRule {
    Unary,
    LongLived,
    /// Long-lived when the boolean query parameter is true (`logs?follow=1`).
    LongLivedIf(&'static str),
    /// Long-lived unless the boolean query parameter is false (`stats?stream=0`).
    LongLivedUnless(&'static str),
    /// Long-lived when the request asks for a protocol switch (`Upgrade: tcp`), or once
    /// the daemon hijacks the connection (exec start).
    LongLivedIfUpgrade,
}

/// What the id registry learns when a call on the route succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSuccess {
    Nothing,
    /// The container was removed: forget it (its name may be reused).
    ForgetContainer,
}

/// One row: what matters on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub method: &'static str,
    /// The route template, as `schema::docker::match_route` names it.
    pub route: &'static str,
    pub request: Option<RequestBody>,
    pub response: Option<ResponseBody>,
    pub query: &'static [QueryRule],
    pub shape: ShapeRule,
    /// The route's `{name}` is an image reference → image attributes.
    pub path_image: bool,
    pub on_success: OnSuccess,
}

const fn row(method: &'static str, route: &'static str) -> RouteRule {
    RouteRule {
        method,
        route,
        request: None,
        response: None,
        query: &[],
        shape: ShapeRule::Unary,
        path_image: false,
        on_success: OnSuccess::Nothing,
    }
}

const fn resp(method: &'static str, route: &'static str, body: ResponseBody) -> RouteRule {
    RouteRule {
        response: Some(body),
        ..row(method, route)
    }
}

const fn shaped(method: &'static str, route: &'static str, shape: ShapeRule) -> RouteRule {
    RouteRule {
        shape,
        ..row(method, route)
    }
}

const fn image(method: &'static str, route: &'static str) -> RouteRule {
    RouteRule {
        path_image: true,
        ..row(method, route)
    }
}

/// The table. A route not in it gets the common attributes only.
pub static RULES: &[RouteRule] = &[
    // Containers
    RouteRule {
        request: Some(RequestBody::ContainerCreate),
        response: Some(ResponseBody::ContainerCreated),
        query: &[QueryRule::ContainerName],
        ..row("POST", "/containers/create")
    },
    resp("GET", "/containers/{id}/json", ResponseBody::ContainerInspect),
    resp("GET", "/containers/json", ResponseBody::ContainerList),
    shaped("GET", "/containers/{id}/logs", ShapeRule::LongLivedIf("follow")),
    shaped("GET", "/containers/{id}/stats", ShapeRule::LongLivedUnless("stream")),
    shaped("POST", "/containers/{id}/wait", ShapeRule::LongLived),
    shaped("POST", "/containers/{id}/attach", ShapeRule::LongLived),
    shaped("GET", "/containers/{id}/attach/ws", ShapeRule::LongLived),
    RouteRule {
        on_success: OnSuccess::ForgetContainer,
        ..row("DELETE", "/containers/{id}")
    },
    RouteRule {
        query: &[QueryRule::Rename],
        ..row("POST", "/containers/{id}/rename")
    },
    // Exec
    resp("POST", "/containers/{id}/exec", ResponseBody::ExecCreated),
    resp("GET", "/exec/{id}/json", ResponseBody::ExecInspect),
    shaped("POST", "/exec/{id}/start", ShapeRule::LongLivedIfUpgrade),
    // Images
    RouteRule {
        query: &[QueryRule::PullImage],
        ..resp("POST", "/images/create", ResponseBody::Progress)
    },
    resp("POST", "/build", ResponseBody::Progress),
    resp("POST", "/images/load", ResponseBody::Progress),
    RouteRule {
        path_image: true,
        ..resp("POST", "/images/{name}/push", ResponseBody::Progress)
    },
    image("GET", "/images/{name}/json"),
    image("GET", "/images/{name}/history"),
    image("POST", "/images/{name}/tag"),
    image("GET", "/images/{name}/get"),
    image("DELETE", "/images/{name}"),
    image("GET", "/distribution/{name}/json"),
    // Plugins (their pulls stream progress like image pulls)
    resp("POST", "/plugins/pull", ResponseBody::Progress),
    resp("POST", "/plugins/{name}/upgrade", ResponseBody::Progress),
    resp("POST", "/plugins/{name}/push", ResponseBody::Progress),
    // System
    RouteRule {
        shape: ShapeRule::LongLived,
        ..resp("GET", "/events", ResponseBody::Events)
    },
    // Swarm logs follow like container logs
    shaped("GET", "/services/{id}/logs", ShapeRule::LongLivedIf("follow")),
    shaped("GET", "/tasks/{id}/logs", ShapeRule::LongLivedIf("follow")),
];

/// The rule of a matched route, if it has one.
pub fn rule(method: &str, route: &str) -> Option<&'static RouteRule> {
    RULES.iter().find(|r| r.method == method && r.route == route)
}

/// Which id a route's `{id}` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathEntity {
    /// `/containers/{id}/...`: a full id, a short prefix or a name.
    Container,
    /// `/exec/{id}/...`: an exec id.
    Exec,
}

/// The entity a route's `{id}` parameter names.
pub fn path_entity(route: &str) -> Option<PathEntity> {
    if route.starts_with("/containers/{id}") {
        Some(PathEntity::Container)
    } else if route.starts_with("/exec/{id}") {
        Some(PathEntity::Exec)
    } else {
        None
    }
}

/// Whether payload capture must not buffer or show bodies of this route.
pub fn never_capture(method: &str, route: Option<&str>) -> bool {
    match route {
        Some(route) => NEVER_CAPTURE.iter().any(|(m, r)| *m == method && *r == route),
        // An unknown route: nothing known about what it carries.
        None => true,
    }
}

/// Whether a query parameter's value is redacted: a secret-looking name (the `redact`
/// module's rules) or one of [`SECRET_QUERY_PARAMS`].
pub fn is_secret_query_param(name: &str) -> bool {
    redact::is_secret_name(name) || SECRET_QUERY_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p))
}

/// Whether a (decoded) value is a URL with user info (`https://user:token@host/...`): the
/// `remote` of a build, a plugin's remote.
fn has_url_credentials(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
}

/// `url.query` of a Docker request: the raw query with the value of every secret parameter
/// (and of every URL value with credentials) replaced by [`QUERY_REDACTED`]. Parameter names
/// and order are kept.
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) => {
                let secret =
                    is_secret_query_param(&percent_decode(name)) || has_url_credentials(&percent_decode(value));
                out.push_str(name);
                out.push('=');
                out.push_str(if secret { QUERY_REDACTED } else { value });
            }
            None => out.push_str(pair),
        }
    }
    out
}

/// The decoded value of query parameter `name` (first occurrence), as Go's `url.Query` reads
/// it (`+` is a space). `None` when absent.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(n) == name).then(|| percent_decode(v))
    })
}

/// A boolean query parameter as dockerd reads it (`httputils.BoolValue`): present and not
/// empty, `0`, `no`, `false` or `none`. `None` when absent.
pub fn query_bool(query: &str, name: &str) -> Option<bool> {
    let v = query_param(query, name)?;
    let v = v.trim().to_ascii_lowercase();
    Some(!matches!(v.as_str(), "" | "0" | "no" | "false" | "none"))
}

/// Percent-decoding of a query component, `+` as space; invalid escapes are kept as they are
/// and invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    decode(s, true)
}

/// Percent-decoding of a path segment (RFC 3986: `+` is a `+` there, as Go's `url.PathUnescape`
/// reads it and so dockerd's router); invalid escapes kept, invalid UTF-8 replaced.
pub fn percent_decode_path(s: &str) -> String {
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> String {
    if !(s.contains('%') || (plus_is_space && s.contains('+'))) {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::docker::routes;

    #[test]
    fn every_rule_names_a_real_route() {
        for r in RULES {
            assert!(
                routes().any(|(m, p)| m == r.method && p == r.route),
                "{} {} is not in the route table",
                r.method,
                r.route
            );
        }
        for (m, r) in NEVER_CAPTURE {
            assert!(routes().any(|(rm, rp)| rm == *m && rp == *r), "{m} {r}");
        }
    }

    #[test]
    fn query_redaction() {
        assert_eq!(
            redact_query("buildargs=%7B%22NPM_TOKEN%22%3A%22s3cr3t%22%7D&t=app&q=1"),
            "buildargs=REDACTED&t=app&q=1"
        );
        assert_eq!(
            redact_query("password=x&token=y&name=c1"),
            "password=REDACTED&token=REDACTED&name=c1"
        );
        assert_eq!(
            redact_query("remote=https%3A%2F%2Fuser%3Atok%40github.com%2Fa%2Fb&dockerfile=D"),
            "remote=REDACTED&dockerfile=D"
        );
        assert_eq!(
            redact_query("remote=https%3A%2F%2Fgithub.com%2Fa%40b"),
            "remote=https%3A%2F%2Fgithub.com%2Fa%40b"
        );
        assert_eq!(redact_query("changes=ENV+PASSWORD%3Dx&flag"), "changes=REDACTED&flag");
    }

    #[test]
    fn query_values() {
        let q = "fromImage=registry.k8s.io%2Fpause&tag=3.6&follow=1&stream=false&x=a+b";
        assert_eq!(query_param(q, "fromImage").as_deref(), Some("registry.k8s.io/pause"));
        assert_eq!(query_param(q, "x").as_deref(), Some("a b"));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(query_bool(q, "follow"), Some(true));
        assert_eq!(query_bool(q, "stream"), Some(false));
        assert_eq!(query_bool(q, "nope"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode_path("a+b%2Bc%3a1"), "a+b+c:1");
    }
}
