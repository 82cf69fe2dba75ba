//! What a Docker Engine API exchange says, by the table in [`docker_rules`]: the span name and
//! attributes of a request head, the image of a create body, what a JSON response teaches (ids
//! to learn, the error message), the error of a progress line, the event span of an `/events`
//! line, and the span status at the end.
//!
//! Rule it keeps: pure and an allowlist. Nothing here buffers, keeps time or holds state: the
//! session in `observe::http` drives the decoder, keeps the bodies a rule needs and applies
//! what these functions return (the id registry is its state, not ours).

use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS, CONTAINER_NAME, HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, URL_PATH, URL_QUERY, USER_AGENT_ORIGINAL,
};
use serde::Deserialize;

use super::docker::{RouteMatch, match_route};
use super::docker_rules::{self, PathEntity, QueryRule, RequestBody, ResponseBody, RouteRule, ShapeRule};
use super::{image_ref, names, redact};
use crate::trace::attr::Attr;
use crate::trace::span::SpanStatus;

/// Longest rendered (redacted) body of a payload-capture span event. 8 KiB.
pub const MAX_CAPTURE: usize = 8 * 1024;

/// Longest string attribute value taken from the wire (path, query, user agent, messages).
/// 2 KiB.
pub const MAX_ATTR_VALUE: usize = 2 * 1024;

/// Longest `Type` or `Action` of a Docker event used in a span name. 64.
const MAX_EVENT_WORD: usize = 64;

/// Methods HTTP defines; any other is `_OTHER` (semantic conventions), its span named `HTTP`.
const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A full Docker id: 64 lowercase hex digits (not a prefix, not a name).
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The parts of a request head the rules read; no other header is ever looked at.
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target as sent (origin or absolute form).
    pub target: &'a str,
    pub user_agent: Option<&'a str>,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade_asked: bool,
}

/// What a request head says.
#[derive(Debug, Default)]
pub struct Request {
    /// `{METHOD} {route}`, the bare method when no route matches, `HTTP` for an unknown one.
    pub name: String,
    pub attrs: Vec<Attr>,
    pub rule: Option<&'static RouteRule>,
    /// The `{id}` of a `/containers/{id}/...` path, as sent (id, prefix or name).
    pub container_ref: Option<String>,
    /// The `{id}` of an `/exec/{id}/...` path.
    pub exec_id: Option<String>,
    /// `?name=` of a create.
    pub container_name: Option<String>,
    /// `?name=` of a rename: learned on success.
    pub rename_to: Option<String>,
    /// The route's shape rule makes the call long-lived.
    pub long_lived: bool,
    /// The route's bodies are never captured (shown as `***`).
    pub never_capture: bool,
}

/// The span name, attributes and rule of a request head.
pub fn request(head: &Head<'_>) -> Request {
    let method = head.method;
    let (path, query) = split_target(head.target);
    let route = match_route(method, path);
    let rule = route.as_ref().and_then(|m| docker_rules::rule(method, m.route));
    let known = KNOWN_METHODS.contains(&method);
    let name = match (&route, known) {
        (Some(m), _) => format!("{method} {}", m.route),
        (None, true) => method.to_owned(),
        (None, false) => "HTTP".to_owned(),
    };
    let mut req = Request {
        name,
        attrs: head_attrs(head, route.as_ref(), path, query, known),
        rule,
        never_capture: docker_rules::never_capture(method, route.as_ref().map(|m| m.route)),
        ..Request::default()
    };
    if let Some(m) = &route {
        path_params(&mut req, m);
    }
    let q = query.unwrap_or("");
    query_params(&mut req, q);
    req.long_lived = match rule.map_or(ShapeRule::Unary, |r| r.shape) {
        ShapeRule::Unary => false,
        ShapeRule::LongLived => true,
        ShapeRule::LongLivedIf(p) => docker_rules::query_bool(q, p) == Some(true),
        ShapeRule::LongLivedUnless(p) => docker_rules::query_bool(q, p) != Some(false),
        ShapeRule::LongLivedIfUpgrade => head.upgrade_asked,
    };
    req
}

