//! The Docker Engine API session: the HTTP/1.1 exchanges of one connection to dockerd, each
//! one call (DESIGN.md, span contract), from the passive decoder's events. A hijacked
//! attach/exec session is one call from its request to the close.
//!
//! Rule it keeps: attributes are an allowlist (`schema::docker_rules`); headers are never
//! attributes except `User-Agent`; a body is buffered only where a rule needs it, only up to
//! [`MAX_JSON_BODY`] and only while payloads are on; streams are scanned line by line with a
//! line bounded by [`MAX_STREAM_LINE`]. Every started call ends exactly once.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS, CONTAINER_NAME, HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, URL_PATH, URL_QUERY, USER_AGENT_ORIGINAL,
};
use serde::Deserialize;

use super::docker_ids::{DockerIds, is_full_id};
use super::session::{Injected, Session, SessionCtx};
use crate::schema::docker::match_route;
use crate::schema::docker_rules::{
    self, OnSuccess, PathEntity, QueryRule, RequestBody, ResponseBody, RouteRule, ShapeRule, names as docker_names,
};
use crate::schema::{image_ref, redact};
use crate::trace::attr::{Attr, names};
use crate::trace::call::{Call, CallStart, RemoteParent, Shape, StreamEvent};
use crate::trace::span::{SpanEventRecord, SpanId, SpanStatus, TraceId, new_span_id};
use crate::wire::Direction;
use crate::wire::h1::{ExchangeId, H1Decoder, H1Event, Headers};
use crate::wire::inject::Injection;

/// Largest JSON body (request or response) buffered for a rule or for payload capture; a
/// longer one is skipped and counted, never parsed. 64 KiB.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Longest line of a progress or event stream kept while it arrives; a longer line is
/// skipped and counted. 16 KiB.
pub const MAX_STREAM_LINE: usize = 16 * 1024;

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

/// Counters of what a session left undecoded (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Bodies a rule or capture wanted but that were not parsed: too large, or payloads off.
    pub skipped_bodies: u64,
    /// Stream lines longer than [`MAX_STREAM_LINE`], skipped.
    pub skipped_lines: u64,
}

/// One connection's Docker Engine API session.
pub struct HttpSession {
    ctx: SessionCtx,
    ids: Arc<DockerIds>,
    decoder: H1Decoder,
    /// Reused event buffer.
    events: Vec<H1Event>,
    /// Exchanges started and not ended, in order (bounded by the decoder's pipelining limit).
    open: VecDeque<Exchange>,
    payloads: bool,
    gave_up: Option<&'static str>,
    closed: bool,
    /// The request side is between messages.
    req_idle: bool,
    /// When the chunk carrying the first byte of the next request head was read.
    head_first_at: Option<Instant>,
    stats: HttpStats,
    /// `stats` as handed over by the last `take_skipped`.
    reported: HttpStats,
    /// Identities propagation gave to requests not yet decoded.
    injected: Injected,
}

impl fmt::Debug for HttpSession {
    // Counts only: buffered bodies can hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSession")
            .field("conn", &self.ctx.conn.id)
            .field("open", &self.open.len())
            .field("payloads", &self.payloads)
            .field("gave_up", &self.gave_up)
            .field("closed", &self.closed)
            .field("stats", &self.stats)
            .finish()
    }
}

impl HttpSession {
    /// A session for a new connection; `ids` is shared by the intercept's Docker sessions.
    pub fn new(ctx: SessionCtx, ids: Arc<DockerIds>) -> HttpSession {
        HttpSession {
            ctx,
            ids,
            decoder: H1Decoder::default(),
            events: Vec::new(),
            open: VecDeque::new(),
            payloads: true,
            gave_up: None,
            closed: false,
            req_idle: true,
            head_first_at: None,
            stats: HttpStats::default(),
            reported: HttpStats::default(),
            injected: Injected::default(),
        }
    }

    /// What this session left undecoded so far.
    pub fn stats(&self) -> HttpStats {
        self.stats
    }

    /// Bytes this session and its decoder hold right now (partial heads, bodies buffered for
    /// rules, partial stream lines, rendered capture events).
    pub fn buffered_bytes(&self) -> usize {
        self.decoder.buffered_bytes() + self.open.iter().map(Exchange::buffered_bytes).sum::<usize>()
    }

