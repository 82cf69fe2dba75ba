//! The Docker Engine API session: the HTTP/1.1 exchanges of one connection to dockerd, each
//! one call (DESIGN.md, span contract), from the passive decoder's events. A hijacked
//! attach/exec session is one call from its request to the close.
//!
//! What becomes an attribute is schema's to say (`schema::docker_rules`, applied by
//! `schema::docker_extract`); this session drives the decoder, keeps the bodies and stream
//! lines a rule asks for, applies what the rules return to the id registry and times the calls.
//!
//! Rule it keeps: a body is buffered only where a rule needs it, only up to
//! [`MAX_JSON_BODY`] and only while payloads are on; streams are scanned line by line with a
//! line bounded by [`MAX_STREAM_LINE`]. Every started call ends exactly once.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_semantic_conventions::attribute::CONTAINER_ID;

use super::docker_ids::DockerIds;
use super::session::{Injected, Session, SessionCtx};
use crate::schema::docker_extract::{self, Head, IdChange, Outcome, Request};
use crate::schema::docker_rules::{OnSuccess, ResponseBody, RouteRule};
use crate::schema::pull::{self, PullProgress};
use crate::schema::{names, redact};
use crate::trace::attr::Attr;
use crate::trace::call::{Call, CallStart, RemoteParent, Shape, StreamEvent};
use crate::trace::span::{SpanEventRecord, SpanId, TraceId, new_span_id};
use crate::wire::Direction;
use crate::wire::h1::{ExchangeId, H1Decoder, H1Event, Headers};
use crate::wire::inject::Injection;

