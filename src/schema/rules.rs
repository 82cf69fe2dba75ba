//! The rule engine: applies the per-API tables ([`super::cri::RULES`],
//! [`super::containerd::RULES`]) to decoded payloads. Rule it keeps: only fields a rule names
//! become attributes (an allowlist), a rule never names a secret-looking field, and the first
//! value of a key wins (a request's id is not overwritten by the response's copy), except for
//! a rule marked [`Rule::latest()`], which keeps the last message's value in one slot.
//! Messages that are themselves a `google.protobuf.Any` (Streaming/Stream) are read inside
//! the packed message, and a rule can be limited to one packed type ([`Rule::of_type()`]), read
//! off the wire before anything is decoded.

use std::borrow::Cow;

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

use super::pool::{Api, MethodInfo, Schema, SchemaError};
use super::{Side, any, image_ref, redact};
use crate::trace::attr::Attr;
use opentelemetry_semantic_conventions::attribute::{CONTAINER_IMAGE_ID, CONTAINER_IMAGE_NAME, CONTAINER_IMAGE_TAGS};

/// How a payload field becomes attribute values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A string field; empty strings give nothing.
    Str,
    /// An integer field, including 0 (an exit status of 0 is a real value).
    Int,
    /// An integer field where 0 means "not set" (pids).
    NonZeroInt,
    /// An image reference string (`registry.k8s.io/pause:3.6`, `img@sha256:...`): gives
    /// `container.image.name`, `container.image.tags` and `container.image.id` (digest) as
    /// present, whatever `attr` the rule names.
    ImageRef,
    /// A `google.protobuf.Any` field: the type name its URL names
    /// (`containerd.types.transfer.ImageStore`, with or without a `host/` prefix), never its
    /// contents. An unset Any gives nothing.
    AnyType,
    /// A `map<string, string>` of annotations: the value under the key `traceparent` or a key
    /// ending in `/traceparent` (the object trace context KEP-5915 proposes), as a string. No
    /// other entry is read.
    TraceParentAnnotation,
}

/// A guard on a rule: the enum at `field_path` must have the value named `enum_value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct When {
    pub field_path: &'static str,
    pub enum_value: &'static str,
}

/// One row of an API's table: which field of which method's payload becomes which attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `Service/Method`. For CRI relative to the package (the table applies to `runtime.v1`
    /// and `runtime.v1alpha2` alike); for containerd the full service name. `Service/*`
    /// matches every method of the service whose message has `field_path`.
    pub method: &'static str,
    pub side: Side,
    /// Dotted field names from the message root (`config.metadata.name`). A segment after a
    /// `google.protobuf.Any` field looks inside the packed message (`event.container_id`), and
    /// so does a path on a message that is itself an Any (Streaming/Stream's: `id`).
    /// Repeated and map fields are not walked.
    pub field_path: &'static str,
    /// Attribute name (semantic-conventions constant or one of ours).
    pub attr: &'static str,
    pub kind: ValueKind,
    pub when: Option<When>,
    /// Only for a message that is itself an Any packing this type (full name, as the URL
    /// names it after its last `/`); other messages are not decoded for the rule.
    pub any_type: Option<&'static str>,
    /// The last message with the field wins, and a message the rule applies to without the
    /// field removes the attribute, so that the attributes of `latest` rules always come from
    /// one message. Response side only: a request's attributes are handed to the correlator
    /// as they are appended.
    pub latest: bool,
}

impl Rule {
    /// A rule on the request message.
    pub const fn req(method: &'static str, field_path: &'static str, attr: &'static str, kind: ValueKind) -> Rule {
        Rule {
            method,
            side: Side::Request,
            field_path,
            attr,
            kind,
            when: None,
            any_type: None,
            latest: false,
        }
    }

    /// A rule on the response message.
    pub const fn resp(method: &'static str, field_path: &'static str, attr: &'static str, kind: ValueKind) -> Rule {
        Rule {
            method,
            side: Side::Response,
            field_path,
            attr,
            kind,
            when: None,
            any_type: None,
            latest: false,
        }
    }

    /// The same rule, applied only when the enum at `field_path` is `enum_value` (by name), or
    /// the string there equals it.
    pub const fn when(self, field_path: &'static str, enum_value: &'static str) -> Rule {
        Rule {
            when: Some(When { field_path, enum_value }),
            ..self
        }
    }

    /// The same rule, for a message that is itself an Any, applied only when it packs
    /// `type_name` (`containerd.services.streaming.v1.StreamInit`).
    pub const fn of_type(self, type_name: &'static str) -> Rule {
        Rule {
            any_type: Some(type_name),
            ..self
        }
    }

