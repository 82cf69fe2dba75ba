//! Docker Engine API routes (v1.41 to v1.47): one static, method-aware table that turns a
//! request path into its templated route (`/containers/{id}/start`), the API version of
//! its `/v1.NN` prefix and the path parameters. Parameter names follow the Docker docs.

use std::collections::HashMap;
use std::sync::OnceLock;

/// A route, in Docker's template form.
#[derive(Debug, Clone, Copy)]
struct Route {
    method: &'static str,
    /// Template; a `{param}` matches one path segment, or, when `greedy`, one or more
    /// (image, plugin and distribution names contain slashes: `registry.k8s.io/pause:3.6`).
    path: &'static str,
    greedy: bool,
}

const fn r(method: &'static str, path: &'static str) -> Route {
    Route {
        method,
        path,
        greedy: false,
    }
}

/// A route whose single parameter may span several segments (matched by prefix and suffix).
const fn g(method: &'static str, path: &'static str) -> Route {
    Route {
        method,
        path,
        greedy: true,
    }
}

/// Every route, in the order of the Docker Engine API reference.
static ROUTES: &[Route] = &[
    // System
    r("GET", "/_ping"),
    r("HEAD", "/_ping"),
    r("GET", "/version"),
    r("GET", "/info"),
    r("GET", "/events"),
    r("GET", "/system/df"),
    r("POST", "/auth"),
    // Containers
    r("GET", "/containers/json"),
    r("POST", "/containers/create"),
    r("GET", "/containers/{id}/json"),
    r("GET", "/containers/{id}/top"),
    r("GET", "/containers/{id}/logs"),
    r("GET", "/containers/{id}/changes"),
    r("GET", "/containers/{id}/export"),
    r("GET", "/containers/{id}/stats"),
    r("POST", "/containers/{id}/resize"),
    r("POST", "/containers/{id}/start"),
    r("POST", "/containers/{id}/stop"),
    r("POST", "/containers/{id}/restart"),
    r("POST", "/containers/{id}/kill"),
    r("POST", "/containers/{id}/update"),
    r("POST", "/containers/{id}/rename"),
    r("POST", "/containers/{id}/pause"),
    r("POST", "/containers/{id}/unpause"),
    r("POST", "/containers/{id}/attach"),
    r("GET", "/containers/{id}/attach/ws"),
    r("POST", "/containers/{id}/wait"),
    r("DELETE", "/containers/{id}"),
    r("HEAD", "/containers/{id}/archive"),
    r("GET", "/containers/{id}/archive"),
    r("PUT", "/containers/{id}/archive"),
    r("POST", "/containers/prune"),
    // Exec
    r("POST", "/containers/{id}/exec"),
    r("POST", "/exec/{id}/start"),
    r("POST", "/exec/{id}/resize"),
    r("GET", "/exec/{id}/json"),
    // Images
    r("GET", "/images/json"),
    r("POST", "/build"),
    r("POST", "/build/prune"),
    r("POST", "/build/cancel"),
    r("POST", "/images/create"),
    r("GET", "/images/search"),
    r("POST", "/images/prune"),
    r("POST", "/commit"),
    r("GET", "/images/get"),
    r("POST", "/images/load"),
    g("GET", "/images/{name}/json"),
    g("GET", "/images/{name}/history"),
    g("POST", "/images/{name}/push"),
    g("POST", "/images/{name}/tag"),
    g("GET", "/images/{name}/get"),
    g("DELETE", "/images/{name}"),
    // Networks
    r("GET", "/networks"),
    r("GET", "/networks/{id}"),
    r("DELETE", "/networks/{id}"),
    r("POST", "/networks/create"),
    r("POST", "/networks/{id}/connect"),
    r("POST", "/networks/{id}/disconnect"),
    r("POST", "/networks/prune"),
    // Volumes
    r("GET", "/volumes"),
    r("POST", "/volumes/create"),
    r("GET", "/volumes/{name}"),
    r("PUT", "/volumes/{name}"),
    r("DELETE", "/volumes/{name}"),
    r("POST", "/volumes/prune"),
    // Swarm
    r("GET", "/swarm"),
    r("POST", "/swarm/init"),
    r("POST", "/swarm/join"),
    r("POST", "/swarm/leave"),
    r("POST", "/swarm/update"),
    r("GET", "/swarm/unlockkey"),
    r("POST", "/swarm/unlock"),
    // Nodes
    r("GET", "/nodes"),
    r("GET", "/nodes/{id}"),
    r("DELETE", "/nodes/{id}"),
    r("POST", "/nodes/{id}/update"),
    // Services
    r("GET", "/services"),
    r("POST", "/services/create"),
    r("GET", "/services/{id}"),
    r("DELETE", "/services/{id}"),
    r("POST", "/services/{id}/update"),
    r("GET", "/services/{id}/logs"),
    // Tasks
    r("GET", "/tasks"),
    r("GET", "/tasks/{id}"),
    r("GET", "/tasks/{id}/logs"),
    // Secrets
    r("GET", "/secrets"),
    r("POST", "/secrets/create"),
    r("GET", "/secrets/{id}"),
    r("DELETE", "/secrets/{id}"),
    r("POST", "/secrets/{id}/update"),
    // Configs
    r("GET", "/configs"),
    r("POST", "/configs/create"),
    r("GET", "/configs/{id}"),
    r("DELETE", "/configs/{id}"),
    r("POST", "/configs/{id}/update"),
    // Plugins
    r("GET", "/plugins"),
    r("GET", "/plugins/privileges"),
    r("POST", "/plugins/pull"),
    r("POST", "/plugins/create"),
    g("GET", "/plugins/{name}/json"),
    g("DELETE", "/plugins/{name}"),
    g("POST", "/plugins/{name}/enable"),
    g("POST", "/plugins/{name}/disable"),
    g("POST", "/plugins/{name}/upgrade"),
    g("POST", "/plugins/{name}/push"),
    g("POST", "/plugins/{name}/set"),
    // Distribution, session, BuildKit
    g("GET", "/distribution/{name}/json"),
    r("POST", "/session"),
    r("POST", "/grpc"),
];