/// The attributes every request has: method, route, path, query (redacted), user agent, API
/// version.
fn head_attrs(
    head: &Head<'_>,
    route: Option<&RouteMatch<'_>>,
    path: &str,
    query: Option<&str>,
    known: bool,
) -> Vec<Attr> {
    let mut attrs = vec![Attr::str(
        HTTP_REQUEST_METHOD,
        if known { head.method } else { "_OTHER" },
    )];
    if let Some(m) = route {
        attrs.push(Attr::str(HTTP_ROUTE, m.route));
    }
    attrs.push(Attr::str(URL_PATH, capped(path, MAX_ATTR_VALUE)));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        attrs.push(Attr::str(
            URL_QUERY,
            capped(&docker_rules::redact_query(q), MAX_ATTR_VALUE),
        ));
    }
    if let Some(ua) = head.user_agent {
        let ua = if redact::is_secret_header("user-agent") {
            redact::REDACTED
        } else {
            ua
        };
        attrs.push(Attr::str(USER_AGENT_ORIGINAL, capped(ua, MAX_ATTR_VALUE)));
    }
    if let Some(v) = route.and_then(|m| m.api_version) {
        attrs.push(Attr::str(names::DOCKER_API_VERSION, v));
    }
    attrs
}

/// What the path's parameters name: a container or exec, an image.
fn path_params(req: &mut Request, m: &RouteMatch<'_>) {
    match (docker_rules::path_entity(m.route), m.params.get("id")) {
        (Some(PathEntity::Container), Some(r)) => req.container_ref = Some(capped(r, MAX_ATTR_VALUE)),
        (Some(PathEntity::Exec), Some(r)) => req.exec_id = Some(capped(r, MAX_ATTR_VALUE)),
        _ => {}
    }
    if req.rule.is_some_and(|r| r.path_image)
        && let Some(image) = m.params.get("name")
    {
        push_image(&mut req.attrs, &docker_rules::percent_decode_path(image), None);
    }
}

/// What the route's query rules read from `q`.
fn query_params(req: &mut Request, q: &str) {
    for query_rule in req.rule.map_or(&[][..], |r| r.query) {
        match query_rule {
            QueryRule::ContainerName => {
                if let Some(n) = docker_rules::query_param(q, "name").filter(|n| !n.is_empty()) {
                    let n = capped(&n, MAX_ATTR_VALUE);
                    req.attrs.push(Attr::str(CONTAINER_NAME, n.clone()));
                    req.container_name = Some(n);
                }
            }
            QueryRule::PullImage => {
                if let Some(image) = docker_rules::query_param(q, "fromImage").filter(|i| !i.is_empty()) {
                    let tag = docker_rules::query_param(q, "tag");
                    push_image(&mut req.attrs, &image, tag.as_deref());
                }
            }
            QueryRule::Rename => {
                req.rename_to = docker_rules::query_param(q, "name").filter(|n| !n.is_empty());
            }
        }
    }
}

/// The attributes of a complete request body the route's rule reads (a create's `Image`).
pub fn request_body(rule: Option<&RouteRule>, buf: &[u8], attrs: &mut Vec<Attr>) {
    if rule.and_then(|r| r.request) == Some(RequestBody::ContainerCreate)
        && let Ok(body) = serde_json::from_slice::<CreateBody>(buf)
        && let Some(image) = body.image.filter(|i| !i.is_empty())
    {
        push_image(attrs, &image, None);
    }
}

/// What a complete JSON response body says.
#[derive(Debug, Default, PartialEq)]
pub struct Response {
    /// `docker.error.message` of a response >= 400.
    pub error_message: Option<String>,
    /// A full container id (create, inspect, exec inspect).
    pub container_id: Option<String>,
    /// Full container ids, with their names, for the id registry to learn, in order.
    pub learn: Vec<(String, Option<String>)>,
    /// An exec create answered with this exec id.
    pub exec_created: Option<String>,
}

