//! The waterfall view of one trace: an indented span tree with a time bar per span scaled to
//! the trace, service and duration columns, the key attributes (pod, container, image, status)
//! where they change from the parent, errors marked, and the self time of each layer. Used by
//! the console sink and by `runtime-tap report`.
//!
//! The rule it keeps: pure text, one line never wider than the width asked for (a width under
//! [`MIN_WIDTH`] is taken as [`MIN_WIDTH`]); colour (ANSI SGR) only when asked, and the same
//! text without it, so an error is visible by its `✗` mark alone.
//!
//! Layout at 80 columns (a docker start whose task failed):
//!
//! ```text
//! trace abababababababababababababababab · 22:13:20.000 UTC · 4 spans · 57.0ms
//! ✗ POST /containers/{id}/start         dockerd      57.0ms │████████████████████│
//!   │  ctr=9f86d081884c image=docker.io/library/busybox status=500
//!   ├─ Containers/Get                   containerd   2.00ms │██                  │
//!   ├─ Tasks/Create                     containerd   32.0ms │  █████████████     │
//! ✗ └─ Tasks/Start                      containerd   11.0ms │              █████ │
//!         status=UNKNOWN
//!         error: failed to start shim: OCI runtime create failed
//!   self time: dockerd 11.0ms (19%) · containerd 46.0ms (81%)
//! ```
//!
//! A gRPC method name too long for its column loses its package (`Tasks/Start`: the service
//! column names the layer); any name still too long is cut in the middle with `…`, keeping the
//! verb and the end of the route. The gRPC status shows only when it is not `OK`; the HTTP
//! status always.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_semantic_conventions::attribute::{
    CONTAINER_ID, CONTAINER_IMAGE_NAME, HTTP_RESPONSE_STATUS_CODE, K8S_POD_NAME, RPC_RESPONSE_STATUS_CODE,
};

use crate::trace::attr::{AttrValue, names};
use crate::trace::span::{SpanKind, SpanRecord, SpanStatus, hex};
use crate::trace::tree::{Node, SpanTree, duration};

/// Narrowest layout; a smaller width asked for is taken as this.
pub const MIN_WIDTH: usize = 60;
/// Prefix of the root attributes that carry the correlator's self time per layer.
pub const SELF_TIME_PREFIX: &str = "runtime_tap.self_time_ms.";
/// Length a container id is shortened to, as `docker ps` shows it.
pub const SHORT_ID: usize = 12;

/// Service column width; longer names are cut.
const SERVICE_WIDTH: usize = 10;
/// Duration column width (`123.4ms`, `12.34s`).
const DURATION_WIDTH: usize = 8;
/// The mark column: `✗ ` on an error span.
const MARK_WIDTH: usize = 2;
/// Tree drawing per level.
const INDENT: usize = 3;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
/// Bar colours per service, in order of first appearance in the trace.
const PALETTE: &[&str] = &["\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m"];

/// Renders one trace (any order of spans; a span whose parent is missing is a root) as a
/// waterfall no wider than `width` columns, ending with a newline. A trace of one span is just
/// its line (and its details); empty input renders as "".
pub fn render(trace: &[SpanRecord], width: usize, color: bool) -> String {
    if trace.is_empty() {
        return String::new();
    }
    let tree = SpanTree::new(trace);
    let nodes = tree.walk();
    render_nodes(&tree, &nodes, width, color, true)
}

/// Renders the subtree of `root` in `tree`, without the self time line (the report prints its
/// own breakdown).
pub fn render_subtree(tree: &SpanTree<'_>, root: usize, width: usize, color: bool) -> String {
    let nodes = tree.walk_from_root(root);
    render_nodes(tree, &nodes, width, color, false)
}

/// Where a trace's lines put things: its time axis and its columns
/// (mark | tree + name | service | duration | │bar│).
struct Layout {
    width: usize,
    p: Paint,
    start: SystemTime,
    extent: Duration,
    /// Services in order of first appearance: each its bar colour.
    services: Vec<Arc<str>>,
    name_w: usize,
    bar_w: usize,
}

impl Layout {
    fn new(spans: &[SpanRecord], nodes: &[Node], width: usize, color: bool) -> Layout {
        let width = width.max(MIN_WIDTH);
        let start = nodes.iter().map(|n| spans[n.index].start).min().unwrap_or(UNIX_EPOCH);
        let end = nodes
            .iter()
            .map(|n| spans[n.index].end)
            .max()
            .unwrap_or(start)
            .max(start);
        let services: Vec<Arc<str>> = nodes.iter().fold(Vec::new(), |mut v, n| {
            if !v.contains(&spans[n.index].service) {
                v.push(Arc::clone(&spans[n.index].service));
            }
            v
        });
        // The service column is fixed, so that columns line up from one trace to the next.
        let bar_w = (width / 4).clamp(10, 40);
        Layout {
            width,
            p: Paint(color),
            start,
            extent: end.duration_since(start).unwrap_or_default(),
            services,
            name_w: width - MARK_WIDTH - SERVICE_WIDTH - DURATION_WIDTH - (bar_w + 2) - 3,
            bar_w,
        }
    }
}