/// Most parameters in one route.
const MAX_PARAMS: usize = 2;

/// Path parameters of a matched route, by their template names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a> {
    items: [Option<(&'static str, &'a str)>; MAX_PARAMS],
}

impl<'a> Params<'a> {
    /// The value of `{name}`, as it appears in the path (not percent-decoded).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// All parameters as `(name, value)`, in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'a str)> + '_ {
        self.items.iter().flatten().copied()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.items.iter().flatten().count()
    }

    /// True when the route has no parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, name: &'static str, value: &'a str) -> bool {
        match self.items.iter_mut().find(|i| i.is_none()) {
            Some(slot) => {
                *slot = Some((name, value));
                true
            }
            None => false,
        }
    }
}

/// A request matched to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The route template, e.g. `/containers/{id}/start`.
    pub route: &'static str,
    /// The version of the `/v1.NN` prefix, e.g. `1.41`, if the path had one.
    pub api_version: Option<&'a str>,
    /// The path parameters.
    pub params: Params<'a>,
}

/// Splits an optional `/v{digits and dots}` prefix off `path`.
fn strip_version(path: &str) -> (Option<&str>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (version, after) = rest.split_at(end);
    if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
        return (None, path);
    }
    if after.starts_with('/') {
        (Some(version), after)
    } else {
        (None, path)
    }
}