    /// Calls started and not ended.
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    fn run(&mut self, dir: Option<Direction>, at: Instant, bytes: Option<Bytes>) {
        let before = self.decoder.buffered_bytes();
        let mut events = mem::take(&mut self.events);
        match (dir, bytes) {
            (Some(dir), Some(bytes)) => self.decoder.feed_bytes(dir, bytes, &mut events),
            (Some(dir), None) => self.decoder.eof(dir, &mut events),
            (None, _) => {
                self.decoder.eof(Direction::ClientToServer, &mut events);
                self.decoder.eof(Direction::ServerToClient, &mut events);
            }
        }
        let mut request_ended = false;
        for event in events.drain(..) {
            request_ended |= matches!(event, H1Event::RequestEnd { .. });
            self.on_event(event, at);
        }
        self.events = events;
        // A request ended inside this chunk and the decoder now holds more client bytes: the
        // next head started in this chunk too.
        if dir == Some(Direction::ClientToServer)
            && request_ended
            && self.req_idle
            && self.head_first_at.is_none()
            && self.decoder.buffered_bytes() > before
        {
            self.head_first_at = Some(at);
        }
    }

    fn on_event(&mut self, event: H1Event, at: Instant) {
        match event {
            H1Event::RequestHead {
                id,
                method,
                target,
                headers,
                ..
            } => {
                self.req_idle = false;
                let first = self.head_first_at.take().unwrap_or(at);
                self.begin(id, method, &target, &headers, first);
            }
            H1Event::RequestBody { id, data } => {
                let payloads = self.payloads;
                if let Some(ex) = self.open.iter_mut().find(|e| e.id == id) {
                    ex.req_bytes += data.len() as u64;
                    ex.req_keep.push(&data, payloads, &mut self.stats);
                }
            }
            H1Event::RequestEnd { id, .. } => {
                self.req_idle = true;
                let when = self.ctx.clock.wall(at);
                if let Some(ex) = self.open.iter_mut().find(|e| e.id == id) {
                    ex.request_end(when);
                }
            }
            H1Event::ResponseHead {
                id,
                status,
                headers,
                informational,
            } => {
                if informational {
                    return;
                }
                let payloads = self.payloads;
                if let Some(ex) = self.open.iter_mut().find(|e| e.id == id) {
                    ex.response_head(status, &headers, payloads, &mut self.stats);
                }
            }
            H1Event::ResponseBody { id, data } => {
                let Some(ex) = self.open.iter_mut().find(|e| e.id == id) else {
                    return;
                };
                ex.resp_bytes += data.len() as u64;
                let env = Env {
                    ctx: &self.ctx,
                    ids: &self.ids,
                    at,
                };
                ex.response_body(&data, self.payloads, &env, &mut self.stats);
            }
            H1Event::ResponseEnd { id, .. } => self.end(id, at, false),
            H1Event::Upgraded { id } => {
                if let Some(ex) = self.open.iter_mut().find(|e| e.id == id) {
                    ex.upgraded = true;
                    ex.shape = Shape::LongLived;
                    ex.resp_keep = Keep::Nothing;
                }
            }
            H1Event::Closed { upgraded_bytes, .. } => {
                let upgraded: Vec<ExchangeId> = self.open.iter().filter(|e| e.upgraded).map(|e| e.id).collect();
                for id in upgraded {
                    if let Some(ex) = self.open.iter_mut().find(|e| e.id == id) {
                        ex.req_bytes += upgraded_bytes[Direction::ClientToServer.index()];
                        ex.resp_bytes += upgraded_bytes[Direction::ServerToClient.index()];
                    }
                    self.end(id, at, false);
                }
                self.end_all(at);
            }
            H1Event::Anomaly(anomaly) => {
                tracing::trace!(conn = self.ctx.conn.id, ?anomaly, "http anomaly");
            }
            H1Event::GaveUp(reason) => {
                self.gave_up = Some(reason.reason());
                tracing::debug!(
                    conn = self.ctx.conn.id,
                    reason = reason.reason(),
                    "http decoder gave up"
                );
                self.end_all(at);
            }
        }
    }

