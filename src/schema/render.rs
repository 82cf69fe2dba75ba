//! Payload capture (opt-in): a decoded message as JSON, redacted, within a size cap.
//! Rule it keeps: redaction happens while the JSON is built, so no unredacted value is ever
//! rendered; the output is always valid JSON, cut at value boundaries with visible markers.
//!
//! Shape: proto field names (as in the `.proto` files, not camelCase), set fields only,
//! enums by name, 64-bit integers as numbers, `bytes` as `"<N bytes>"` (lengths, not
//! contents), `google.protobuf.Timestamp` as RFC 3339, maps with sorted keys, `Any` as
//! described in `any.rs`. Object keys come out sorted (serde_json's map).

use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};
use serde_json::{Map, Value as Json};

use super::Schema;
use super::any;
use super::redact::{self, Ctx, REDACTED};

/// Deepest message nesting rendered; deeper values become [`ELLIPSIS`].
pub const MAX_DEPTH: usize = 32;
/// Marks a cut: the end of a truncated string, the last element of a truncated array, and
/// what is rendered past [`MAX_DEPTH`].
pub const ELLIPSIS: &str = "…";
/// Key added (with `true`) as the last member of a truncated object.
pub const TRUNCATED_KEY: &str = "@truncated";

/// Renders `payload`, decoded as `desc`, as redacted JSON of at most `cap` bytes (a cap below
/// a few bytes gives `""`). A payload that does not decode renders as
/// `{"@error": "...", "size": n}`.
pub fn render_json(schema: &Schema, desc: &MessageDescriptor, payload: &[u8], cap: usize) -> String {
    let json = match DynamicMessage::decode(desc.clone(), payload) {
        Ok(msg) => message_to_json(schema, &msg, Ctx::Plain, 0),
        Err(e) => serde_json::json!({
            "@error": format!("payload does not decode as {}: {e}", desc.full_name()),
            "size": payload.len(),
        }),
    };
    to_string_capped(&json, cap)
}

/// A decoded message as redacted JSON; `ctx` is the context it is rendered in.
pub(crate) fn message_to_json(schema: &Schema, msg: &DynamicMessage, ctx: Ctx, depth: usize) -> Json {
    if depth > MAX_DEPTH {
        return Json::String(ELLIPSIS.to_owned());
    }
    let desc = msg.descriptor();
    match desc.full_name() {
        any::ANY => return any::to_json(schema, msg, ctx, depth),
        "google.protobuf.Timestamp" => {
            if let Some(s) = timestamp(msg) {
                return Json::String(s);
            }
        }
        _ => {}
    }
    let ctx = if ctx == Ctx::Plain && redact::is_secret_message(&desc) {
        Ctx::Secret
    } else {
        ctx
    };
    let mut obj = Map::new();
    for (field, value) in msg.fields() {
        let field_ctx = redact::field_ctx(ctx, &field);
        let json = value_to_json(schema, value, &field.kind(), field_ctx, depth);
        obj.insert(field.name().to_owned(), json);
    }
    Json::Object(obj)
}

fn value_to_json(schema: &Schema, value: &Value, kind: &Kind, ctx: Ctx, depth: usize) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::String(s) => Json::String(match ctx {
            Ctx::Plain => s.clone(),
            Ctx::Secret => REDACTED.to_owned(),
            Ctx::Env => redact::redact_env_entry(s),
        }),
        Value::Bytes(b) => match ctx {
            Ctx::Secret if !b.is_empty() => Json::String(REDACTED.to_owned()),
            _ => Json::String(format!("<{} bytes>", b.len())),
        },
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => Json::String(v.name().to_owned()),
                None => Json::from(*n),
            },
            _ => Json::from(*n),
        },
        Value::Message(m) => message_to_json(schema, m, ctx, depth + 1),
        Value::List(items) => Json::Array(
            items
                .iter()
                .map(|v| value_to_json(schema, v, kind, ctx, depth))
                .collect(),
        ),
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut obj = Map::new();
            for (key, v) in entries {
                let key = map_key(key);
                let entry_ctx = if ctx == Ctx::Plain && redact::is_secret_name(&key) {
                    Ctx::Secret
                } else {
                    ctx
                };
                obj.insert(key, value_to_json(schema, v, &value_kind, entry_ctx, depth));
            }
            Json::Object(obj)
        }
    }
}

