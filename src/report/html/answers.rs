//! The page's first part, the answers: pod starts per phase with the slowest pods' timelines,
//! image pulls per image and layer by layer, container starts with each layer's self time.

use std::fmt::Write;

use super::super::series::Series;
use super::super::{Report, mbps, ms, opt, rfc3339};
use super::{esc, table, timelines};

const SERIES_HEADERS: &[&str] = &["", "count", "p50", "p90", "p99", "max"];

/// Pod starts, pulls and container starts, each with a line saying so when the file has none.
pub(super) fn render(out: &mut String, r: &Report) {
    out.push_str("<h2>Pod starts</h2>\n");
    if r.pod_starts.count == 0 {
        out.push_str("<p class=\"meta\">none in this file</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} pod starts; milliseconds per phase, nearest-rank percentiles; the SLI excludes image pulls (README, \"Pod start phases\")</p>",
            r.pod_starts.count
        );
        series_table(out, "pod-phases", "phase", &r.pod_starts.rows);
        let _ = writeln!(out, "<h3>Slowest {} pod starts</h3>", r.slowest_pods.len());
        timelines(out, "pod-timeline", "pod-tl", &r.slowest_pods);
    }
    pulls(out, r);
    out.push_str("<h2>Container starts</h2>\n");
    let c = &r.container_starts;
    if c.durations.count() == 0 {
        out.push_str("<p class=\"meta\">none in this file</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} × {}; milliseconds; each layer's self time per start</p>",
            c.durations.count(),
            esc(&c.durations.label)
        );
        let mut rows = vec![Series {
            label: "whole start".into(),
            durations: c.durations.durations.clone(),
        }];
        rows.extend(c.layers.iter().cloned());
        series_table(out, "start-layers", "layer", &rows);
    }
}

fn pulls(out: &mut String, r: &Report) {
    out.push_str("<h2>Image pulls</h2>\n");
    let p = &r.pulls;
    if p.count == 0 {
        out.push_str("<p class=\"meta\">none in this file</p>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} pulls; milliseconds; MB/s = 10<sup>6</sup> bytes per second</p>",
        p.count
    );
    let rows = p.images.iter().map(|i| {
        let s = &i.series;
        vec![
            s.label.clone(),
            s.count().to_string(),
            ms(s.percentile(50)),
            ms(s.max()),
            opt(i.bytes),
            mbps(i.throughput()),
            i.errors.to_string(),
        ]
    });
    let headers = ["image", "count", "p50", "max", "bytes", "MB/s at p50", "errors"];
    table(out, "pull-images", &headers, rows);
    let _ = writeln!(out, "<h3>Slowest {} pulls, layer by layer</h3>", p.slowest.len());
    for (n, pull) in p.slowest.iter().enumerate() {
        let _ = writeln!(
            out,
            "<p>{}. {} · {} · {} ms · {} bytes · {} MB/s · {}{}</p>",
            n + 1,
            esc(&pull.image),
            esc(&pull.service),
            ms(pull.duration),
            opt(pull.bytes),
            mbps(pull.throughput()),
            rfc3339(pull.start),
            if pull.error {
                " · <span class=\"err\">error</span>"
            } else {
                ""
            }
        );
        if pull.layers.is_empty() {
            out.push_str(
                "<p class=\"meta layers\">no per-layer progress on this socket (the daemon pulled inside)</p>\n",
            );
            continue;
        }
        out.push_str("<div class=\"layers\">");
        let rows = pull.layers.iter().map(|l| {
            vec![
                l.id.clone(),
                opt(l.bytes),
                l.download.map_or("-".into(), ms),
                l.extract.map_or("-".into(), ms),
                mbps(l.throughput()),
            ]
        });
        table(
            out,
            &format!("pull-{n}-layers"),
            &["layer", "bytes", "download", "extract", "MB/s"],
            rows,
        );
        out.push_str("</div>\n");
    }
}

fn series_table(out: &mut String, id: &str, first: &str, rows: &[Series]) {
    let mut headers = SERIES_HEADERS.to_vec();
    headers[0] = first;
    let rows = rows.iter().map(|s| {
        vec![
            s.label.clone(),
            s.count().to_string(),
            ms(s.percentile(50)),
            ms(s.percentile(90)),
            ms(s.percentile(99)),
            ms(s.max()),
        ]
    });
    table(out, id, &headers, rows);
}