    /// A request head passed: the call starts.
    fn begin(&mut self, id: ExchangeId, method: String, target: &str, headers: &Headers, first: Instant) {
        let (path, query) = split_target(target);
        let route = match_route(&method, path);
        let known = KNOWN_METHODS.contains(&method.as_str());
        let name = match (&route, known) {
            (Some(m), _) => format!("{method} {}", m.route),
            (None, true) => method.clone(),
            (None, false) => "HTTP".to_owned(),
        };
        let rule = route.as_ref().and_then(|m| docker_rules::rule(&method, m.route));
        let mut attrs = vec![Attr::str(
            HTTP_REQUEST_METHOD,
            if known { method.as_str() } else { "_OTHER" },
        )];
        if let Some(m) = &route {
            attrs.push(Attr::str(HTTP_ROUTE, m.route));
        }
        attrs.push(Attr::str(URL_PATH, capped(path, MAX_ATTR_VALUE)));
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            attrs.push(Attr::str(
                URL_QUERY,
                capped(&docker_rules::redact_query(q), MAX_ATTR_VALUE),
            ));
        }
        if let Some(ua) = headers.get("user-agent") {
            let ua = if redact::is_secret_header("user-agent") {
                redact::REDACTED
            } else {
                ua
            };
            attrs.push(Attr::str(USER_AGENT_ORIGINAL, capped(ua, MAX_ATTR_VALUE)));
        }
        if let Some(v) = route.as_ref().and_then(|m| m.api_version) {
            attrs.push(Attr::str(names::DOCKER_API_VERSION, v));
        }

        let mut ex = Exchange::new(id, self.ctx.clock.wall(first));
        let q = query.unwrap_or("");
        if let Some(m) = &route {
            match (docker_rules::path_entity(m.route), m.params.get("id")) {
                (Some(PathEntity::Container), Some(r)) => ex.container_ref = Some(capped(r, MAX_ATTR_VALUE)),
                (Some(PathEntity::Exec), Some(r)) => ex.exec_id = Some(capped(r, MAX_ATTR_VALUE)),
                _ => {}
            }
            if rule.is_some_and(|r| r.path_image)
                && let Some(image) = m.params.get("name")
            {
                push_image(&mut attrs, &docker_rules::percent_decode_path(image), None);
            }
        }
        for query_rule in rule.map_or(&[][..], |r| r.query) {
            match query_rule {
                QueryRule::ContainerName => {
                    if let Some(n) = docker_rules::query_param(q, "name").filter(|n| !n.is_empty()) {
                        let n = capped(&n, MAX_ATTR_VALUE);
                        attrs.push(Attr::str(CONTAINER_NAME, n.clone()));
                        ex.container_name = Some(n);
                    }
                }
                QueryRule::PullImage => {
                    if let Some(image) = docker_rules::query_param(q, "fromImage").filter(|i| !i.is_empty()) {
                        let tag = docker_rules::query_param(q, "tag");
                        push_image(&mut attrs, &image, tag.as_deref());
                    }
                }
                QueryRule::Rename => {
                    ex.rename_to = docker_rules::query_param(q, "name").filter(|n| !n.is_empty());
                }
            }
        }
        let upgrade_asked = headers.has_token("connection", "upgrade") && headers.get("upgrade").is_some();
        ex.shape = match rule.map_or(ShapeRule::Unary, |r| r.shape) {
            ShapeRule::Unary => Shape::Unary,
            ShapeRule::LongLived => Shape::LongLived,
            ShapeRule::LongLivedIf(p) if docker_rules::query_bool(q, p) == Some(true) => Shape::LongLived,
            ShapeRule::LongLivedUnless(p) if docker_rules::query_bool(q, p) != Some(false) => Shape::LongLived,
            ShapeRule::LongLivedIfUpgrade if upgrade_asked => Shape::LongLived,
            _ => Shape::Unary,
        };
        // A traceparent propagation added names this call itself, not a remote parent.
        if let Some((trace, span)) = self.injected.take(headers.get("traceparent")) {
            ex.span_id = span;
            ex.own_trace = Some(trace);
        } else {
            ex.remote_parent = headers
                .get("traceparent")
                .and_then(|tp| RemoteParent::parse(tp, headers.get("tracestate")));
        }

        ex.never_capture = docker_rules::never_capture(&method, route.as_ref().map(|m| m.route));
        ex.capture_on = self.ctx.conn.capture_payloads;
        ex.capture = ex.capture_on && !ex.never_capture;
        let wants_body =
            rule.is_some_and(|r| r.request.is_some()) || (ex.capture && is_json(headers.get("content-type")));
        ex.req_keep = Keep::start(wants_body, self.payloads, content_length(headers), &mut self.stats);
        ex.rule = rule;
        ex.name = name;
        ex.attrs = attrs;