fn render_nodes(tree: &SpanTree<'_>, nodes: &[Node], width: usize, color: bool, summary: bool) -> String {
    let spans = tree.spans();
    let lines = fold_clients(tree, nodes);
    let shown: Vec<Node> = lines.iter().map(|(n, _)| *n).collect();
    let layout = Layout::new(spans, &shown, width, color);
    let mut out = String::new();
    // A lone call (a poll, a ping) is its own line: no header, no self time.
    let single = lines.len() == 1;
    if !single {
        let root = &spans[nodes[0].index];
        let header = format!(
            "trace {} · {} · {} span{} · {}",
            hex(&root.trace_id),
            clock(layout.start),
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            fmt_duration(layout.extent)
        );
        let _ = writeln!(out, "{}", layout.p.paint(BOLD, &truncate_end(&header, layout.width)));
    }
    // Which levels still have siblings to come, for the vertical lines.
    let mut open: Vec<bool> = Vec::new();
    for (n, client) in &lines {
        open.truncate(n.depth);
        let (prefix, cont) = tree_prefixes(&open, n, !tree.children(n.index).is_empty());
        open.push(!n.last);
        // Deep trees: the drawing takes at most half the name column.
        let prefix = cut_prefix(&prefix, layout.name_w / 2);
        let cont = cut_prefix(&cont, layout.name_w / 2);
        span_line(&mut out, &layout, &spans[n.index], n.depth, &prefix);
        let client = client.map(|c| &spans[c]);
        detail_lines(&mut out, &layout, spans, &spans[n.index], client, &cont);
    }
    if summary && !single {
        self_time_line(&mut out, tree, nodes[0].index, layout.width);
    }
    out
}

/// The lines of `nodes`: a CLIENT span whose one child is the SERVER span of the same call
/// (`[correlation] client_spans`) is no line of its own, its call's line says `from <client>`;
/// the spans under it move up a level. Each line with the index of the CLIENT span it stands for.
fn fold_clients(tree: &SpanTree<'_>, nodes: &[Node]) -> Vec<(Node, Option<usize>)> {
    let spans = tree.spans();
    let mut lines = Vec::with_capacity(nodes.len());
    // Per depth of the walk: whether that ancestor was folded away.
    let mut folded: Vec<bool> = Vec::new();
    let mut pending: Option<(usize, bool)> = None;
    for n in nodes {
        folded.truncate(n.depth);
        let up = folded.iter().filter(|f| **f).count();
        if client_call(spans, tree.children(n.index), n.index).is_some() {
            folded.push(true);
            pending = Some((n.index, n.last));
            continue;
        }
        folded.push(false);
        let mut shown = Node {
            depth: n.depth - up,
            ..*n
        };
        let client = match pending.take() {
            Some((client, last)) => {
                shown.last = last;
                Some(client)
            }
            None => None,
        };
        lines.push((shown, client));
    }
    lines
}

/// The SERVER child a CLIENT span `c` repeats, when it has that one child and no other.
fn client_call(spans: &[SpanRecord], children: &[usize], c: usize) -> Option<usize> {
    match children {
        [s] if spans[c].kind == SpanKind::Client
            && spans[*s].kind == SpanKind::Server
            && spans[*s].name == spans[c].name =>
        {
            Some(*s)
        }
        _ => None,
    }
}

/// The one call a trace is, when it is one: a lone span, or a CLIENT span and its SERVER child
/// (`[correlation] client_spans`). The console folds such traces like lone spans.
pub fn lone_call(spans: &[SpanRecord]) -> Option<&SpanRecord> {
    match spans {
        [s] => Some(s),
        [a, b] => {
            let (c, s) = if a.kind == SpanKind::Client { (a, b) } else { (b, a) };
            (c.kind == SpanKind::Client
                && s.kind == SpanKind::Server
                && s.parent.is_some_and(|p| p.span_id == c.span_id)
                && s.name == c.name)
                .then_some(s)
        }
        _ => None,
    }
}

/// The tree drawing before a span's name, and the one before its detail lines.
fn tree_prefixes(open: &[bool], n: &Node, has_kids: bool) -> (String, String) {
    let mut prefix = String::new();
    for more in open.iter().skip(1) {
        prefix.push_str(if *more { "│  " } else { "   " });
    }
    // The continuation under this span: its own vertical line goes on if siblings follow.
    let mut cont = prefix.clone();
    if n.depth > 0 {
        prefix.push_str(if n.last { "└─ " } else { "├─ " });
        cont.push_str(if n.last { "   " } else { "│  " });
    }
    cont.push_str(if has_kids { "│  " } else { "   " });
    (prefix, cont)
}