/// Matches `path` segment by segment against a template with single-segment params.
fn match_segments<'a>(template: &'static str, path: &'a str) -> Option<Params<'a>> {
    let mut params = Params::default();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) => {
                if let Some(name) = ts.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                    if ps.is_empty() || !params.push(name, ps) {
                        return None;
                    }
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Matches `path` against a template with one multi-segment param: fixed prefix and suffix.
fn match_greedy<'a>(template: &'static str, path: &'a str) -> Option<Params<'a>> {
    let open = template.find('{')?;
    let close = open + template[open..].find('}')?;
    let (prefix, name, suffix) = (&template[..open], &template[open + 1..close], &template[close + 1..]);
    let value = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if value.is_empty() || value.starts_with('/') || value.ends_with('/') {
        return None;
    }
    let mut params = Params::default();
    params.push(name, value);
    Some(params)
}

/// The route of a Docker Engine API request. `path` is the request path (a query, if
/// left on, is ignored). None for a path or method the API does not have.
pub fn match_route<'a>(method: &str, path: &'a str) -> Option<RouteMatch<'a>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (api_version, path) = strip_version(path);
    // Among matches, the most literal wins: fewer parameters, then single-segment ones.
    let mut best: Option<(usize, bool, &'static str, Params<'a>)> = None;
    for route in candidates(method, first_segment(path)) {
        let found = if route.greedy {
            match_greedy(route.path, path)
        } else {
            match_segments(route.path, path)
        };
        let Some(params) = found else { continue };
        let better = match &best {
            None => true,
            Some((n, greedy, _, _)) => (params.len(), route.greedy) < (*n, *greedy),
        };
        if better {
            best = Some((params.len(), route.greedy, route.path, params));
        }
    }
    best.map(|(_, _, route, params)| RouteMatch {
        route,
        api_version,
        params,
    })
}

/// The first segment of a path (`containers` of `/containers/abc/start`).
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split_once('/').map_or(rest, |(first, _)| first)
}

/// The routes a request can match: the table's routes of its method whose template starts
/// with its first segment (every template's first segment is literal). Indexed once, so a
/// request is tried against a handful of templates instead of the whole table.
fn candidates(method: &str, first: &str) -> &'static [&'static Route] {
    type Index = HashMap<&'static str, HashMap<&'static str, Vec<&'static Route>>>;
    static INDEX: OnceLock<Index> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut index = Index::new();
        for route in ROUTES {
            let first = first_segment(route.path);
            index
                .entry(route.method)
                .or_default()
                .entry(first)
                .or_default()
                .push(route);
        }
        index
    });
    index
        .get(method)
        .and_then(|by_first| by_first.get(first))
        .map_or(&[], Vec::as_slice)
}

/// The span name of a Docker request: `{METHOD} {route}`, or just `{METHOD}` when the
/// route is unknown (never the raw path: it carries ids).
pub fn span_name(method: &str, path: &str) -> String {
    match match_route(method, path) {
        Some(m) => format!("{method} {}", m.route),
        None => method.to_owned(),
    }
}