    /// The same rule, keeping the value of the last message it applies to (see the
    /// [`latest`](Rule#structfield.latest) field).
    pub const fn latest(self) -> Rule {
        Rule { latest: true, ..self }
    }
}

/// The table of an API family.
fn table(api: Api) -> &'static [Rule] {
    match api {
        Api::Cri => super::cri::RULES,
        Api::Containerd => super::containerd::RULES,
        Api::Other => &[],
    }
}

/// The rules of `api`'s table that apply to the method `full_name` (`pkg.Service/Method`) in
/// `package`, keeping only those whose paths exist in the method's message types.
pub(crate) fn rules_for(
    api: Api,
    full_name: &str,
    package: &str,
    input: &MessageDescriptor,
    output: &MessageDescriptor,
) -> Vec<&'static Rule> {
    let name = match api {
        Api::Cri => full_name
            .strip_prefix(package)
            .and_then(|n| n.strip_prefix('.'))
            .unwrap_or(full_name),
        _ => full_name,
    };
    table(api)
        .iter()
        .filter(|r| method_matches(r.method, name))
        .filter(|r| {
            let desc = match r.side {
                Side::Request => input,
                Side::Response => output,
            };
            path_resolves(desc, r.field_path, r.kind)
                && r.when.is_none_or(|w| path_can_guard(desc, w.field_path))
                && (r.any_type.is_none() || any::is_any(desc))
        })
        .collect()
}

fn method_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(service) => name.strip_prefix(service).is_some_and(|m| m.starts_with('/')),
        None => pattern == name,
    }
}

/// Whether `path` names a singular field of a kind that `kind` can read, walking only
/// singular message fields (an `Any` accepts any remaining path; checked at decode time).
pub(crate) fn path_resolves(desc: &MessageDescriptor, path: &str, kind: ValueKind) -> bool {
    let Some(field) = walk_static(desc, path) else {
        return false;
    };
    let Some(field) = field else { return true }; // behind an Any
    match kind {
        ValueKind::Str | ValueKind::ImageRef => field.kind() == Kind::String && !field.is_list(),
        ValueKind::Int | ValueKind::NonZeroInt => is_integer(&field.kind()) && !field.is_list(),
        ValueKind::AnyType => matches!(field.kind(), Kind::Message(m) if any::is_any(&m)) && !field.is_list(),
        ValueKind::TraceParentAnnotation => {
            field.is_map()
                && matches!(field.kind(), Kind::Message(entry)
                    if entry.map_entry_key_field().kind() == Kind::String
                        && entry.map_entry_value_field().kind() == Kind::String)
        }
    }
}

/// Whether a guard can read `path`: an enum or string field, or one inside an Any (checked
/// on each message).
fn path_can_guard(desc: &MessageDescriptor, path: &str) -> bool {
    match walk_static(desc, path) {
        Some(Some(f)) => matches!(f.kind(), Kind::Enum(_) | Kind::String) && !f.is_list(),
        Some(None) => true,
        None => false,
    }
}

/// `None`: path does not exist. `Some(None)`: reaches into an Any. `Some(Some(f))`: the leaf.
fn walk_static(desc: &MessageDescriptor, path: &str) -> Option<Option<prost_reflect::FieldDescriptor>> {
    if any::is_any(desc) {
        return Some(None);
    }
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let field = desc.get_field_by_name(head)?;
    // A repeated or map leaf is returned (only a map-reading kind accepts it), never walked.
    if (field.is_list() || field.is_map()) && rest.is_some() {
        return None;
    }
    match rest {
        None => Some(Some(field)),
        Some(rest) => match field.kind() {
            Kind::Message(m) if any::is_any(&m) => Some(None),
            Kind::Message(m) => walk_static(&m, rest),
            _ => None,
        },
    }
}

fn is_integer(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
    )
}

/// Whether any rule needs the payload of `side` of `method`; when not, the caller can skip
/// decoding it (it still counts messages and bytes).
pub fn wants_payload(method: &MethodInfo, side: Side) -> bool {
    method.rules.iter().any(|r| r.side == side)
}

/// Whether every rule on `side` of `method` already has its value in `attrs`: with first
/// value wins, decoding more messages of that side can add nothing. False when no rule wants
/// the side, and when a [`Rule::latest()`] rule does (a later message can change it). An image
/// reference rule needs its name, tags and id all present.
pub fn rules_satisfied(method: &MethodInfo, side: Side, attrs: &[Attr]) -> bool {
    let has = |key: &str| attrs.iter().any(|a| a.key == key);
    let mut rules = method.rules.iter().filter(|r| r.side == side).peekable();
    rules.peek().is_some()
        && rules.all(|r| match r.kind {
            _ if r.latest => false,
            ValueKind::ImageRef => has(CONTAINER_IMAGE_NAME) && has(CONTAINER_IMAGE_TAGS) && has(CONTAINER_IMAGE_ID),
            _ => has(r.attr),
        })
}