/// A span's line: mark, tree and name, service, duration, bar.
fn span_line(out: &mut String, layout: &Layout, s: &SpanRecord, depth: usize, prefix: &str) {
    let p = layout.p;
    let error = matches!(s.status, SpanStatus::Error(_));
    let room = layout.name_w.saturating_sub(prefix.chars().count());
    let name = fit_name(&s.name, room);
    let pad = room.saturating_sub(name.chars().count());
    let mark = if error { p.paint(RED, "✗ ") } else { "  ".to_string() };
    let name_painted = if error {
        p.paint(RED, &name)
    } else if depth == 0 {
        p.paint(BOLD, &name)
    } else {
        name
    };
    let svc_w = SERVICE_WIDTH;
    let svc = truncate_end(&s.service, svc_w);
    let bar_colour = if error {
        RED
    } else {
        PALETTE[layout.services.iter().position(|v| *v == s.service).unwrap_or(0) % PALETTE.len()]
    };
    let _ = writeln!(
        out,
        "{mark}{}{name_painted}{:pad$} {svc:<svc_w$} {:>DURATION_WIDTH$} │{}│",
        p.paint(DIM, prefix),
        "",
        fmt_duration(duration(s)),
        bar(s, layout.start, layout.extent, layout.bar_w, p, bar_colour),
    );
}

/// The lines under a span: its details, then its error message.
/// `client`: the CLIENT span folded into this line, named as `from <client>`.
fn detail_lines(
    out: &mut String,
    layout: &Layout,
    spans: &[SpanRecord],
    s: &SpanRecord,
    client: Option<&SpanRecord>,
    cont: &str,
) {
    let p = layout.p;
    let room = layout.width - MARK_WIDTH - cont.chars().count();
    let parent = client.unwrap_or(s).parent.and_then(|pr| {
        spans
            .iter()
            .find(|c| c.span_id == pr.span_id && c.trace_id == s.trace_id)
    });
    let mut details = details(s, parent);
    if let Some(c) = client {
        details = if details.is_empty() {
            format!("from {}", c.service)
        } else {
            format!("from {} {details}", c.service)
        };
    }
    if !details.is_empty() {
        let _ = writeln!(
            out,
            "  {}{}",
            p.paint(DIM, cont),
            p.paint(DIM, &truncate_end(&details, room))
        );
    }
    if let SpanStatus::Error(msg) = &s.status
        && !msg.is_empty()
    {
        let text = format!("error: {}", one_line(msg));
        let _ = writeln!(
            out,
            "  {}{}",
            p.paint(DIM, cont),
            p.paint(RED, &truncate_end(&text, room))
        );
    }
}

/// The trace's self time per layer, with each layer's share, when the root has any.
fn self_time_line(out: &mut String, tree: &SpanTree<'_>, root: usize, width: usize) {
    let self_times = self_times(tree, root);
    if self_times.is_empty() {
        return;
    }
    let total: u128 = self_times.iter().map(|(_, d)| d.as_micros()).sum();
    let parts: Vec<String> = self_times
        .iter()
        .map(|(svc, d)| {
            let pct = (d.as_micros() * 100 + total / 2).checked_div(total).unwrap_or(0);
            format!("{svc} {} ({pct}%)", fmt_duration(*d))
        })
        .collect();
    let line = format!("self time: {}", parts.join(" · "));
    let _ = writeln!(out, "  {}", truncate_end(&line, width - MARK_WIDTH));
}