        // Ids known from the path already tie this request to the calls it causes.
        let mut known = Vec::new();
        let container = ex.container_ref.as_deref().and_then(|r| self.ids.resolve(r));
        if let Some(c) = container.or_else(|| ex.exec_id.as_deref().and_then(|e| self.ids.exec_container(e))) {
            known.push(Attr::str(CONTAINER_ID, c));
        }
        if let Some(e) = &ex.exec_id {
            known.push(Attr::str(names::CONTAINER_EXEC_ID, e.clone()));
        }
        self.ctx.sink.started(&CallStart {
            span_id: ex.span_id,
            conn: self.ctx.conn.clone(),
            name: ex.name.clone(),
            start: ex.start,
            shape: ex.shape,
            remote_parent: ex.remote_parent.clone(),
            own_trace: ex.own_trace,
            attributes: known,
        });
        self.open.push_back(ex);
    }

    /// Ends exchange `id` at `at` (incomplete: the connection or the decoder stopped first).
    fn end(&mut self, id: ExchangeId, at: Instant, incomplete: bool) {
        let Some(i) = self.open.iter().position(|e| e.id == id) else {
            return;
        };
        let Some(ex) = self.open.remove(i) else { return };
        let env = Env {
            ctx: &self.ctx,
            ids: &self.ids,
            at,
        };
        let call = ex.finish(&env, incomplete);
        self.ctx.sink.ended(call);
    }

    /// Ends every open exchange as incomplete at `at`.
    fn end_all(&mut self, at: Instant) {
        while let Some(id) = self.open.front().map(|e| e.id) {
            self.end(id, at, true);
        }
    }
}

impl Session for HttpSession {
    fn data(&mut self, dir: Direction, at: Instant, bytes: Bytes) {
        if self.closed || self.gave_up.is_some() || bytes.is_empty() {
            return;
        }
        if dir == Direction::ClientToServer && self.req_idle && self.head_first_at.is_none() {
            // Between requests, this chunk's first byte starts the next head.
            self.head_first_at = Some(at);
        }
        self.run(Some(dir), at, Some(bytes));
    }

    fn eof(&mut self, dir: Direction, at: Instant) {
        if self.closed || self.gave_up.is_some() {
            return;
        }
        self.run(Some(dir), at, None);
    }

    fn closed(&mut self, at: Instant) {
        if self.closed {
            return;
        }
        if self.gave_up.is_none() {
            // Both sides are over: read-to-close bodies end, the upgraded session ends.
            self.run(None, at, None);
        }
        self.end_all(at);
        self.closed = true;
    }

    fn injected(&mut self, injection: Injection) {
        self.injected.push(injection);
    }

    fn payloads(&mut self, on: bool) {
        if self.payloads == on {
            return;
        }
        self.payloads = on;
        if !on {
            for ex in &mut self.open {
                ex.req_keep.shed(&mut self.stats);
                ex.resp_keep.shed(&mut self.stats);
            }
        }
    }

    fn gave_up(&self) -> Option<&'static str> {
        self.gave_up
    }

    fn buffered_bytes(&self) -> usize {
        let kept: usize = self
            .open
            .iter()
            .map(|ex| ex.req_keep.held() + ex.resp_keep.held())
            .sum();
        self.decoder.buffered_bytes() + kept
    }

    fn take_skipped(&mut self, report: &mut dyn FnMut(&'static str, u64)) {
        let (now, before) = (self.stats, self.reported);
        self.reported = now;
        for (label, n) in [
            ("body_not_decoded", now.skipped_bodies - before.skipped_bodies),
            ("line_too_long", now.skipped_lines - before.skipped_lines),
        ] {
            if n > 0 {
                report(label, n);
            }
        }
    }
}

impl Drop for HttpSession {
    /// A session dropped without `closed`: its open calls still end, once, as incomplete.
    fn drop(&mut self) {
        if !self.open.is_empty() {
            self.end_all(Instant::now());
        }
    }
}

/// What an exchange's handlers need from the session.
struct Env<'a> {
    ctx: &'a SessionCtx,
    ids: &'a DockerIds,
    at: Instant,
}

