//! The text report: a latency table per service and span name, then the slowest operations
//! with their per-layer self time and span tree (the console waterfall).
//!
//! The rule it keeps: the table's numbers are its last columns (count, p50, p90, p99, max in
//! milliseconds with three decimals, error rate), so a script can split a row from the right
//! whatever the span name.

use std::fmt::Write;

use super::{Report, ms, rfc3339};
use crate::trace::export::waterfall;
use crate::trace::tree::SpanTree;

/// Width of the share bar in the per-layer breakdown.
const SHARE_BAR: usize = 20;
/// Indentation of an operation's details.
const INDENT: &str = "    ";

/// The whole text report, span trees `width` columns wide.
pub fn render(r: &Report, width: usize, color: bool) -> String {
    let mut out = String::new();
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
    out.push('\n');

    let _ = writeln!(
        out,
        "Latency per service and span name (ms; nearest-rank percentiles; errors = status Error)"
    );
    let svc_w = r
        .methods
        .iter()
        .map(|m| m.service.chars().count())
        .max()
        .unwrap_or(0)
        .max("SERVICE".len());
    let name_w = r
        .methods
        .iter()
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let _ = writeln!(
        out,
        "{:<svc_w$}  {:<name_w$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}  {:>7}",
        "SERVICE", "NAME", "COUNT", "P50", "P90", "P99", "MAX", "ERRORS"
    );
    for m in &r.methods {
        let _ = writeln!(
            out,
            "{:<svc_w$}  {:<name_w$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}  {:>6.1}%",
            m.service,
            m.name,
            m.count(),
            ms(m.percentile(50)),
            ms(m.percentile(90)),
            ms(m.percentile(99)),
            ms(m.max()),
            m.error_rate() * 100.0
        );
    }
    if r.methods.is_empty() {
        let _ = writeln!(out, "(no spans)");
    }

    if r.slowest.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nSlowest {} operations (root spans)", r.slowest.len());
    for (i, s) in r.slowest.iter().enumerate() {
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
    out
}
