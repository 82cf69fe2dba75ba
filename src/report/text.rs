//! The text report: first the answers (pod starts per phase and the slowest pods, image pulls
//! per image and layer by layer, container starts with each layer's self time), then a latency
//! table per service and span name, the slowest operations with their per-layer self time and
//! span tree (the console waterfall), and the long-lived streams apart.
//!
//! The rule it keeps: a table's numbers are its last columns (count, p50, p90, p99, max in
//! milliseconds with three decimals, error rate), so a script can split a row from the right
//! whatever the span name.

use std::fmt::Write;

use super::pods::{PHASES, SLI};
use super::pulls::Pull;
use super::series::{Series, from_ms};
use super::{MethodStats, Report, Slow, mbps, ms, opt, rfc3339};
use crate::trace::attr::names;
use crate::trace::export::waterfall;
use crate::trace::tree::SpanTree;

/// Width of the share bar in the per-layer breakdown.
const SHARE_BAR: usize = 20;
/// Indentation of an operation's details.
const INDENT: &str = "    ";

/// The whole text report, span trees `width` columns wide.
pub fn render(r: &Report, width: usize, color: bool) -> String {
    let mut out = String::new();
    header(&mut out, r);
    pod_starts(&mut out, r, width, color);
    pulls(&mut out, r);
    container_starts(&mut out, r);
    let _ = writeln!(
        out,
        "\nLatency per service and span name (ms; nearest-rank percentiles; errors = status Error)"
    );
    method_table(&mut out, &r.methods);
    if !r.slowest.is_empty() {
        let _ = writeln!(out, "\nSlowest {} operations (root spans)", r.slowest.len());
        slow_list(&mut out, &r.slowest, width, color);
    }
    if !r.long_lived.is_empty() {
        let _ = writeln!(
            out,
            "\nLong-lived streams (ms open: how long a client watched, not work; never among the slowest)"
        );
        method_table(&mut out, &r.long_lived);
    }
    out
}

fn header(out: &mut String, r: &Report) {
    let _ = writeln!(out, "runtime-tap report: {}", r.source);
    let _ = write!(
        out,
        "{} spans in {} traces, {} operations (root spans)",
        r.spans, r.traces, r.operations
    );
    if let Some((from, to)) = r.window {
        let _ = write!(out, ", {} to {}", rfc3339(from), rfc3339(to));
    }
    out.push('\n');
    if r.bad_lines + r.bad_spans + r.duplicates > 0 {
        let _ = writeln!(
            out,
            "skipped: {} of {} lines not OTLP/JSON, {} spans unreadable, {} duplicate spans",
            r.bad_lines, r.lines, r.bad_spans, r.duplicates
        );
        for e in &r.first_errors {
            let _ = writeln!(out, "  {e}");
        }
    }
}

fn pod_starts(out: &mut String, r: &Report, width: usize, color: bool) {
    let p = &r.pod_starts;
    if p.count == 0 {
        let _ = writeln!(out, "\nPod starts: none in this file");
        return;
    }
    let _ = writeln!(out, "\nPod starts: {} (ms; nearest-rank percentiles)", p.count);
    series_table(out, "PHASE", &p.rows);
    let _ = writeln!(out, "\nSlowest {} pod starts", r.slowest_pods.len());
    slow_list(out, &r.slowest_pods, width, color);
}

fn pulls(out: &mut String, r: &Report) {
    let p = &r.pulls;
    if p.count == 0 {
        let _ = writeln!(out, "\nImage pulls: none in this file");
        return;
    }
    let _ = writeln!(out, "\nImage pulls: {} (ms; MB/s = 10^6 bytes per second)", p.count);
    let w = p
        .images
        .iter()
        .map(|i| i.series.label.chars().count())
        .max()
        .unwrap_or(0)
        .max("IMAGE".len());
    let _ = writeln!(
        out,
        "{:<w$}  {:>7}  {:>10}  {:>10}  {:>12}  {:>8}  {:>7}",
        "IMAGE", "COUNT", "P50", "MAX", "BYTES", "MB/S@P50", "ERRORS"
    );
    for i in &p.images {
        let s = &i.series;
        let _ = writeln!(
            out,
            "{:<w$}  {:>7}  {:>10}  {:>10}  {:>12}  {:>8}  {:>7}",
            s.label,
            s.count(),
            ms(s.percentile(50)),
            ms(s.max()),
            opt(i.bytes),
            mbps(i.throughput()),
            i.errors
        );
    }
    let _ = writeln!(out, "\nSlowest {} pulls, layer by layer", p.slowest.len());
    for (n, pull) in p.slowest.iter().enumerate() {
        pull_layers(out, n + 1, pull);
    }
}