/// One request/response exchange while it is open.
struct Exchange {
    id: ExchangeId,
    span_id: SpanId,
    name: String,
    start: SystemTime,
    shape: Shape,
    remote_parent: Option<RemoteParent>,
    own_trace: Option<TraceId>,
    attrs: Vec<Attr>,
    rule: Option<&'static RouteRule>,
    /// The `{id}` of a `/containers/{id}/...` path, as sent (id, prefix or name).
    container_ref: Option<String>,
    /// A full container id from a response (create, inspect, exec inspect).
    container_id: Option<String>,
    /// `?name=` of a create.
    container_name: Option<String>,
    /// `?name=` of a rename.
    rename_to: Option<String>,
    exec_id: Option<String>,
    /// An exec create answered with this exec id.
    exec_created: bool,
    req_bytes: u64,
    resp_bytes: u64,
    req_keep: Keep,
    resp_keep: Keep,
    status: Option<u16>,
    /// `docker.error.message`.
    error_message: Option<String>,
    /// A progress stream reported an error.
    stream_error: Option<String>,
    upgraded: bool,
    /// Payload capture is on for the connection.
    capture_on: bool,
    /// ... and allowed for this route.
    capture: bool,
    /// The route's bodies are never captured (shown as `***`).
    never_capture: bool,
    events: Vec<SpanEventRecord>,
}