/// Largest JSON body (request or response) buffered for a rule or for payload capture; a
/// longer one is skipped and counted, never parsed. 64 KiB.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Longest line of a progress or event stream kept while it arrives; a longer line is
/// skipped and counted. 16 KiB.
pub const MAX_STREAM_LINE: usize = 16 * 1024;

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
                self.begin(id, &method, &target, &headers, first);
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
    fn begin(&mut self, id: ExchangeId, method: &str, target: &str, headers: &Headers, first: Instant) {
        let request = docker_extract::request(&Head {
            method,
            target,
            user_agent: headers.get("user-agent"),
            upgrade_asked: headers.has_token("connection", "upgrade") && headers.get("upgrade").is_some(),
        });
        let mut ex = Exchange::new(id, self.ctx.clock.wall(first), request);
        self.identify(&mut ex, headers);
        ex.capture_on = self.ctx.conn.capture_payloads;
        ex.capture = ex.capture_on && !ex.never_capture;
        let wants_body =
            ex.rule.is_some_and(|r| r.request.is_some()) || (ex.capture && is_json(headers.get("content-type")));
        ex.req_keep = Keep::start(wants_body, self.payloads, content_length(headers), &mut self.stats);
        self.announce(&ex);
        self.open.push_back(ex);
    }

    /// The call's trace identity: the one propagation gave it (the `traceparent` it added
    /// names this call itself), else the client's `traceparent` as a remote parent.
    fn identify(&mut self, ex: &mut Exchange, headers: &Headers) {
        if let Some((trace, span)) = self.injected.take(headers.get("traceparent")) {
            ex.span_id = span;
            ex.own_trace = Some(trace);
        } else {
            ex.remote_parent = headers
                .get("traceparent")
                .and_then(|tp| RemoteParent::parse(tp, headers.get("tracestate")));
        }
    }

    /// Tells the sink the call started, with the ids its path already names: they tie this
    /// request to the calls it causes before it ends.
    fn announce(&self, ex: &Exchange) {
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
    /// An image pull's progress, folded per layer (bounded: `schema::pull`).
    pull: Option<Box<PullProgress>>,
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
    fn new(id: ExchangeId, start: SystemTime, request: Request) -> Exchange {
        Exchange {
            id,
            span_id: new_span_id(),
            name: request.name,
            start,
            shape: if request.long_lived {
                Shape::LongLived
            } else {
                Shape::Unary
            },
            remote_parent: None,
            own_trace: None,
            attrs: request.attrs,
            rule: request.rule,
            container_ref: request.container_ref,
            container_id: None,
            container_name: request.container_name,
            rename_to: request.rename_to,
            exec_id: request.exec_id,
            exec_created: false,
            req_bytes: 0,
            resp_bytes: 0,
            req_keep: Keep::Nothing,
            resp_keep: Keep::Nothing,
            status: None,
            error_message: None,
            stream_error: None,
            pull: None,
            upgraded: false,
            capture_on: false,
            capture: false,
            never_capture: request.never_capture,
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
        if let Keep::Json(buf) = &keep {
            docker_extract::request_body(self.rule, buf, &mut self.attrs);
        }
        if self.never_capture && self.capture_on && self.req_bytes > 0 {
            self.events
                .push(capture_event("request", when, redact::REDACTED.to_owned()));
        } else if self.capture {
            match keep {
                Keep::Json(buf) => self
                    .events
                    .push(capture_event("request", when, docker_extract::render(&buf))),
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
        if ok && body_rule == Some(ResponseBody::Progress) && pull::is_docker_pull(&self.name) {
            self.pull = Some(Box::default());
        }
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
            pull,
            span_id,
            ..
        } = self;
        match resp_keep {
            Keep::Lines(lines) if !payloads => lines.pause(),
            Keep::Lines(lines) => {
                let kind = rule.and_then(|r| r.response);
                let at = env.ctx.clock.wall(env.at);
                lines.feed(data, stats, |line| match kind {
                    Some(ResponseBody::Events) => docker_event(line, *span_id, env),
                    _ => progress_line(line, stream_error, pull, at),
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
                    stream_error,
                    pull,
                    span_id,
                    ..
                } = &mut self;
                lines.finish(|line| match kind {
                    Some(ResponseBody::Events) => docker_event(line, *span_id, env),
                    _ => progress_line(line, stream_error, pull, end),
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
        let message = self.error_message.clone().or_else(|| self.stream_error.clone());
        let outcome = Outcome {
            status,
            container,
            container_ref: self.container_ref.as_deref(),
            exec_id: self.exec_id.as_deref(),
            message: message.as_deref(),
            req_bytes: self.req_bytes,
            resp_bytes: self.resp_bytes,
        };
        docker_extract::end_attrs(&outcome, &mut attrs);
        // An incomplete pull's partial breakdown is still what happened until it stopped.
        let children = self
            .pull
            .take()
            .map(|p| p.finish(self.start, end, &mut attrs))
            .unwrap_or_default();
        let status = docker_extract::span_status(status, message, self.stream_error.as_deref());
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
            children,
        }
    }

    /// A complete buffered JSON response body: what it says by the route's rule is kept,
    /// and what it names is learned.
    fn response_json(&mut self, buf: &[u8], env: &Env<'_>, end: SystemTime) {
        let status = self.status.unwrap_or(0);
        let said = docker_extract::response(self.rule, status, buf, self.container_name.as_deref());
        for (id, name) in &said.learn {
            env.ids.learn(id, name.as_deref());
        }
        if said.error_message.is_some() {
            self.error_message = said.error_message;
        }
        if said.container_id.is_some() {
            self.container_id = said.container_id;
        }
        if let Some(exec) = said.exec_created {
            self.exec_id = Some(exec);
            self.exec_created = true;
        }
        if self.capture {
            self.events
                .push(capture_event("response", end, docker_extract::render(buf)));
        }
    }
}

/// One line of a progress stream: its error, if it is the first, and an image pull's layer
/// progress, stamped `at`.
fn progress_line(line: &[u8], stream_error: &mut Option<String>, pull: &mut Option<Box<PullProgress>>, at: SystemTime) {
    if stream_error.is_none() {
        *stream_error = docker_extract::progress_error(line);
    }
    if let Some(p) = pull {
        p.docker_line(line, at);
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

/// One `/events` line: an event span, linked to the subscription `span_id`; the id registry
/// learns what it says.
fn docker_event(line: &[u8], span_id: SpanId, env: &Env<'_>) {
    let Some(event) = docker_extract::event(line) else {
        return;
    };
    match &event.ids {
        IdChange::Learn(id, name) => env.ids.learn(id, name.as_deref()),
        IdChange::Forget(id) => env.ids.forget(id),
        IdChange::Nothing => {}
    }
    env.ctx.sink.event(StreamEvent {
        subscription: span_id,
        conn: env.ctx.conn.clone(),
        name: event.name,
        time: env.ctx.clock.wall(env.at),
        attributes: event.attributes,
    });
}

/// A capture span event (`request` / `response`) with its redacted `body`.
fn capture_event(name: &str, time: SystemTime, body: String) -> SpanEventRecord {
    SpanEventRecord {
        name: name.to_owned(),
        time,
        attributes: vec![Attr::str(names::CAPTURE_BODY, body)],
    }
}

fn content_length(headers: &Headers) -> Option<u64> {
    headers.get("content-length").and_then(|v| v.trim().parse().ok())
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