/// Self time per layer of the first root: the correlator's
/// `runtime_tap.self_time_ms.<service>` attributes when the root carries them (milliseconds, a
/// double to the microsecond; whole milliseconds from older files), else computed from the
/// spans at hand.
pub fn self_times(tree: &SpanTree<'_>, root: usize) -> Vec<(String, Duration)> {
    let from_attrs: Vec<(String, Duration)> = tree.spans()[root]
        .attributes
        .iter()
        .filter_map(|a| {
            let svc = a.key.strip_prefix(SELF_TIME_PREFIX)?;
            let ms = match a.value {
                AttrValue::Int(ms) => ms as f64,
                AttrValue::Double(ms) => ms,
                _ => return None,
            };
            Some((svc.to_string(), Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
        })
        .collect();
    if !from_attrs.is_empty() {
        return from_attrs;
    }
    if tree.children(root).is_empty() {
        return Vec::new();
    }
    tree.self_times(root)
        .into_iter()
        .map(|(svc, d)| (svc.to_string(), d))
        .collect()
}

/// The key attributes worth a line: those whose value differs from the parent's.
fn details(s: &SpanRecord, parent: Option<&SpanRecord>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let changed = |key: &str| {
        let v = str_attr(s, key)?;
        match parent.and_then(|p| str_attr(p, key)) {
            Some(pv) if pv == v => None,
            _ => Some(v),
        }
    };
    if let Some(v) = changed(K8S_POD_NAME) {
        parts.push(format!("pod={v}"));
    }
    if let Some(v) = changed(CONTAINER_ID) {
        parts.push(format!("ctr={}", v.chars().take(SHORT_ID).collect::<String>()));
    } else if str_attr(s, CONTAINER_ID).is_none()
        && let Some(v) = changed(names::CONTAINER_REF)
    {
        parts.push(format!("ctr={v}"));
    }
    if let Some(v) = changed(CONTAINER_IMAGE_NAME) {
        parts.push(format!("image={v}"));
    }
    if let Some(v) = str_attr(s, HTTP_RESPONSE_STATUS_CODE) {
        parts.push(format!("status={v}"));
    } else if let Some(v) = str_attr(s, RPC_RESPONSE_STATUS_CODE).filter(|v| v != "OK") {
        parts.push(format!("status={v}"));
    }
    if s.attributes
        .iter()
        .any(|a| a.key == names::INCOMPLETE && a.value == AttrValue::Bool(true))
    {
        parts.push("incomplete".to_string());
    }
    parts.join(" ")
}

fn str_attr(s: &SpanRecord, key: &str) -> Option<String> {
    let a = s.attributes.iter().find(|a| a.key == key)?;
    Some(match &a.value {
        AttrValue::Str(v) => one_line(v),
        AttrValue::Int(v) => v.to_string(),
        AttrValue::Double(v) => v.to_string(),
        AttrValue::Bool(v) => v.to_string(),
        AttrValue::StrList(v) => v.join(","),
    })
}

/// The span's bar: `width` cells, filled where the span lies in the trace's extent.
fn bar(s: &SpanRecord, start: SystemTime, extent: Duration, width: usize, p: Paint, colour: &str) -> String {
    let (from, to) = if extent.is_zero() {
        (0, width)
    } else {
        let frac = |t: SystemTime| t.duration_since(start).unwrap_or_default().as_secs_f64() / extent.as_secs_f64();
        let from = ((frac(s.start) * width as f64).floor() as usize).min(width - 1);
        let to = ((frac(s.end) * width as f64).ceil() as usize).clamp(from + 1, width);
        (from, to)
    };
    format!(
        "{}{}{}",
        " ".repeat(from),
        p.paint(colour, &"█".repeat(to - from)),
        " ".repeat(width - to)
    )
}

/// A name that fits `room` columns: the full name, else a gRPC method without its package,
/// else cut in the middle.
fn fit_name(name: &str, room: usize) -> String {
    let name = one_line(name);
    if name.chars().count() <= room {
        return name;
    }
    let short = grpc_short(&name).unwrap_or(&name);
    truncate_middle(short, room)
}

/// `containerd.services.tasks.v1.Tasks/Start` → `Tasks/Start`; `None` for non-gRPC names.
pub(super) fn grpc_short(name: &str) -> Option<&str> {
    if name.contains(' ') {
        return None;
    }
    let (service, _) = name.split_once('/')?;
    let dot = service.rfind('.')?;
    Some(&name[dot + 1..])
}

fn truncate_middle(s: &str, room: usize) -> String {
    let n = s.chars().count();
    if n <= room {
        return s.to_string();
    }
    if room <= 1 {
        return "…".chars().take(room).collect();
    }
    let head = (room - 1).div_ceil(2);
    let tail = room - 1 - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

fn truncate_end(s: &str, room: usize) -> String {
    if s.chars().count() <= room {
        return s.to_string();
    }
    let mut out: String = s.chars().take(room.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Keeps the rightmost `room` columns of a tree prefix (the levels nearest the span).
fn cut_prefix(prefix: &str, room: usize) -> String {
    let n = prefix.chars().count();
    if n <= room {
        return prefix.to_string();
    }
    let keep = room / INDENT * INDENT;
    prefix.chars().skip(n - keep).collect()
}

/// Control characters (newlines in an error message) would break the layout.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `0.42ms`, `57.3ms`, `2.25s`, `3m05s`: at most [`DURATION_WIDTH`] columns.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else if ms < 100_000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else if ms < 6_000_000.0 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, d.as_secs() / 60 % 60)
    }
}

/// `HH:MM:SS.mmm UTC` of a time.
fn clock(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// ANSI styling, or none.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn paint(self, style: &str, text: &str) -> String {
        if self.0 && !text.is_empty() {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
#[path = "waterfall_tests.rs"]
mod tests;