/// What a complete JSON response body with HTTP `status` says by the route's rule; a create's
/// id is learned with `create_name` (its `?name=`).
pub fn response(rule: Option<&RouteRule>, status: u16, buf: &[u8], create_name: Option<&str>) -> Response {
    let mut out = Response::default();
    if status >= 400 {
        if let Ok(e) = serde_json::from_slice::<ErrorBody>(buf) {
            out.error_message = e.message.map(|m| capped(&m, MAX_ATTR_VALUE));
        }
        return out;
    }
    if !(200..300).contains(&status) {
        return out;
    }
    match rule.and_then(|r| r.response) {
        Some(ResponseBody::ContainerCreated) => {
            if let Ok(b) = serde_json::from_slice::<IdBody>(buf)
                && let Some(id) = b.id.filter(|i| is_full_id(i))
            {
                out.learn.push((id.clone(), create_name.map(str::to_owned)));
                out.container_id = Some(id);
            }
        }
        Some(ResponseBody::ContainerInspect) => {
            if let Ok(b) = serde_json::from_slice::<IdBody>(buf)
                && let Some(id) = b.id.filter(|i| is_full_id(i))
            {
                out.learn.push((id.clone(), b.name));
                out.container_id = Some(id);
            }
        }
        Some(ResponseBody::ContainerList) => {
            if let Ok(list) = serde_json::from_slice::<Vec<ListEntry>>(buf) {
                for c in list {
                    // The container's own name, not a legacy link (`/web/db`).
                    let name = c
                        .names
                        .into_iter()
                        .flatten()
                        .find(|n| !n.trim_start_matches('/').contains('/'));
                    if let Some(id) = c.id {
                        out.learn.push((id, name));
                    }
                }
            }
        }
        Some(ResponseBody::ExecCreated) => {
            if let Ok(b) = serde_json::from_slice::<IdBody>(buf)
                && let Some(id) = b.id.filter(|i| !i.is_empty())
            {
                out.exec_created = Some(capped(&id, MAX_ATTR_VALUE));
            }
        }
        Some(ResponseBody::ExecInspect) => {
            if let Ok(b) = serde_json::from_slice::<ExecInspectBody>(buf)
                && let Some(c) = b.container_id.filter(|c| is_full_id(c))
            {
                out.container_id = Some(c);
            }
        }
        _ => {}
    }
    out
}

/// The error of a progress stream line (`{"errorDetail":{"message":...},"error":...}`).
pub fn progress_error(line: &[u8]) -> Option<String> {
    if !contains(line, b"\"error") {
        return None;
    }
    let p: ProgressLine = serde_json::from_slice(line).ok()?;
    let message = p
        .error_detail
        .and_then(|d| d.message)
        .or(p.error)
        .filter(|m| !m.is_empty())?;
    Some(capped(&message, MAX_ATTR_VALUE))
}

/// What an event teaches the id registry.
#[derive(Debug, PartialEq)]
pub enum IdChange {
    Nothing,
    /// A container was created or renamed: its full id and name.
    Learn(String, Option<String>),
    /// A container was destroyed: its name may be reused.
    Forget(String),
}

/// One `/events` line as an event span.
#[derive(Debug)]
pub struct Event {
    /// `event {Type} {Action}`.
    pub name: String,
    pub attributes: Vec<Attr>,
    pub ids: IdChange,
}

/// One `/events` line; `None` when it is not an event.
pub fn event(line: &[u8]) -> Option<Event> {
    let ev = serde_json::from_slice::<EventLine>(line).ok()?;
    let kind = word(ev.kind.as_deref().unwrap_or("unknown"));
    let action = word(ev.action.as_deref().or(ev.status.as_deref()).unwrap_or("unknown"));
    let mut attributes = Vec::with_capacity(4);
    let mut ids = IdChange::Nothing;
    if kind == "container"
        && let Some(actor) = &ev.actor
        && let Some(id) = actor.id.as_deref().filter(|i| is_full_id(i))
    {
        attributes.push(Attr::str(CONTAINER_ID, id));
        let name = actor.attributes.as_ref().and_then(|a| a.name.as_deref());
        if let Some(n) = name {
            attributes.push(Attr::str(CONTAINER_NAME, capped(n, MAX_ATTR_VALUE)));
        }
        ids = match action.as_str() {
            "create" | "rename" => IdChange::Learn(id.to_owned(), name.map(str::to_owned)),
            "destroy" => IdChange::Forget(id.to_owned()),
            _ => IdChange::Nothing,
        };
    }
    attributes.push(Attr::str(names::DOCKER_EVENT_TYPE, kind.clone()));
    attributes.push(Attr::str(names::DOCKER_EVENT_ACTION, action.clone()));
    Some(Event {
        name: format!("event {kind} {action}"),
        attributes,
        ids,
    })
}

