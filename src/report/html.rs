//! The HTML report: one self-contained page (inline CSS and JS drawing inline SVG; no external
//! asset, no CDN, works offline and from a file:// URL) with the latency table, a histogram
//! per service and span name, and a timeline (waterfall) of each of the slowest operations.
//!
//! The rule it keeps: data goes in as JSON inside a `<script type="application/json">` with
//! every `<` escaped, and the page's script inserts names with `textContent` only, so a span
//! name can never become markup. Once drawn, `<body data-drawn="N">` holds the number of bars
//! drawn (tests and scripts can wait on it).

use std::fmt::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Report, Slow, ms, rfc3339};
use crate::trace::span::SpanStatus;
use crate::trace::tree::{SpanTree, duration};

/// Histogram bins per method.
pub const BINS: usize = 24;
/// Rows drawn per timeline; deeper traces are cut (the text report has them all).
pub const MAX_TIMELINE_ROWS: usize = 400;

mod answers;

/// The page.
pub fn render(r: &Report) -> String {
    let data = data(r);
    // `<` escaped as \u003c keeps `</script>` and `<!--` out of the script element.
    let data = serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    let mut out = String::with_capacity(16 * 1024 + data.len());
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>runtime-tap report: {}</title>", esc(&r.source));
    let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>");
    let _ = writeln!(out, "<h1>runtime-tap report</h1>");
    let _ = write!(
        out,
        "<p class=\"meta\">{}: {} spans in {} traces, {} operations",
        esc(&r.source),
        r.spans,
        r.traces,
        r.operations
    );
    if let Some((from, to)) = r.window {
        let _ = write!(out, ", {} to {}", rfc3339(from), rfc3339(to));
    }
    out.push_str("</p>\n");
    if r.bad_lines + r.bad_spans + r.duplicates > 0 {
        let _ = writeln!(
            out,
            "<p class=\"meta\">skipped: {} of {} lines not OTLP/JSON, {} spans unreadable, {} duplicate spans</p>",
            r.bad_lines, r.lines, r.bad_spans, r.duplicates
        );
    }
    out.push_str("<noscript><p>The charts need JavaScript (inline, no network).</p></noscript>\n");

    answers::render(&mut out, r);
    out.push_str("<h2>Latency per service and span name</h2>\n");
    out.push_str(
        "<p class=\"meta\">milliseconds; nearest-rank percentiles (the value at rank ⌈p·n/100⌉); errors = status Error</p>\n",
    );
    out.push_str(
        "<table id=\"methods\"><thead><tr><th>service</th><th>name</th><th>count</th><th>p50</th>\
         <th>p90</th><th>p99</th><th>max</th><th>errors</th></tr></thead><tbody>\n",
    );
    for (i, m) in r.methods.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><a href=\"#hist-{i}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td{}>{:.1}%</td></tr>",
            esc(&m.service),
            esc(m.name()),
            m.count(),
            ms(m.percentile(50)),
            ms(m.percentile(90)),
            ms(m.percentile(99)),
            ms(m.max()),
            if m.errors > 0 { " class=\"err\"" } else { "" },
            m.error_rate() * 100.0
        );
    }
    out.push_str("</tbody></table>\n");

    out.push_str("<h2>Latency histograms</h2>\n<div id=\"histograms\" class=\"grid\">\n");
    for (i, m) in r.methods.iter().enumerate() {
        let _ = writeln!(
            out,
            "<figure><figcaption>{} · {}</figcaption><svg id=\"hist-{i}\" class=\"hist\" role=\"img\"></svg></figure>",
            esc(&m.service),
            esc(m.name())
        );
    }
    out.push_str("</div>\n");

    let _ = writeln!(out, "<h2>Slowest {} operations</h2>", r.slowest.len());
    timelines(&mut out, "timeline", "tl", &r.slowest);
    if !r.long_lived.is_empty() {
        out.push_str(
            "<h2>Long-lived streams</h2>\n<p class=\"meta\">ms open: how long a client watched (event \
             subscriptions, attach, logs -f), not work; never among the slowest operations</p>\n",
        );
        let rows = r.long_lived.iter().map(|m| {
            vec![
                m.service.to_string(),
                m.name().to_string(),
                m.count().to_string(),
                ms(m.percentile(50)),
                ms(m.max()),
            ]
        });
        table(
            &mut out,
            "long-lived",
            &["service", "name", "count", "p50", "max"],
            rows,
        );
    }
    let _ = writeln!(out, "<script type=\"application/json\" id=\"data\">{data}</script>");
    let _ = writeln!(out, "<script>{JS}</script>\n</body>\n</html>");
    out
}

