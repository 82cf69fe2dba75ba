//! `google.protobuf.Any` as containerd sends it: type URLs often without a `/`
//! (`containerd.runc.v1.Options`), and OCI runtime specs as JSON bytes
//! (`types.containerd.io/opencontainers/runtime-spec/1/Spec`). prost-reflect's own Any handling
//! expects `type.googleapis.com/...`, so runtime-tap resolves Any values itself.
//! Rule it keeps: an Any that cannot be resolved renders as its URL and size, never its bytes.

use bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use serde_json::{Map, Value as Json};

use super::Schema;
use super::redact::{self, Ctx};
use super::render;

/// Full name of the Any type.
pub const ANY: &str = "google.protobuf.Any";

/// URL prefix of the JSON-encoded OCI runtime-spec types containerd packs in Any
/// (`.../1/Spec` in Containers/Create, `.../1/Process` in Tasks/Exec).
pub const OCI_JSON_URL_PREFIX: &str = "types.containerd.io/opencontainers/runtime-spec/";

/// Whether `desc` is `google.protobuf.Any`.
pub fn is_any(desc: &MessageDescriptor) -> bool {
    desc.full_name() == ANY
}

/// The message type name a type URL names: the text after the last `/`, or the whole URL.
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// The `type_url` and `value` of a decoded Any message.
pub fn parts(any: &DynamicMessage) -> (String, Bytes) {
    let url = match any.get_field_by_name("type_url").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let value = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Bytes::new(),
    };
    (url, value)
}

/// The packed message, decoded with the pool: `None` if the pool does not know the type,
/// `Some(Err)` if the bytes do not decode as it.
pub fn unpack(schema: &Schema, any: &DynamicMessage) -> Option<Result<DynamicMessage, prost::DecodeError>> {
    let (url, value) = parts(any);
    let desc = schema.message(type_name(&url))?;
    Some(DynamicMessage::decode(desc, value))
}

/// JSON for an Any value: `{"@type": url, ...fields}` for a type the pool knows (a value
/// whose JSON is not an object goes under `"value"`), `{"@type": url, "value": {...}}` for an
/// OCI spec (parsed and redacted), else `{"@type": url, "size": n}`.
pub(crate) fn to_json(schema: &Schema, any: &DynamicMessage, ctx: Ctx, depth: usize) -> Json {
    let (url, value) = parts(any);
    let mut obj = Map::new();
    obj.insert("@type".to_owned(), Json::String(url.clone()));
    let size = || Json::from(value.len());
    if url.starts_with(OCI_JSON_URL_PREFIX) {
        match serde_json::from_slice::<Json>(&value) {
            Ok(mut json) => {
                redact::redact_json(&mut json);
                if ctx == Ctx::Secret {
                    json = Json::String(redact::REDACTED.to_owned());
                }
                obj.insert("value".to_owned(), json);
            }
            Err(_) => {
                obj.insert("size".to_owned(), size());
            }
        }
        return Json::Object(obj);
    }
    match schema
        .message(type_name(&url))
        .map(|desc| DynamicMessage::decode(desc, value.clone()))
    {
        Some(Ok(inner)) => match render::message_to_json(schema, &inner, ctx, depth + 1) {
            Json::Object(fields) => obj.extend(fields),
            other => {
                obj.insert("value".to_owned(), other);
            }
        },
        _ => {
            obj.insert("size".to_owned(), size());
        }
    }
    Json::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(type_name("containerd.runc.v1.Options"), "containerd.runc.v1.Options");
        assert_eq!(type_name("type.googleapis.com/google.rpc.Status"), "google.rpc.Status");
        assert_eq!(
            type_name("types.containerd.io/opencontainers/runtime-spec/1/Spec"),
            "Spec"
        );
        assert_eq!(type_name(""), "");
    }
}