/// Decodes one gRPC message of `side` of `method` and appends the attributes its rules give
/// to `out`. A key already in `out` is left as it is (first value wins; a [`Rule::latest()`]
/// rule replaces it), so one `out` can collect a whole call. Does nothing, without decoding,
/// when no rule wants the payload (for an Any, none wants the type it packs).
///
/// # Errors
///
/// [`SchemaError::Decode`] if the payload does not decode as the method's message type; `out`
/// is unchanged then. Callers count it as an anomaly; it never affects the call.
pub fn extract(
    schema: &Schema,
    method: &MethodInfo,
    side: Side,
    payload: &[u8],
    out: &mut Vec<Attr>,
) -> Result<(), SchemaError> {
    let desc = method.message(side).clone();
    let root_any = any::is_any(&desc);
    // A message that is an Any is judged by its type URL, read off the wire: a data chunk
    // that no rule wants is never decoded.
    let packed = if root_any {
        any_type_url(payload).map(any::type_name)
    } else {
        None
    };
    let applies = |r: &Rule| r.side == side && r.any_type.is_none_or(|t| packed == Some(t));
    if !method.rules.iter().any(|r| applies(r)) {
        return Ok(());
    }
    // Only the top-level fields a rule reads are decoded: a Content/Write chunk's `data`, a
    // spec's JSON, labels... are stepped over without a copy. An Any is wanted whole.
    let payload = if root_any {
        Cow::Borrowed(payload)
    } else {
        let wanted: Vec<u32> = method
            .rules
            .iter()
            .filter(|r| applies(r))
            .flat_map(|r| [Some(r.field_path), r.when.map(|w| w.field_path)])
            .flatten()
            .filter_map(|path| desc.get_field_by_name(path.split('.').next()?))
            .map(|f| f.number())
            .collect();
        prune(payload, &wanted)
    };
    let msg = DynamicMessage::decode(desc, payload.as_ref()).map_err(|source| SchemaError::Decode {
        method: method.full_name.clone(),
        side,
        message: method.message(side).full_name().to_owned(),
        source,
    })?;
    for rule in method.rules.iter().filter(|r| applies(r)) {
        apply(schema, rule, &msg, out);
    }
    Ok(())
}

/// One top-level field of a protobuf payload, as it is on the wire.
struct WireField<'a> {
    number: u32,
    /// The whole field, key included.
    whole: &'a [u8],
    /// The contents of a length-delimited field.
    contents: Option<&'a [u8]>,
}

/// The field of `payload` that starts at `*at`, moving `*at` past it; `None` when the bytes
/// do not walk cleanly (a cut field, a bad varint, a group).
fn next_field<'a>(payload: &'a [u8], at: &mut usize) -> Option<WireField<'a>> {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let start = *at;
    let key = varint(payload, at)?;
    let number = u32::try_from(key >> 3).ok()?;
    let mut contents = None;
    match key & 7 {
        0 => {
            varint(payload, at)?;
        }
        1 => *at = at.checked_add(8)?,
        2 => {
            let len = usize::try_from(varint(payload, at)?).ok()?;
            let from = *at;
            *at = at.checked_add(len)?;
            contents = Some(payload.get(from..*at)?);
        }
        5 => *at = at.checked_add(4)?,
        _ => return None,
    }
    Some(WireField {
        number,
        whole: payload.get(start..*at)?,
        contents,
    })
}

/// The `type_url` (field 1) of a payload that is a `google.protobuf.Any`, read off the wire
/// without decoding the packed value; `None` when it has none or does not walk.
pub(crate) fn any_type_url(payload: &[u8]) -> Option<&str> {
    let mut at = 0;
    while at < payload.len() {
        let field = next_field(payload, &mut at)?;
        if field.number == 1 {
            return std::str::from_utf8(field.contents?).ok();
        }
    }
    None
}

/// The fields of `payload` (protobuf wire format) whose numbers are in `wanted`, in order;
/// the others are stepped over by their lengths, never decoded. A payload that does not
/// walk cleanly (or uses groups) is returned whole, for the decoder to judge.
pub(crate) fn prune<'a>(payload: &'a [u8], wanted: &[u32]) -> Cow<'a, [u8]> {
    let walk = || -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < payload.len() {
            let field = next_field(payload, &mut at)?;
            if wanted.contains(&field.number) {
                out.extend_from_slice(field.whole);
            }
        }
        Some(out)
    };
    match walk() {
        Some(pruned) if pruned.len() < payload.len() => Cow::Owned(pruned),
        _ => Cow::Borrowed(payload),
    }
}