impl Exchange {
    fn new(id: ExchangeId, start: SystemTime) -> Exchange {
        Exchange {
            id,
            span_id: new_span_id(),
            name: String::new(),
            start,
            shape: Shape::Unary,
            remote_parent: None,
            own_trace: None,
            attrs: Vec::new(),
            rule: None,
            container_ref: None,
            container_id: None,
            container_name: None,
            rename_to: None,
            exec_id: None,
            exec_created: false,
            req_bytes: 0,
            resp_bytes: 0,
            req_keep: Keep::Nothing,
            resp_keep: Keep::Nothing,
            status: None,
            error_message: None,
            stream_error: None,
            upgraded: false,
            capture_on: false,
            capture: false,
            never_capture: false,
            events: Vec::new(),
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.req_keep.buffered_bytes()
            + self.resp_keep.buffered_bytes()
            + self
                .events
                .iter()
                .flat_map(|e| &e.attributes)
                .map(|a| match &a.value {
                    crate::trace::attr::AttrValue::Str(s) => s.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }

    fn request_end(&mut self, when: SystemTime) {
        let keep = mem::replace(&mut self.req_keep, Keep::Nothing);
        if let Keep::Json(buf) = &keep
            && self.rule.and_then(|r| r.request) == Some(RequestBody::ContainerCreate)
            && let Ok(body) = serde_json::from_slice::<CreateBody>(buf)
            && let Some(image) = body.image.filter(|i| !i.is_empty())
        {
            push_image(&mut self.attrs, &image, None);
        }
        if self.never_capture && self.capture_on && self.req_bytes > 0 {
            self.events
                .push(capture_event("request", when, redact::REDACTED.to_owned()));
        } else if self.capture {
            match keep {
                Keep::Json(buf) => self.events.push(capture_event("request", when, render(&buf))),
                Keep::Skipped => self.events.push(capture_event(
                    "request",
                    when,
                    format!("<{} bytes, not captured>", self.req_bytes),
                )),
                _ => {}
            }
        }
    }

    fn response_head(&mut self, status: u16, headers: &Headers, payloads: bool, stats: &mut HttpStats) {
        self.status = Some(status);
        let ok = (200..300).contains(&status);
        let body_rule = self.rule.and_then(|r| r.response);
        let length = content_length(headers);
        self.resp_keep = match body_rule {
            Some(ResponseBody::Progress | ResponseBody::Events) if ok => {
                if payloads {
                    Keep::Lines(Lines::default())
                } else {
                    stats.skipped_bodies += 1;
                    Keep::Nothing
                }
            }
            _ => {
                let wants = (ok && body_rule.is_some())
                    || status >= 400
                    || (self.capture && is_json(headers.get("content-type")));
                Keep::start(wants, payloads, length, stats)
            }
        };
    }

    fn response_body(&mut self, data: &[u8], payloads: bool, env: &Env<'_>, stats: &mut HttpStats) {
        let Exchange {
            resp_keep,
            rule,
            stream_error,
            span_id,
            ..
        } = self;
        match resp_keep {
            Keep::Lines(lines) if !payloads => lines.pause(),
            Keep::Lines(lines) => {
                let kind = rule.and_then(|r| r.response);
                lines.feed(data, stats, |line| match kind {
                    Some(ResponseBody::Events) => docker_event(line, *span_id, env),
                    _ => {
                        if stream_error.is_none() {
                            *stream_error = progress_error(line);
                        }
                    }
                });
            }
            keep => keep.push(data, payloads, stats),
        }
    }

    /// The call, with what the response said; `incomplete` skips the (partial) response body.
    fn finish(mut self, env: &Env<'_>, incomplete: bool) -> Call {
        let end = env.ctx.clock.wall(env.at);
        let status = self.status;
        let ok = status.is_some_and(|s| (200..300).contains(&s)) && !incomplete;
        let keep = mem::replace(&mut self.resp_keep, Keep::Nothing);
        match keep {
            Keep::Json(buf) if !incomplete => self.response_json(&buf, env, end),
            Keep::Lines(mut lines) if !incomplete => {
                let kind = self.rule.and_then(|r| r.response);
                let Exchange {
                    stream_error, span_id, ..
                } = &mut self;
                lines.finish(|line| match kind {
                    Some(ResponseBody::Events) => docker_event(line, *span_id, env),
                    _ => {
                        if stream_error.is_none() {
                            *stream_error = progress_error(line);
                        }
                    }
                });
            }
            Keep::Skipped if self.capture && !incomplete => self.events.push(capture_event(
                "response",
                end,
                format!("<{} bytes, not captured>", self.resp_bytes),
            )),
            _ => {}
        }
        if self.never_capture && self.capture_on && self.resp_bytes > 0 && !self.upgraded {
            self.events
                .push(capture_event("response", end, redact::REDACTED.to_owned()));
        }

        // container.id: a response's id, else the path's (full or resolved), else the exec's.
        let container = self
            .container_id
            .clone()
            .or_else(|| self.container_ref.as_deref().and_then(|r| env.ids.resolve(r)))
            .or_else(|| self.exec_id.as_deref().and_then(|e| env.ids.exec_container(e)));
        if ok {
            if let (true, Some(exec), Some(c)) = (self.exec_created, &self.exec_id, &container) {
                env.ids.learn_exec(exec, c);
            }
            if let Some(c) = &container {
                if self.rule.is_some_and(|r| r.on_success == OnSuccess::ForgetContainer) {
                    env.ids.forget(c);
                }
                if let Some(new_name) = &self.rename_to {
                    env.ids.learn(c, Some(new_name));
                }
            }
        }

        let mut attrs = mem::take(&mut self.attrs);
        if let Some(s) = status {
            attrs.push(Attr::int(HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
        }
        match (container, &self.container_ref) {
            (Some(c), _) => attrs.push(Attr::str(CONTAINER_ID, c)),
            (None, Some(r)) => attrs.push(Attr::str(names::CONTAINER_REF, r.clone())),
            (None, None) => {}
        }
        if let Some(exec) = &self.exec_id {
            attrs.push(Attr::str(names::CONTAINER_EXEC_ID, exec.clone()));
        }
        let message = self.error_message.clone().or_else(|| self.stream_error.clone());
        if let Some(m) = &message {
            attrs.push(Attr::str(names::DOCKER_ERROR_MESSAGE, m.clone()));
        }
        attrs.push(Attr::int(names::REQUEST_BYTES, saturating_i64(self.req_bytes)));
        attrs.push(Attr::int(names::RESPONSE_BYTES, saturating_i64(self.resp_bytes)));

        let status = match (status, &self.stream_error) {
            (Some(s), _) if s >= 500 => SpanStatus::Error(message.unwrap_or_else(|| format!("HTTP {s}"))),
            (_, Some(e)) => SpanStatus::Error(e.clone()),
            _ => SpanStatus::Unset,
        };
        Call {
            span_id: self.span_id,
            conn: env.ctx.conn.clone(),
            name: self.name,
            start: self.start,
            end: end.max(self.start),
            attributes: attrs,
            status,
            incomplete,
            shape: self.shape,
            remote_parent: self.remote_parent,
            own_trace: self.own_trace,
            events: self.events,
        }
    }

    /// A complete buffered JSON response body.
    fn response_json(&mut self, buf: &[u8], env: &Env<'_>, end: SystemTime) {
        let status = self.status.unwrap_or(0);
        if status >= 400 {
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(buf) {
                self.error_message = e.message.map(|m| capped(&m, MAX_ATTR_VALUE));
            }
        } else if (200..300).contains(&status) {
            match self.rule.and_then(|r| r.response) {
                Some(ResponseBody::ContainerCreated) => {
                    if let Ok(b) = serde_json::from_slice::<IdBody>(buf)
                        && let Some(id) = b.id.filter(|i| is_full_id(i))
                    {
                        env.ids.learn(&id, self.container_name.as_deref());
                        self.container_id = Some(id);
                    }
                }
                Some(ResponseBody::ContainerInspect) => {
                    if let Ok(b) = serde_json::from_slice::<IdBody>(buf)
                        && let Some(id) = b.id.filter(|i| is_full_id(i))
                    {
                        env.ids.learn(&id, b.name.as_deref());
                        self.container_id = Some(id);
                    }
                }
                Some(ResponseBody::ContainerList) => {
                    if let Ok(list) = serde_json::from_slice::<Vec<ListEntry>>(buf) {
                        for c in list {
                            let name = c
                                .names
                                .iter()
                                .flatten()
                                .find(|n| !n.trim_start_matches('/').contains('/'));
                            if let Some(id) = &c.id {
                                env.ids.learn(id, name.map(String::as_str));
                            }
                        }
                    }
                }
                Some(ResponseBody::ExecCreated) => {
                    if let Ok(b) = serde_json::from_slice::<IdBody>(buf)
                        && let Some(id) = b.id.filter(|i| !i.is_empty())
                    {
                        self.exec_id = Some(capped(&id, MAX_ATTR_VALUE));
                        self.exec_created = true;
                    }
                }
                Some(ResponseBody::ExecInspect) => {
                    if let Ok(b) = serde_json::from_slice::<ExecInspectBody>(buf)
                        && let Some(c) = b.container_id.filter(|c| is_full_id(c))
                    {
                        self.container_id = Some(c);
                    }
                }
                _ => {}
            }
        }
        if self.capture {
            self.events.push(capture_event("response", end, render(buf)));
        }
    }
}

/// How one side's body is kept.
enum Keep {
    /// Not wanted.
    Nothing,
    /// Buffered whole, up to [`MAX_JSON_BODY`].
    Json(Vec<u8>),
    /// Wanted but not kept (too large, or payloads off): counted once, never parsed.
    Skipped,
    /// Scanned line by line.
    Lines(Lines),
}

impl Keep {
    /// Bytes this keep holds.
    fn held(&self) -> usize {
        match self {
            Keep::Json(buf) => buf.len(),
            Keep::Lines(lines) => lines.buf.len(),
            Keep::Nothing | Keep::Skipped => 0,
        }
    }

    /// The keep for a body that a rule or capture `wants`, whose declared length is `length`.
    fn start(wants: bool, payloads: bool, length: Option<u64>, stats: &mut HttpStats) -> Keep {
        if !wants {
            return Keep::Nothing;
        }
        if !payloads || length.is_some_and(|l| l > MAX_JSON_BODY as u64) {
            stats.skipped_bodies += 1;
            return Keep::Skipped;
        }
        Keep::Json(Vec::new())
    }

    fn push(&mut self, data: &[u8], payloads: bool, stats: &mut HttpStats) {
        if let Keep::Json(buf) = self {
            if !payloads || buf.len() + data.len() > MAX_JSON_BODY {
                stats.skipped_bodies += 1;
                *self = Keep::Skipped;
            } else {
                buf.extend_from_slice(data);
            }
        }
    }

    /// Load shedding: drop what is buffered.
    fn shed(&mut self, stats: &mut HttpStats) {
        match self {
            Keep::Json(_) => {
                stats.skipped_bodies += 1;
                *self = Keep::Skipped;
            }
            Keep::Lines(lines) => lines.pause(),
            _ => {}
        }
    }

    fn buffered_bytes(&self) -> usize {
        match self {
            Keep::Json(buf) => buf.capacity(),
            Keep::Lines(lines) => lines.buf.capacity(),
            _ => 0,
        }
    }
}

/// A bounded line splitter for JSON-lines streams.
#[derive(Default)]
struct Lines {
    /// The partial line so far (never more than [`MAX_STREAM_LINE`]).
    buf: Vec<u8>,
    /// Skipping to the next newline (an overlong line, or bytes missed while shedding).
    discarding: bool,
}

impl Lines {
    fn feed(&mut self, mut data: &[u8], stats: &mut HttpStats, mut on_line: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let Some(n) = data.iter().position(|&b| b == b'\n') else {
                if !self.discarding {
                    if self.buf.len() + data.len() > MAX_STREAM_LINE {
                        stats.skipped_lines += 1;
                        self.buf = Vec::new();
                        self.discarding = true;
                    } else {
                        self.buf.extend_from_slice(data);
                    }
                }
                return;
            };
            let part = &data[..n];
            data = &data[n + 1..];
            if self.discarding {
                self.discarding = false;
            } else if self.buf.is_empty() {
                emit(part, &mut on_line);
            } else if self.buf.len() + part.len() <= MAX_STREAM_LINE {
                self.buf.extend_from_slice(part);
                emit(&self.buf, &mut on_line);
                self.buf.clear();
            } else {
                stats.skipped_lines += 1;
                self.buf.clear();
            }
        }
    }

    /// The stream ended: a last line without a newline still counts.
    fn finish(&mut self, mut on_line: impl FnMut(&[u8])) {
        if !self.discarding && !self.buf.is_empty() {
            emit(&self.buf, &mut on_line);
        }
        self.buf = Vec::new();
    }

    /// Bytes will be missed: resume at the next newline.
    fn pause(&mut self) {
        self.buf = Vec::new();
        self.discarding = true;
    }
}

fn emit(line: &[u8], on_line: &mut impl FnMut(&[u8])) {
    let line = line.trim_ascii();
    if !line.is_empty() {
        on_line(line);
    }
}

/// The error of a progress stream line (`{"errorDetail":{"message":...},"error":...}`).
fn progress_error(line: &[u8]) -> Option<String> {
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

/// One `/events` line: an event span, linked to the subscription `span_id`.
fn docker_event(line: &[u8], span_id: SpanId, env: &Env<'_>) {
    let Ok(ev) = serde_json::from_slice::<EventLine>(line) else {
        return;
    };
    let kind = word(ev.kind.as_deref().unwrap_or("unknown"));
    let action = word(ev.action.as_deref().or(ev.status.as_deref()).unwrap_or("unknown"));
    let mut attributes = Vec::with_capacity(4);
    if kind == "container"
        && let Some(actor) = &ev.actor
        && let Some(id) = actor.id.as_deref().filter(|i| is_full_id(i))
    {
        attributes.push(Attr::str(CONTAINER_ID, id));
        let name = actor.attributes.as_ref().and_then(|a| a.name.as_deref());
        if let Some(n) = name {
            attributes.push(Attr::str(CONTAINER_NAME, capped(n, MAX_ATTR_VALUE)));
        }
        match action.as_str() {
            "create" | "rename" => env.ids.learn(id, name),
            "destroy" => env.ids.forget(id),
            _ => {}
        }
    }
    attributes.push(Attr::str(docker_names::DOCKER_EVENT_TYPE, kind.clone()));
    attributes.push(Attr::str(docker_names::DOCKER_EVENT_ACTION, action.clone()));
    env.ctx.sink.event(StreamEvent {
        subscription: span_id,
        conn: env.ctx.conn.clone(),
        name: format!("event {kind} {action}"),
        time: env.ctx.clock.wall(env.at),
        attributes,
    });
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

/// A capture span event (`request` / `response`) with its redacted `body`.
fn capture_event(name: &str, time: SystemTime, body: String) -> SpanEventRecord {
    SpanEventRecord {
        name: name.to_owned(),
        time,
        attributes: vec![Attr::str("body", body)],
    }
}

/// A captured JSON body, redacted (secret keys, `Env` values as `KEY=***`) and capped.
fn render(buf: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(buf) {
        Ok(mut v) => {
            redact::redact_json(&mut v);
            capped(&v.to_string(), MAX_CAPTURE)
        }
        Err(_) => format!("<{} bytes, not json>", buf.len()),
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

fn content_length(headers: &Headers) -> Option<u64> {
    headers.get("content-length").and_then(|v| v.trim().parse().ok())
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn capped(s: &str, max: usize) -> String {
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
#[path = "http_tests.rs"]
mod tests;
