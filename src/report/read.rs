//! Reads a span file: JSON lines, one OTLP/JSON `ExportTraceServiceRequest` per line, as
//! runtime-tap's file sink and the OpenTelemetry Collector's file exporter write it, back into
//! our own [`SpanRecord`]s. `service.name` of each resource becomes the span's service.
//!
//! The rule it keeps: a bad line or span is skipped and counted, never fatal, so a file cut
//! short by a crash (a partial last line) still reports. Lenient where the encoders differ:
//! ids in hex, 64-bit integers as strings or numbers, enums as numbers or names, camelCase or
//! snake_case keys. A span seen twice (same trace and span id) counts once.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::trace::attr::{Attr, AttrValue};
use crate::trace::span::{ParentRef, SpanId, SpanKind, SpanRecord, SpanStatus, TraceId};

/// Service of spans whose resource names none.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// OTLP status code of an error.
pub const STATUS_CODE_ERROR: i64 = 2;

/// What a span file held.
#[derive(Debug, Default)]
pub struct SpanFile {
    pub spans: Vec<SpanRecord>,
    /// Non-empty lines read.
    pub lines: usize,
    /// Lines that were not an OTLP/JSON request, with the first few reasons.
    pub bad_lines: usize,
    pub first_errors: Vec<String>,
    /// Spans skipped inside good lines (bad ids or times).
    pub bad_spans: usize,
    /// Spans seen again and counted once.
    pub duplicates: usize,
}

/// Reasons kept for the summary.
const KEEP_ERRORS: usize = 3;

/// Reads the whole file.
///
/// # Errors
///
/// When the file cannot be opened or read (a bad line is not an error).
pub fn read(path: &Path) -> std::io::Result<SpanFile> {
    let f = std::fs::File::open(path)?;
    let mut out = SpanFile::default();
    let mut seen: HashSet<(TraceId, SpanId)> = HashSet::new();
    let mut reader = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        n += 1;
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        out.lines += 1;
        let mut spans = Vec::new();
        match parse_line(&line, &mut spans) {
            Ok(bad) => out.bad_spans += bad,
            Err(e) => {
                out.bad_lines += 1;
                if out.first_errors.len() < KEEP_ERRORS {
                    out.first_errors.push(format!("line {n}: {e}"));
                }
                continue;
            }
        }
        for s in spans {
            if seen.insert((s.trace_id, s.span_id)) {
                out.spans.push(s);
            } else {
                out.duplicates += 1;
            }
        }
    }
    Ok(out)
}

/// Parses one line into `out`; returns how many spans in it were skipped.
///
/// # Errors
///
/// When the line is not JSON or has no `resourceSpans` array.
pub fn parse_line(line: &str, out: &mut Vec<SpanRecord>) -> Result<usize, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let resources = field(&v, &["resourceSpans", "resource_spans"])
        .and_then(Value::as_array)
        .ok_or("no resourceSpans array")?;
    let mut bad = 0;
    for rs in resources {
        let service: Arc<str> = field(rs, &["resource"])
            .and_then(|r| field(r, &["attributes"]))
            .and_then(Value::as_array)
            .and_then(|attrs| {
                attrs
                    .iter()
                    .find(|a| a.get("key").and_then(Value::as_str) == Some("service.name"))
            })
            .and_then(|a| a.get("value"))
            .and_then(|v| field(v, &["stringValue", "string_value"]))
            .and_then(Value::as_str)
            .unwrap_or(UNKNOWN_SERVICE)
            .into();
        let scopes = field(
            rs,
            &[
                "scopeSpans",
                "scope_spans",
                "instrumentationLibrarySpans",
                "instrumentation_library_spans",
            ],
        )
        .and_then(Value::as_array);
        for ss in scopes.into_iter().flatten() {
            let spans = field(ss, &["spans"]).and_then(Value::as_array);
            for s in spans.into_iter().flatten() {
                match span(s, &service) {
                    Some(s) => out.push(s),
                    None => bad += 1,
                }
            }
        }
    }
    Ok(bad)
}