/// How an exchange ended, for its last attributes.
pub struct Outcome<'a> {
    pub status: Option<u16>,
    /// The full container id, if known by now.
    pub container: Option<String>,
    /// The path's container reference, when no full id is known.
    pub container_ref: Option<&'a str>,
    pub exec_id: Option<&'a str>,
    /// `docker.error.message`: the response's, else the progress stream's.
    pub message: Option<&'a str>,
    pub req_bytes: u64,
    pub resp_bytes: u64,
}

/// The attributes an exchange's end adds.
pub fn end_attrs(o: &Outcome<'_>, attrs: &mut Vec<Attr>) {
    if let Some(s) = o.status {
        attrs.push(Attr::int(HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
    }
    match (&o.container, o.container_ref) {
        (Some(c), _) => attrs.push(Attr::str(CONTAINER_ID, c.clone())),
        (None, Some(r)) => attrs.push(Attr::str(names::CONTAINER_REF, r)),
        (None, None) => {}
    }
    if let Some(exec) = o.exec_id {
        attrs.push(Attr::str(names::CONTAINER_EXEC_ID, exec));
    }
    if let Some(m) = o.message {
        attrs.push(Attr::str(names::DOCKER_ERROR_MESSAGE, m));
    }
    attrs.push(Attr::int(names::REQUEST_BYTES, saturating_i64(o.req_bytes)));
    attrs.push(Attr::int(names::RESPONSE_BYTES, saturating_i64(o.resp_bytes)));
}

/// Error on 5xx (the daemon's message, else `HTTP {status}`) and when a progress stream
/// reported an error; else unset.
pub fn span_status(status: Option<u16>, message: Option<String>, stream_error: Option<&str>) -> SpanStatus {
    match (status, stream_error) {
        (Some(s), _) if s >= 500 => SpanStatus::Error(message.unwrap_or_else(|| format!("HTTP {s}"))),
        (_, Some(e)) => SpanStatus::Error(e.to_owned()),
        _ => SpanStatus::Unset,
    }
}

/// A captured JSON body, redacted (secret keys, `Env` values as `KEY=***`) and capped.
pub fn render(buf: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(buf) {
        Ok(mut v) => {
            redact::redact_json(&mut v);
            capped(&v.to_string(), MAX_CAPTURE)
        }
        Err(_) => format!("<{} bytes, not json>", buf.len()),
    }
}

/// An event `Type` or `Action` fit for a span name: cut at the first `:` (`exec_start: cmd`
/// carries a command line), trimmed, bounded.
fn word(s: &str) -> String {
    let s = s.split(':').next().unwrap_or("").trim();
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        capped(s, MAX_EVENT_WORD)
    }
}

/// Image attributes from a reference; `tag` (a pull's `?tag=`, a tag or a digest) wins over
/// the reference's own.
fn push_image(attrs: &mut Vec<Attr>, reference: &str, tag: Option<&str>) {
    // `sha256:7cdd7cbb` or `7cdd7cbbe2d0` is an image id, not a name `sha256` tagged `7cdd7cbb`.
    if tag.is_none() && image_ref::is_docker_image_id(reference.trim()) {
        attrs.push(Attr::str(CONTAINER_IMAGE_ID, capped(reference.trim(), MAX_ATTR_VALUE)));
        return;
    }
    let r = image_ref::parse(reference);
    if let Some(name) = r.name {
        attrs.push(Attr::str(CONTAINER_IMAGE_NAME, capped(name, MAX_ATTR_VALUE)));
    }
    let (tag, digest) = match tag.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => (r.tag, Some(t)),
        Some(t) => (Some(t), r.digest),
        None => (r.tag, r.digest),
    };
    if let Some(tag) = tag {
        attrs.push(Attr::list(CONTAINER_IMAGE_TAGS, vec![capped(tag, MAX_ATTR_VALUE)]));
    }
    if let Some(digest) = digest {
        attrs.push(Attr::str(CONTAINER_IMAGE_ID, capped(digest, MAX_ATTR_VALUE)));
    }
}

