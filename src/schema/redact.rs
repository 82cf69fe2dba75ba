//! Redaction: what never leaves the node. Always on, for attributes and rendered payloads.
//! Rule it keeps: judge by field name and message type, never by value; redact strings and
//! bytes, keep structure, numbers and enums. `key` alone is not a secret (snapshot keys, env
//! names, map keys), so the name test is by word, not by `key`.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "***";

/// Lowercase fragments that make a field or JSON key name secret wherever they appear in it.
pub const SECRET_NAME_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "auth",
    "private_key",
    "privatekey",
];

/// Fields of a secret message (one whose type name is secret, like CRI's `AuthConfig`) that
/// are shown anyway: they locate, not authenticate.
pub const SHOWN_IN_SECRET_MESSAGES: &[&str] = &["server_address", "expire_at"];

/// Field or key names whose list holds environment entries (`KEY=value` strings, or
/// `KeyValue`s whose `value` is redacted).
pub const ENV_NAMES: &[&str] = &["env", "envs"];

/// Whether a field, JSON key or message name looks secret (case-insensitive).
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|p| lower.contains(p))
}

/// Whether any segment of a dotted field path looks secret.
pub fn path_is_sensitive(path: &str) -> bool {
    path.split('.').any(is_secret_name)
}

/// Whether a name holds environment entries.
pub fn is_env_name(name: &str) -> bool {
    ENV_NAMES.iter().any(|e| name.eq_ignore_ascii_case(e))
}

/// `KEY=value` → `KEY=***`; an entry without `=` is redacted whole.
pub fn redact_env_entry(entry: &str) -> String {
    match entry.split_once('=') {
        Some((name, _)) => format!("{name}={REDACTED}"),
        None => REDACTED.to_owned(),
    }
}

/// How a value is treated while rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctx {
    /// Shown as it is (its fields are judged one by one).
    Plain,
    /// Strings and bytes inside are redacted, at any depth.
    Secret,
    /// An environment list: strings are `KEY=***`, a message's `value` field is redacted.
    Env,
}

/// The context of field `field` of a message rendered in context `parent`.
pub fn field_ctx(parent: Ctx, field: &FieldDescriptor) -> Ctx {
    let name = field.name();
    match parent {
        Ctx::Secret if SHOWN_IN_SECRET_MESSAGES.contains(&name) => Ctx::Plain,
        Ctx::Secret => Ctx::Secret,
        Ctx::Env if name == "value" => Ctx::Secret,
        _ if is_secret_name(name) => Ctx::Secret,
        _ if is_env_name(name) => Ctx::Env,
        _ => match field.kind() {
            Kind::Message(m) if is_secret_message(&m) => Ctx::Secret,
            _ => Ctx::Plain,
        },
    }
}

/// A message type whose every field is secret unless listed in [`SHOWN_IN_SECRET_MESSAGES`]:
/// its own name looks secret (`runtime.v1.AuthConfig`, `containerd.types.transfer.AuthResponse`).
pub fn is_secret_message(desc: &MessageDescriptor) -> bool {
    is_secret_name(desc.name())
}

/// Redacts a JSON document in place (OCI specs inside containerd's Any values): values under
/// secret-looking keys, and the values of `env` entries (`process.env`: `KEY=***`).
pub fn redact_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key) {
                    redact_json_all(v);
                } else if is_env_name(key) {
                    redact_json_env(v);
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// Every string below `value` becomes [`REDACTED`]; numbers and booleans stay.
fn redact_json_all(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = REDACTED.to_owned(),
        Value::Array(items) => items.iter_mut().for_each(redact_json_all),
        Value::Object(map) => map.values_mut().for_each(redact_json_all),
        _ => {}
    }
}

/// An `env` value: a list of `KEY=value` strings, or of `{name, value}` objects.
fn redact_json_env(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = redact_env_entry(s),
        Value::Array(items) => items.iter_mut().for_each(redact_json_env),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.eq_ignore_ascii_case("value") || is_secret_name(key) {
                    redact_json_all(v);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for secret in [
            "password",
            "identity_token",
            "registry_token",
            "auth",
            "Authorization",
            "client_secret",
            "private_key",
            "credentials",
        ] {
            assert!(is_secret_name(secret), "{secret}");
        }
        for plain in [
            "key",
            "snapshot_key",
            "username",
            "server_address",
            "name",
            "image",
            "digest",
        ] {
            assert!(!is_secret_name(plain), "{plain}");
        }
    }

    #[test]
    fn env_entries() {
        assert_eq!(redact_env_entry("DB_PASSWORD=not-a-real-secret"), "DB_PASSWORD=***");
        assert_eq!(redact_env_entry("PATH=/bin:/usr/bin"), "PATH=***");
        assert_eq!(redact_env_entry("NOEQUALS"), "***");
        assert_eq!(redact_env_entry("EMPTY="), "EMPTY=***");
    }

    #[test]
    fn json_spec() {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/echo", "hi"], "env": ["PATH=/bin", "DB_PASSWORD=not-a-real-secret"], "cwd": "/"},
            "annotations": {"io.kubernetes.token": "abc", "plain": "shown"},
            "hooks": {"prestart": [{"path": "/x", "env": ["A=b"]}]}
        });
        redact_json(&mut v);
        let s = v.to_string();
        assert!(!s.contains("not-a-real-secret"), "{s}");
        assert!(s.contains("DB_PASSWORD=***"), "{s}");
        assert!(s.contains("PATH=***"), "{s}");
        assert!(!s.contains("\"abc\""), "{s}");
        assert!(s.contains("shown"), "{s}");
        assert!(s.contains("A=***"), "{s}");
        assert!(s.contains("/bin/echo"), "{s}");
    }
}