/// Applies one rule to a decoded message.
pub(crate) fn apply(schema: &Schema, rule: &Rule, msg: &DynamicMessage, out: &mut Vec<Attr>) {
    debug_assert!(
        !rule.field_path.split('.').any(redact::is_builtin_secret_name),
        "rule names a secret: {}",
        rule.field_path
    );
    // A field name the config added to the redaction rules never becomes an attribute either.
    if redact::path_is_sensitive(rule.field_path) {
        return;
    }
    if let Some(when) = rule.when {
        match lookup(schema, msg, when.field_path) {
            Some((Kind::Enum(e), Value::EnumNumber(n)))
                if e.get_value(n).is_some_and(|v| v.name() == when.enum_value) => {}
            Some((_, Value::String(s))) if s == when.enum_value => {}
            _ => return,
        }
    }
    let value = lookup(schema, msg, rule.field_path).map(|(_, v)| v);
    let attr = match (rule.kind, value) {
        (ValueKind::ImageRef, Some(Value::String(s))) => return push_image_ref(out, &s),
        (ValueKind::Str, Some(Value::String(s))) if !s.is_empty() => Some(Attr::str(rule.attr, s)),
        (ValueKind::Int | ValueKind::NonZeroInt, Some(v)) => match as_i64(&v) {
            Some(n) if n != 0 || rule.kind == ValueKind::Int => Some(Attr::int(rule.attr, n)),
            _ => None,
        },
        (ValueKind::TraceParentAnnotation, Some(Value::Map(m))) => m
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (prost_reflect::MapKey::String(k), Value::String(v))
                    if k == "traceparent" || k.ends_with("/traceparent") =>
                {
                    Some((k, v))
                }
                _ => None,
            })
            // The map's order is not the wire's: the smallest key, so a choice is repeatable.
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, v)| Attr::str(rule.attr, v.clone())),
        (ValueKind::AnyType, Some(Value::Message(m))) => {
            let (url, _) = any::parts(&m);
            let name = any::type_name(&url);
            (!name.is_empty()).then(|| Attr::str(rule.attr, name))
        }
        _ => None,
    };
    match (attr, rule.latest) {
        (Some(attr), false) => push(out, attr),
        (Some(attr), true) => match out.iter_mut().find(|a| a.key == attr.key) {
            Some(slot) => *slot = attr,
            None => out.push(attr),
        },
        (None, true) => out.retain(|a| a.key != rule.attr),
        (None, false) => {}
    }
}

/// `container.image.name`, `container.image.tags` and `container.image.id` of a reference,
/// each as present (first value wins).
fn push_image_ref(out: &mut Vec<Attr>, reference: &str) {
    let r = image_ref::parse(reference);
    if let Some(name) = r.name {
        push(out, Attr::str(CONTAINER_IMAGE_NAME, name));
    }
    if let Some(tag) = r.tag {
        push(out, Attr::list(CONTAINER_IMAGE_TAGS, vec![tag.to_owned()]));
    }
    if let Some(digest) = r.digest {
        push(out, Attr::str(CONTAINER_IMAGE_ID, digest));
    }
}

fn push(out: &mut Vec<Attr>, attr: Attr) {
    if !out.iter().any(|a| a.key == attr.key) {
        out.push(attr);
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I32(n) => Some(n.into()),
        Value::I64(n) => Some(n),
        Value::U32(n) => Some(n.into()),
        Value::U64(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

/// The value at `path` in `msg` with its field kind: the default for an unset scalar leaf,
/// `None` for an unset message on the way, a missing field, or an Any the pool cannot unpack.
/// A message that is an Any is looked into: the path applies to the packed message. An Any
/// that packs an Any is not: unpacking consumes no path segment, so crafted nesting would
/// otherwise recurse as deep as the payload is long.
fn lookup(schema: &Schema, msg: &DynamicMessage, path: &str) -> Option<(Kind, Value)> {
    if any::is_any(&msg.descriptor()) {
        let unpacked = any::unpack(schema, msg)?.ok()?;
        if any::is_any(&unpacked.descriptor()) {
            return None;
        }
        return lookup(schema, &unpacked, path);
    }
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let field = msg.descriptor().get_field_by_name(head)?;
    let Some(rest) = rest else {
        return Some((field.kind(), msg.get_field(&field).into_owned()));
    };
    if !msg.has_field(&field) {
        return None;
    }
    match msg.get_field(&field).as_ref() {
        Value::Message(inner) => lookup(schema, inner, rest),
        _ => None,
    }
}