fn float(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or_else(|| Json::String(x.to_string()), Json::Number)
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// `google.protobuf.Timestamp` as RFC 3339 UTC (`2024-05-01T12:00:00.5Z`).
fn timestamp(msg: &DynamicMessage) -> Option<String> {
    let seconds = match msg.get_field_by_name("seconds").as_deref() {
        Some(Value::I64(s)) => *s,
        _ => return None,
    };
    let nanos = match msg.get_field_by_name("nanos").as_deref() {
        Some(Value::I32(n)) if (0..1_000_000_000).contains(n) => *n,
        _ => return None,
    };
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    Some(s)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Serializes `json` in at most `cap` bytes, cutting at value boundaries so the result stays
/// valid JSON: a cut string ends in `…`, a cut array ends with a `"…"` element, a cut object
/// ends with `"@truncated":true`.
pub fn to_string_capped(json: &Json, cap: usize) -> String {
    let mut out = json.to_string();
    if out.len() <= cap {
        return out;
    }
    out.clear();
    if write_capped(json, &mut out, cap) == Written::Nothing {
        out.clear();
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    Full,
    Partial,
    Nothing,
}

/// `,"…"`
const ARRAY_MARKER_LEN: usize = 1 + 2 + ELLIPSIS.len();
/// `,"@truncated":true`
const OBJECT_MARKER_LEN: usize = 1 + TRUNCATED_KEY.len() + 2 + 1 + 4;

/// Appends `json` to `out` without passing `limit` bytes in total.
fn write_capped(json: &Json, out: &mut String, limit: usize) -> Written {
    let start = out.len();
    match json {
        Json::Array(items) => {
            if start + 2 > limit {
                return Written::Nothing;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                // The last element needs no room for a marker after it.
                let reserve = if i + 1 == items.len() { 1 } else { 1 + ARRAY_MARKER_LEN };
                let inner_limit = limit.saturating_sub(reserve);
                let before = out.len();
                if i > 0 {
                    out.push(',');
                }
                match write_capped(item, out, inner_limit) {
                    Written::Full => continue,
                    Written::Partial => {}
                    Written::Nothing => out.truncate(before),
                }
                // Room for the marker is reserved; only a nearly empty cap lacks it.
                if out.len() + ARRAY_MARKER_LEN < limit {
                    if out.len() > start + 1 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(ELLIPSIS);
                    out.push('"');
                }
                out.push(']');
                return Written::Partial;
            }
            out.push(']');
            Written::Full
        }
        Json::Object(map) => {
            if start + 2 > limit {
                return Written::Nothing;
            }
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                let reserve = if i + 1 == map.len() { 1 } else { 1 + OBJECT_MARKER_LEN };
                let inner_limit = limit.saturating_sub(reserve);
                let before = out.len();
                if i > 0 {
                    out.push(',');
                }
                let key_json = Json::String(key.clone()).to_string();
                let written = if out.len() + key_json.len() + 1 < inner_limit {
                    out.push_str(&key_json);
                    out.push(':');
                    write_capped(value, out, inner_limit)
                } else {
                    Written::Nothing
                };
                match written {
                    Written::Full => continue,
                    Written::Partial => {}
                    Written::Nothing => out.truncate(before),
                }
                if out.len() + OBJECT_MARKER_LEN < limit {
                    if out.len() > start + 1 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(TRUNCATED_KEY);
                    out.push_str("\":true");
                }
                out.push('}');
                return Written::Partial;
            }
            out.push('}');
            Written::Full
        }
        Json::String(s) => {
            let full = json.to_string();
            if start + full.len() <= limit {
                out.push_str(&full);
                return Written::Full;
            }
            // Cut the text so that the quoted, escaped prefix plus `…` fits.
            let room = limit.saturating_sub(start + 2 + ELLIPSIS.len());
            if room == 0 {
                return Written::Nothing;
            }
            let mut end = 0;
            let mut used = 0;
            for (i, c) in s.char_indices() {
                let n = escaped_len(c);
                if used + n > room {
                    break;
                }
                used += n;
                end = i + c.len_utf8();
            }
            let prefix = Json::String(format!("{}{ELLIPSIS}", &s[..end])).to_string();
            out.push_str(&prefix);
            Written::Partial
        }
        scalar => {
            let text = scalar.to_string();
            if start + text.len() <= limit {
                out.push_str(&text);
                Written::Full
            } else {
                Written::Nothing
            }
        }
    }
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}