fn pull_layers(out: &mut String, n: usize, p: &Pull) {
    let _ = writeln!(
        out,
        "\n{n:>2}. {} · {} · {} ms · {} bytes · {} MB/s · {}{}",
        p.image,
        p.service,
        ms(p.duration),
        opt(p.bytes),
        mbps(p.throughput()),
        rfc3339(p.start),
        if p.error { " · ERROR" } else { "" }
    );
    if p.layers.is_empty() {
        let _ = writeln!(
            out,
            "{INDENT}no per-layer progress on this socket (the daemon pulled inside; see the calls that follow)"
        );
        return;
    }
    let w = p
        .layers
        .iter()
        .map(|l| l.id.chars().count())
        .max()
        .unwrap_or(0)
        .max("LAYER".len());
    let _ = writeln!(
        out,
        "{INDENT}{:<w$}  {:>12}  {:>10}  {:>10}  {:>8}",
        "LAYER", "BYTES", "DOWNLOAD", "EXTRACT", "MB/S"
    );
    for l in &p.layers {
        let _ = writeln!(
            out,
            "{INDENT}{:<w$}  {:>12}  {:>10}  {:>10}  {:>8}",
            l.id,
            opt(l.bytes),
            l.download.map_or("-".into(), ms),
            l.extract.map_or("-".into(), ms),
            mbps(l.throughput())
        );
    }
}

fn container_starts(out: &mut String, r: &Report) {
    let c = &r.container_starts;
    if c.durations.count() == 0 {
        let _ = writeln!(out, "\nContainer starts: none in this file");
        return;
    }
    let _ = writeln!(
        out,
        "\nContainer starts ({}): {} (ms; each layer's self time per start)",
        c.durations.label,
        c.durations.count()
    );
    let mut rows = vec![Series {
        label: "whole start".into(),
        durations: c.durations.durations.clone(),
    }];
    rows.extend(c.layers.iter().cloned());
    series_table(out, "LAYER", &rows);
}

/// A table of series: label, count, p50, p90, p99, max.
fn series_table(out: &mut String, first: &str, rows: &[Series]) {
    let w = rows
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0)
        .max(first.len());
    let _ = writeln!(
        out,
        "{first:<w$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}",
        "COUNT", "P50", "P90", "P99", "MAX"
    );
    for s in rows {
        let _ = writeln!(
            out,
            "{:<w$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}",
            s.label,
            s.count(),
            ms(s.percentile(50)),
            ms(s.percentile(90)),
            ms(s.percentile(99)),
            ms(s.max())
        );
    }
}

fn method_table(out: &mut String, methods: &[MethodStats]) {
    let svc_w = methods
        .iter()
        .map(|m| m.service.chars().count())
        .max()
        .unwrap_or(0)
        .max("SERVICE".len());
    let name_w = methods
        .iter()
        .map(|m| m.name().chars().count())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let _ = writeln!(
        out,
        "{:<svc_w$}  {:<name_w$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}  {:>7}",
        "SERVICE", "NAME", "COUNT", "P50", "P90", "P99", "MAX", "ERRORS"
    );
    for m in methods {
        let _ = writeln!(
            out,
            "{:<svc_w$}  {:<name_w$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}  {:>6.1}%",
            m.service,
            m.name(),
            m.count(),
            ms(m.percentile(50)),
            ms(m.percentile(90)),
            ms(m.percentile(99)),
            ms(m.max()),
            m.error_rate() * 100.0
        );
    }
    if methods.is_empty() {
        let _ = writeln!(out, "(no spans)");
    }
}

/// Each operation: a title line, each layer's self time with a share bar, its span tree.
fn slow_list(out: &mut String, slow: &[Slow], width: usize, color: bool) {
    for (i, s) in slow.iter().enumerate() {
        let root = s.root();
        let _ = writeln!(
            out,
            "\n{:>2}. {} · {} · {} ms · {}{}",
            i + 1,
            root.name,
            root.service,
            ms(s.duration),
            rfc3339(root.start),
            if matches!(root.status, crate::trace::span::SpanStatus::Error(_)) {
                " · ERROR"
            } else {
                ""
            }
        );
        let phases: Vec<String> = std::iter::once((SLI, names::POD_START_SLI_MS))
            .chain(PHASES.iter().copied())
            .filter_map(|(label, key)| Some(format!("{label} {} ms", ms(from_ms(s.root().attr_f64(key)?)))))
            .collect();
        if !phases.is_empty() {
            let _ = writeln!(out, "{INDENT}phases: {}", phases.join(" · "));
        }
        let total: f64 = s.self_times.iter().map(|(_, d)| d.as_secs_f64()).sum();
        let lw = s
            .self_times
            .iter()
            .map(|(svc, _)| svc.chars().count())
            .max()
            .unwrap_or(0)
            .max("LAYER".len());
        let _ = writeln!(out, "{INDENT}{:<lw$}  {:>12}  {:>6}", "LAYER", "SELF TIME", "SHARE");
        for (svc, d) in &s.self_times {
            let share = if total > 0.0 { d.as_secs_f64() / total } else { 0.0 };
            let cells = (share * SHARE_BAR as f64).round() as usize;
            let _ = writeln!(
                out,
                "{INDENT}{svc:<lw$}  {:>9} ms  {:>5.1}%  {}",
                ms(*d),
                share * 100.0,
                "█".repeat(cells)
            );
        }
        let tree = SpanTree::new(&s.trace);
        let text = waterfall::render_subtree(&tree, s.root, width.saturating_sub(INDENT.len()), color);
        for line in text.lines() {
            let _ = writeln!(out, "{INDENT}{line}");
        }
    }
}