/// Every (method, route template) in the table, for tests and documentation.
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.method, r.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `candidates` indexes templates by their first segment: it must never be a parameter.
    #[test]
    fn every_template_starts_with_a_literal_segment() {
        for (method, path) in routes() {
            let first = first_segment(path);
            assert!(!first.is_empty() && !first.contains('{'), "{method} {path}");
        }
    }

    /// A concrete path for a template: `{id}` → `abc123`, greedy `{name}` → a name with
    /// slashes and a tag.
    fn concrete(route: &Route) -> String {
        let value = if route.greedy {
            "registry.k8s.io/pause:3.6"
        } else {
            "abc123"
        };
        let mut out = String::new();
        let mut rest = route.path;
        while let Some(open) = rest.find('{') {
            let close = open + rest[open..].find('}').expect("closed param");
            out.push_str(&rest[..open]);
            out.push_str(value);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn every_route_matches_itself_with_and_without_version() {
        assert!(ROUTES.len() > 100, "table has {} routes", ROUTES.len());
        for route in ROUTES {
            let path = concrete(route);
            let m = match_route(route.method, &path).unwrap_or_else(|| panic!("{} {path} did not match", route.method));
            assert_eq!(m.route, route.path, "{} {path}", route.method);
            assert_eq!(m.api_version, None);
            for (name, value) in m.params.iter() {
                assert!(route.path.contains(&format!("{{{name}}}")));
                assert!(value == "abc123" || value == "registry.k8s.io/pause:3.6");
            }
            for v in ["1.41", "1.43", "1.47"] {
                let versioned = format!("/v{v}{path}");
                let m = match_route(route.method, &versioned).expect("versioned");
                assert_eq!(m.route, route.path, "{} {versioned}", route.method);
                assert_eq!(m.api_version, Some(v));
            }
            assert_eq!(
                span_name(route.method, &path),
                format!("{} {}", route.method, route.path)
            );
        }
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {}", r.method, r.path);
            assert_eq!(r.greedy, r.path.contains("{name}") && !r.path.starts_with("/volumes"));
        }
    }

    #[test]
    fn containers_and_exec_params() {
        let m = match_route(
            "POST",
            "/v1.41/containers/e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb/wait",
        )
        .unwrap();
        assert_eq!(m.route, "/containers/{id}/wait");
        assert_eq!(m.api_version, Some("1.41"));
        assert_eq!(
            m.params.get("id"),
            Some("e64c5f722a28a2c41c39be340d3753d9b2bafe37b5283cbf33cb895eb110e5fb")
        );
        assert_eq!(m.params.len(), 1);

        let m = match_route("POST", "/v1.41/exec/bf7c/start").unwrap();
        assert_eq!(m.route, "/exec/{id}/start");
        assert_eq!(m.params.get("id"), Some("bf7c"));

        let m = match_route("DELETE", "/v1.41/containers/3439457a?force=1").unwrap();
        assert_eq!(m.route, "/containers/{id}");
        assert_eq!(m.params.get("id"), Some("3439457a"));

        let m = match_route("GET", "/containers/c1/attach/ws").unwrap();
        assert_eq!(m.route, "/containers/{id}/attach/ws");
        assert_eq!(
            match_route("HEAD", "/containers/c1/archive").unwrap().route,
            "/containers/{id}/archive"
        );
        assert_eq!(
            match_route("PUT", "/containers/c1/archive").unwrap().route,
            "/containers/{id}/archive"
        );
    }

    #[test]
    fn literals_beat_params() {
        assert_eq!(
            match_route("GET", "/containers/json").unwrap().route,
            "/containers/json"
        );
        assert!(match_route("GET", "/containers/json").unwrap().params.is_empty());
        assert_eq!(
            match_route("POST", "/containers/create").unwrap().route,
            "/containers/create"
        );
        assert_eq!(
            match_route("POST", "/networks/create").unwrap().route,
            "/networks/create"
        );
        assert_eq!(match_route("GET", "/images/json").unwrap().route, "/images/json");
        assert_eq!(match_route("GET", "/images/get").unwrap().route, "/images/get");
        assert_eq!(
            match_route("GET", "/plugins/privileges").unwrap().route,
            "/plugins/privileges"
        );
        assert_eq!(match_route("POST", "/plugins/pull").unwrap().route, "/plugins/pull");
        assert_eq!(match_route("POST", "/volumes/prune").unwrap().route, "/volumes/prune");
    }

    #[test]
    fn image_names_with_slashes() {
        let m = match_route("GET", "/v1.41/images/registry.k8s.io/pause:3.6/json").unwrap();
        assert_eq!(m.route, "/images/{name}/json");
        assert_eq!(m.params.get("name"), Some("registry.k8s.io/pause:3.6"));
        assert_eq!(m.api_version, Some("1.41"));

        let m = match_route("POST", "/images/localhost:5000/team/app/tag?repo=x&tag=y").unwrap();
        assert_eq!(m.route, "/images/{name}/tag");
        assert_eq!(m.params.get("name"), Some("localhost:5000/team/app"));

        let m = match_route("DELETE", "/v1.47/images/registry.k8s.io/pause:3.6").unwrap();
        assert_eq!(m.route, "/images/{name}");
        assert_eq!(m.params.get("name"), Some("registry.k8s.io/pause:3.6"));

        let m = match_route("GET", "/images/sha256:7cdd7cbb/history").unwrap();
        assert_eq!(m.params.get("name"), Some("sha256:7cdd7cbb"));

        let m = match_route("POST", "/v1.44/build/cancel?id=b1").unwrap();
        assert_eq!(m.route, "/build/cancel");
        assert_eq!(span_name("POST", "/v1.44/build/cancel?id=b1"), "POST /build/cancel");

        let m = match_route("GET", "/images/nosuch-fixture/json").unwrap();
        assert_eq!(m.params.get("name"), Some("nosuch-fixture"));

        let m = match_route("GET", "/distribution/docker.io/library/busybox:latest/json").unwrap();
        assert_eq!(m.route, "/distribution/{name}/json");
        assert_eq!(m.params.get("name"), Some("docker.io/library/busybox:latest"));

        let m = match_route("POST", "/plugins/vieux/sshfs:latest/enable").unwrap();
        assert_eq!(m.route, "/plugins/{name}/enable");
        assert_eq!(m.params.get("name"), Some("vieux/sshfs:latest"));

        assert!(match_route("GET", "/images//json").is_none());
    }

    #[test]
    fn methods_are_distinguished() {
        assert!(match_route("GET", "/containers/c1/start").is_none());
        assert!(match_route("POST", "/_ping").is_none());
        assert_eq!(match_route("HEAD", "/_ping").unwrap().route, "/_ping");
        assert_eq!(match_route("GET", "/networks/n1").unwrap().route, "/networks/{id}");
        assert_eq!(match_route("DELETE", "/networks/n1").unwrap().route, "/networks/{id}");
        assert!(match_route("get", "/version").is_none());
    }

    #[test]
    fn unknown_paths() {
        for (method, path) in [
            ("GET", "/nope"),
            ("GET", "/"),
            ("GET", ""),
            ("GET", "/v1.41"),
            ("GET", "/v1.41/"),
            ("GET", "/containers"),
            ("GET", "/containers//json"),
            ("GET", "/containers/a/b/json"),
            ("GET", "/version/"),
            ("POST", "/v1.41/containers/abc/frobnicate"),
            ("GET", "/vx/version"),
        ] {
            assert!(match_route(method, path).is_none(), "{method} {path}");
            assert_eq!(span_name(method, path), method, "{method} {path}");
        }
    }

    #[test]
    fn version_prefix() {
        assert_eq!(strip_version("/v1.41/version"), (Some("1.41"), "/version"));
        assert_eq!(strip_version("/v1/version"), (Some("1"), "/version"));
        assert_eq!(strip_version("/version"), (None, "/version"));
        assert_eq!(strip_version("/volumes"), (None, "/volumes"));
        assert_eq!(strip_version("/v.1/x"), (None, "/v.1/x"));
        let m = match_route("GET", "/v1.44/volumes/data").unwrap();
        assert_eq!((m.route, m.api_version), ("/volumes/{name}", Some("1.44")));
        assert_eq!(m.params.get("name"), Some("data"));
    }

    #[test]
    fn span_names() {
        assert_eq!(span_name("HEAD", "/_ping"), "HEAD /_ping");
        assert_eq!(span_name("GET", "/v1.41/version"), "GET /version");
        assert_eq!(
            span_name("POST", "/v1.41/containers/3439/start"),
            "POST /containers/{id}/start"
        );
        assert_eq!(
            span_name("GET", "/v1.41/images/registry.k8s.io/pause:3.6/json"),
            "GET /images/{name}/json"
        );
        assert_eq!(span_name("GET", "/secret/abc"), "GET");
    }
}