fn span(v: &Value, service: &Arc<str>) -> Option<SpanRecord> {
    let trace_id: TraceId = hex_id(field(v, &["traceId", "trace_id"])?.as_str()?)?;
    let span_id: SpanId = hex_id(field(v, &["spanId", "span_id"])?.as_str()?)?;
    let parent = field(v, &["parentSpanId", "parent_span_id"])
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(hex_id::<8>)
        .filter(|p| *p != [0; 8])
        .map(|span_id| ParentRef { span_id, remote: false });
    let start = time(field(v, &["startTimeUnixNano", "start_time_unix_nano"])?)?;
    let end = time(field(v, &["endTimeUnixNano", "end_time_unix_nano"])?)?;
    let kind = match field(v, &["kind"]) {
        Some(Value::Number(n)) if n.as_i64() == Some(2) => SpanKind::Server,
        Some(Value::String(s)) if s == "SPAN_KIND_SERVER" => SpanKind::Server,
        Some(Value::Number(n)) if n.as_i64() == Some(3) => SpanKind::Client,
        Some(Value::String(s)) if s == "SPAN_KIND_CLIENT" => SpanKind::Client,
        _ => SpanKind::Internal,
    };
    let status = match field(v, &["status"]) {
        Some(st) if is_error(field(st, &["code"])) => SpanStatus::Error(
            field(st, &["message"])
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        _ => SpanStatus::Unset,
    };
    let attributes = field(v, &["attributes"])
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(attr).collect())
        .unwrap_or_default();
    Some(SpanRecord {
        trace_id,
        span_id,
        parent,
        trace_state: field(v, &["traceState", "trace_state"])
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        name: field(v, &["name"])
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        kind,
        start,
        end: end.max(start),
        attributes,
        events: Vec::new(),
        links: Vec::new(),
        status,
        service: Arc::clone(service),
    })
}

fn is_error(code: Option<&Value>) -> bool {
    match code {
        Some(Value::Number(n)) => n.as_i64() == Some(STATUS_CODE_ERROR),
        Some(Value::String(s)) => s == "STATUS_CODE_ERROR" || s == "2",
        _ => false,
    }
}

fn attr(a: &Value) -> Option<Attr> {
    let key = a.get("key")?.as_str()?.to_string();
    let value = any_value(a.get("value")?)?;
    Some(Attr { key: key.into(), value })
}

fn any_value(v: &Value) -> Option<AttrValue> {
    if let Some(s) = field(v, &["stringValue", "string_value"]).and_then(Value::as_str) {
        return Some(AttrValue::Str(s.to_string()));
    }
    if let Some(i) = field(v, &["intValue", "int_value"]) {
        return int(i).map(AttrValue::Int);
    }
    if let Some(b) = field(v, &["boolValue", "bool_value"]).and_then(Value::as_bool) {
        return Some(AttrValue::Bool(b));
    }
    if let Some(d) = field(v, &["doubleValue", "double_value"]) {
        // OTLP/JSON writes a double as a number, or as a string for NaN and infinities.
        return match d {
            Value::String(s) => Some(AttrValue::Str(s.clone())),
            other => other.as_f64().map(AttrValue::Double),
        };
    }
    if let Some(arr) = field(v, &["arrayValue", "array_value"]) {
        let values = field(arr, &["values"]).and_then(Value::as_array);
        let list = values
            .into_iter()
            .flatten()
            .filter_map(any_value)
            .map(|v| match v {
                AttrValue::Str(s) => s,
                AttrValue::Int(i) => i.to_string(),
                AttrValue::Double(d) => d.to_string(),
                AttrValue::Bool(b) => b.to_string(),
                AttrValue::StrList(l) => l.join(","),
            })
            .collect();
        return Some(AttrValue::StrList(list));
    }
    None
}

fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| v.get(*n))
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn time(v: &Value) -> Option<SystemTime> {
    let ns: u64 = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(UNIX_EPOCH + Duration::from_nanos(ns))
}

fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_style_line_parses() {
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"dockerd"}}]},
            "scopeSpans":[{"spans":[
              {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","parentSpanId":"",
               "name":"POST /containers/{id}/start","kind":"SPAN_KIND_SERVER",
               "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000057000000,
               "attributes":[{"key":"http.response.status_code","value":{"intValue":"500"}},
                             {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"3.6"}]}}},
                             {"key":"ratio","value":{"doubleValue":0.5}}],
               "status":{"code":"STATUS_CODE_ERROR","message":"boom"}},
              {"traceId":"zz","spanId":"00f067aa0ba902b7","startTimeUnixNano":"1","endTimeUnixNano":"2"}
            ]}]}]}"#;
        let mut out = Vec::new();
        assert_eq!(parse_line(line, &mut out), Ok(1));
        let s = &out[0];
        assert_eq!(&*s.service, "dockerd");
        assert_eq!(s.parent, None);
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.end.duration_since(s.start).unwrap(), Duration::from_millis(57));
        assert_eq!(s.status, SpanStatus::Error("boom".into()));
        assert_eq!(s.attributes[0].value, AttrValue::Int(500));
        assert_eq!(s.attributes[1].value, AttrValue::StrList(vec!["3.6".into()]));
        assert_eq!(s.attributes[2].value, AttrValue::Double(0.5));
        assert!(parse_line("{\"x\":1}", &mut out).is_err());
        assert!(parse_line("{\"resourceSp", &mut out).is_err());
    }
}