/// `path` and `query` of a request target (origin form, or absolute form whose scheme and
/// authority are dropped).
fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

// The few body fields rules read; serde skips the rest (`Env`, `Config`...) without keeping it.

#[derive(Deserialize)]
struct CreateBody {
    #[serde(rename = "Image")]
    image: Option<String>,
}

#[derive(Deserialize)]
struct IdBody {
    #[serde(rename = "Id")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ListEntry {
    #[serde(rename = "Id")]
    id: Option<String>,
    #[serde(rename = "Names")]
    names: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ExecInspectBody {
    #[serde(rename = "ContainerID")]
    container_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

#[derive(Deserialize)]
struct ProgressLine {
    error: Option<String>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

#[derive(Deserialize)]
struct EventLine {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Action")]
    action: Option<String>,
    status: Option<String>,
    #[serde(rename = "Actor")]
    actor: Option<EventActor>,
}

#[derive(Deserialize)]
struct EventActor {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Attributes")]
    attributes: Option<EventActorAttributes>,
}

#[derive(Deserialize)]
struct EventActorAttributes {
    name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::attr::AttrValue;

    fn head<'a>(method: &'a str, target: &'a str) -> Head<'a> {
        Head {
            method,
            target,
            user_agent: None,
            upgrade_asked: false,
        }
    }

    fn str_attr<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a str> {
        attrs.iter().find(|a| a.key == key).and_then(|a| match &a.value {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The name is the templated route without the version prefix; an unknown method is
    /// `_OTHER` in a span named `HTTP`.
    #[test]
    fn names_and_methods() {
        let r = request(&head("POST", "/v1.41/containers/abc/start"));
        assert_eq!(r.name, "POST /containers/{id}/start");
        assert_eq!(r.container_ref.as_deref(), Some("abc"));
        assert_eq!(str_attr(&r.attrs, names::DOCKER_API_VERSION), Some("1.41"));
        let r = request(&head("BREW", "/coffee"));
        assert_eq!(r.name, "HTTP");
        assert_eq!(str_attr(&r.attrs, HTTP_REQUEST_METHOD), Some("_OTHER"));
        assert!(!r.long_lived);
    }

    /// Shape rules read the query (`logs?follow=1`); attach is long-lived whatever it asks.
    #[test]
    fn long_lived_by_rule() {
        assert!(request(&head("GET", "/containers/abc/logs?follow=1")).long_lived);
        assert!(!request(&head("GET", "/containers/abc/logs")).long_lived);
        let mut attach = head("POST", "/containers/abc/attach?stream=1");
        attach.upgrade_asked = true;
        assert!(request(&attach).long_lived);
    }

    /// A create's response id is learned with the create's name; an error's message is kept.
    #[test]
    fn responses_teach_ids_and_errors() {
        let create = docker_rules::rule("POST", "/containers/create");
        let id = "a".repeat(64);
        let body = format!("{{\"Id\":\"{id}\",\"Warnings\":[]}}");
        let said = response(create, 201, body.as_bytes(), Some("web"));
        assert_eq!(said.container_id.as_deref(), Some(id.as_str()));
        assert_eq!(said.learn, vec![(id.clone(), Some("web".to_owned()))]);
        let said = response(create, 409, br#"{"message":"name in use"}"#, Some("web"));
        assert_eq!(said.error_message.as_deref(), Some("name in use"));
        assert!(said.learn.is_empty());
    }

    /// An event names its span by type and action (cut at `:`) and says what to learn.
    #[test]
    fn events() {
        let id = "b".repeat(64);
        let line = format!(r#"{{"Type":"container","Action":"exec_start: sh -c x","Actor":{{"ID":"{id}"}}}}"#);
        let ev = event(line.as_bytes()).expect("an event");
        assert_eq!(ev.name, "event container exec_start");
        assert_eq!(ev.ids, IdChange::Nothing);
        let line = format!(r#"{{"Type":"container","Action":"destroy","Actor":{{"ID":"{id}"}}}}"#);
        assert_eq!(event(line.as_bytes()).expect("an event").ids, IdChange::Forget(id));
        assert!(event(b"not json").is_none());
    }
}