/// The charts' data: histogram bins per method, rows per timeline (slowest operations, slowest
/// pod starts).
fn data(r: &Report) -> Value {
    let mut services: Vec<&str> = r.methods.iter().map(|m| &*m.service).collect();
    services.dedup();
    let methods: Vec<Value> = r
        .methods
        .iter()
        .map(|m| {
            json!({
                "service": &*m.service,
                "name": m.name(),
                "count": m.count(),
                "p50": msf(m.percentile(50)),
                "p90": msf(m.percentile(90)),
                "p99": msf(m.percentile(99)),
                "max": msf(m.max()),
                "errors": m.errors,
                "bins": bins(&m.durations).into_iter().map(|(lo, hi, n)| json!([lo, hi, n])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut timelines: Vec<Value> = timeline_data("tl", &r.slowest);
    timelines.extend(timeline_data("pod-tl", &r.slowest_pods));
    json!({ "services": services, "methods": methods, "timelines": timelines })
}

/// The rows of each operation's timeline, its svg's id `{prefix}-{i}`.
fn timeline_data(prefix: &str, slow: &[Slow]) -> Vec<Value> {
    slow.iter()
        .enumerate()
        .map(|(i, s)| {
            let tree = SpanTree::new(&s.trace);
            let start = s.root().start;
            let rows: Vec<Value> = tree
                .walk_from_root(s.root)
                .into_iter()
                .take(MAX_TIMELINE_ROWS)
                .map(|n| {
                    let sp = &s.trace[n.index];
                    json!({
                        "name": sp.name,
                        "service": &*sp.service,
                        "depth": n.depth,
                        "start": msf(sp.start.duration_since(start).unwrap_or_default()),
                        "dur": msf(duration(sp)),
                        "error": matches!(sp.status, SpanStatus::Error(_)),
                    })
                })
                .collect();
            json!({ "id": format!("{prefix}-{i}"), "total": msf(s.duration), "rows": rows })
        })
        .collect()
}

/// One section per operation: its title, self time per layer, and the svg its timeline is drawn
/// in (id `{prefix}-{i}`).
pub(super) fn timelines(out: &mut String, div: &str, prefix: &str, slow: &[Slow]) {
    let _ = writeln!(out, "<div id=\"{div}\">");
    for (i, s) in slow.iter().enumerate() {
        let root = s.root();
        let selfs: Vec<String> = s
            .self_times
            .iter()
            .map(|(svc, d)| format!("{} {} ms", esc(svc), ms(*d)))
            .collect();
        let _ = writeln!(
            out,
            "<section class=\"op\"><h3>{}. {} · {} · {} ms{}</h3><p class=\"meta\">{} · trace {} · self time: {}</p>\
             <svg id=\"{prefix}-{i}\" class=\"timeline\" role=\"img\"></svg></section>",
            i + 1,
            esc(&root.name),
            esc(&root.service),
            ms(s.duration),
            if matches!(root.status, SpanStatus::Error(_)) {
                " · <span class=\"err\">error</span>"
            } else {
                ""
            },
            rfc3339(root.start),
            crate::trace::span::hex(&root.trace_id),
            selfs.join(" · ")
        );
    }
    out.push_str("</div>\n");
}

/// A table with a header row; every cell escaped.
pub(super) fn table(out: &mut String, id: &str, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let _ = write!(out, "<table id=\"{id}\"><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", esc(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn msf(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

/// Histogram bins over ascending durations, in ms: `(low, high, count)`. Log-spaced when the
/// values span more than a factor of 10 (latency is long-tailed), else linear; one bin when all
/// values are equal.
pub fn bins(sorted: &[Duration]) -> Vec<(f64, f64, usize)> {
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let (lo, hi) = (msf(*first), msf(*last));
    if hi <= lo {
        return vec![(lo, hi, sorted.len())];
    }
    let log = lo > 0.0 && hi / lo > 10.0;
    let edge = |k: usize| {
        let f = k as f64 / BINS as f64;
        if log {
            lo * (hi / lo).powf(f)
        } else {
            lo + (hi - lo) * f
        }
    };
    let mut out: Vec<(f64, f64, usize)> = (0..BINS).map(|k| (edge(k), edge(k + 1), 0)).collect();
    for d in sorted {
        let v = msf(*d);
        let f = if log {
            (v / lo).ln() / (hi / lo).ln()
        } else {
            (v - lo) / (hi - lo)
        };
        let k = ((f * BINS as f64).floor().max(0.0) as usize).min(BINS - 1);
        out[k].2 += 1;
    }
    out
}

pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px}h3{font-size:15px;margin:18px 0 2px}
.meta{color:#5b6670;margin:2px 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #e3e7eb;text-align:right}
th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}
th{background:#f4f6f8}
.err{color:#c62828;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px}
figure{margin:0;border:1px solid #e3e7eb;border-radius:4px;padding:6px}
figcaption{font-size:12px;color:#333;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
svg text{font:11px system-ui,sans-serif;fill:#333}
svg.timeline{max-width:100%;height:auto}
.layers{margin-left:24px}
svg .axis{stroke:#9aa4ad;stroke-width:1}
svg .mark{stroke:#1d232a;stroke-dasharray:3 2}
svg rect.err{fill:#c62828}
"#;

const JS: &str = r#"
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('data').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#17becf', '#bcbd22', '#7f7f7f'];
  var drawn = 0;
  function el(parent, tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }
  function color(service) {
    var i = data.services.indexOf(service);
    return COLORS[(i < 0 ? 0 : i) % COLORS.length];
  }
  // Cuts a label's text with "…" until it is at most `max` wide.
  function fit(e, text, max) {
    if (e.getComputedTextLength() <= max) return;
    var n = text.length;
    while (n > 1 && e.getComputedTextLength() > max) {
      n--;
      e.textContent = text.slice(0, n) + '…';
    }
  }
  function fmt(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }

  // One histogram per method: bars of counts per duration bin, dashed lines at p50 and p99.
  data.methods.forEach(function (m, i) {
    var svg = document.getElementById('hist-' + i);
    if (!svg) return;
    var W = 360, H = 140, L = 36, B = 22, T = 8, R = 8;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('width', W); svg.setAttribute('height', H);
    var maxN = 0;
    m.bins.forEach(function (b) { if (b[2] > maxN) maxN = b[2]; });
    var bw = (W - L - R) / Math.max(1, m.bins.length);
    var bars = 0;
    m.bins.forEach(function (b, k) {
      if (b[2] === 0) return;
      var h = Math.max(1, (H - B - T) * b[2] / maxN);
      var r = el(svg, 'rect', { x: (L + k * bw + 0.5).toFixed(1), y: (H - B - h).toFixed(1),
        width: Math.max(1, bw - 1).toFixed(1), height: h.toFixed(1), fill: color(m.service), 'class': 'bar' });
      el(r, 'title', {}, fmt(b[0]) + '–' + fmt(b[1]) + ' ms: ' + b[2]);
      bars++;
    });
    el(svg, 'line', { x1: L, y1: H - B, x2: W - R, y2: H - B, 'class': 'axis' });
    el(svg, 'line', { x1: L, y1: T, x2: L, y2: H - B, 'class': 'axis' });
    el(svg, 'text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, String(maxN));
    el(svg, 'text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, '0');
    if (m.bins.length) {
      var lo = m.bins[0][0], hi = m.bins[m.bins.length - 1][1];
      el(svg, 'text', { x: L, y: H - 6 }, fmt(lo) + ' ms');
      el(svg, 'text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, fmt(hi) + ' ms');
      var logScale = lo > 0 && hi / lo > 10;
      var pos = function (v) {
        if (hi <= lo) return L + (W - L - R) / 2;
        var f = logScale ? Math.log(v / lo) / Math.log(hi / lo) : (v - lo) / (hi - lo);
        return L + Math.min(1, Math.max(0, f)) * (W - L - R);
      };
      [['p50', m.p50, T + 8], ['p99', m.p99, T + 20]].forEach(function (p) {
        var x = pos(p[1]);
        var right = x > W / 2;
        el(svg, 'line', { x1: x.toFixed(1), y1: T, x2: x.toFixed(1), y2: H - B, 'class': 'mark' });
        el(svg, 'text', { x: (right ? x - 3 : x + 3).toFixed(1), y: p[2], 'text-anchor': right ? 'end' : 'start' },
          p[0] + ' ' + fmt(p[1]));
      });
    }
    svg.setAttribute('data-bars', bars);
    drawn += bars;
  });

  // One timeline per operation: a row per span, indented by depth, bar by time. Every label
  // is measured and placed inside the drawing: right of its bar, else inside it, else left of
  // it, else against the right edge; a name too long for the label column is cut with "…".
  var outside = 0;
  data.timelines.forEach(function (t) {
    var svg = document.getElementById(t.id);
    if (!svg) return;
    var W = 1000, ROW = 18, TOP = 20, LABEL = 380, R = 8;
    var H = TOP + t.rows.length * ROW + 4;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('width', W); svg.setAttribute('height', H);
    var span = Math.max(t.total, 1e-9), area = W - LABEL - R;
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      var x = (LABEL + f * area).toFixed(1);
      el(svg, 'line', { x1: x, y1: TOP - 4, x2: x, y2: H, 'class': 'axis', 'stroke-opacity': 0.3 });
      el(svg, 'text', { x: x, y: TOP - 8, 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle' },
        fmt(f * t.total) + ' ms');
    });
    var bars = 0;
    t.rows.forEach(function (r, k) {
      var y = TOP + k * ROW;
      var indent = 4 + r.depth * 14;
      var label = el(svg, 'text', { x: indent, y: y + 13 }, r.name);
      fit(label, r.name, LABEL - 8 - indent);
      if (r.error) label.setAttribute('class', 'err');
      el(label, 'title', {}, r.service + ' ' + r.name);
      var x = LABEL + (r.start / span) * area;
      var w = Math.min(Math.max(1, (r.dur / span) * area), W - R - x);
      var rect = el(svg, 'rect', { x: x.toFixed(1), y: y + 3, width: Math.max(1, w).toFixed(1), height: ROW - 6,
        fill: color(r.service), 'class': r.error ? 'err' : 'bar' });
      el(rect, 'title', {}, r.service + ' · ' + r.name + ' · ' + fmt(r.dur) + ' ms at +' + fmt(r.start) + ' ms');
      var text = el(svg, 'text', { x: (x + w + 4).toFixed(1), y: y + 13 }, fmt(r.dur) + ' ms ' + r.service);
      var len = text.getComputedTextLength();
      if (x + w + 4 + len > W) {
        if (w >= len + 8) {
          text.setAttribute('x', (x + w - 4).toFixed(1));
          text.setAttribute('style', 'fill:#fff');
        } else if (x - 4 - len >= LABEL) {
          text.setAttribute('x', (x - 4).toFixed(1));
        } else {
          text.setAttribute('x', (W - 2).toFixed(1));
          text.setAttribute('style', 'paint-order:stroke;stroke:#fff;stroke-width:3px');
        }
        text.setAttribute('text-anchor', 'end');
      }
      bars++;
    });
    var out = 0;
    Array.prototype.forEach.call(svg.querySelectorAll('text'), function (e) {
      var b = e.getBBox();
      if (b.x < -0.5 || b.x + b.width > W + 0.5) out++;
    });
    svg.setAttribute('data-bars', bars);
    svg.setAttribute('data-outside', out);
    outside += out;
    drawn += bars;
  });
  document.body.setAttribute('data-outside', String(outside));
  document.body.setAttribute('data-drawn', String(drawn));
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_hold_every_value() {
        let v: Vec<Duration> = [1u64, 2, 3, 50, 400]
            .iter()
            .map(|&m| Duration::from_millis(m))
            .collect();
        let b = bins(&v);
        assert_eq!(b.len(), BINS);
        assert_eq!(b.iter().map(|x| x.2).sum::<usize>(), 5);
        assert_eq!(b[0].2, 1);
        assert_eq!(b[BINS - 1].2, 1);
        assert!((b[0].0 - 1.0).abs() < 1e-9 && (b[BINS - 1].1 - 400.0).abs() < 1e-6);
        assert_eq!(bins(&v[..1]), vec![(1.0, 1.0, 1)]);
        assert!(bins(&[]).is_empty());
    }

    #[test]
    fn names_cannot_become_markup() {
        assert_eq!(esc("<a href='x'>&\""), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
    }
}
