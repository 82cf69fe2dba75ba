//! Redaction: what never leaves the node. Always on, for attributes and rendered payloads.
//! Rule it keeps: judge by field name and message type, never by value; redact strings and
//! bytes, keep structure, numbers and enums. `key` alone is not a secret (snapshot keys, env
//! names, map keys), so the name test is by word, not by `key`.
//!
//! The built-in rules are constants and always apply. A config's `[redact]` section
//! ([`AddedRules`]) can only add to them: it is installed once at start
//! ([`install`]) and every test below consults built-ins first, then the additions.

use std::sync::OnceLock;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::{Deserialize, Serialize};

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

/// Header names whose values are never recorded. Header values only reach spans through a
/// short allowlist (`User-Agent`, `grpc-message`, `containerd-namespace`, `traceparent`);
/// these are listed so that the rule is stated, and a header named like a secret is covered
/// by [`SECRET_NAME_PARTS`] as well.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-registry-auth",
    "x-registry-config",
    "cookie",
    "set-cookie",
];

/// What `check-config` prints after the effective config: the built-in rules apply whatever
/// `[redact]` says (a TOML comment, so the output still parses).
pub const BUILTIN_NOTE: &str = "# [redact] only adds rules: the built-in ones always apply and cannot be turned off \
(field and key names containing password, passwd, secret, token, credential, auth, private_key, privatekey; \
messages named like them, such as AuthConfig; env and envs lists; the Authorization, Proxy-Authorization, \
X-Registry-Auth, X-Registry-Config, Cookie and Set-Cookie headers; Docker query parameters buildargs, changes, \
registryconfig, secrets and URLs with credentials).";

/// Redaction rules a config adds to the built-in ones (`[redact]`). Nothing here can turn a
/// built-in rule off.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddedRules {
    /// Header names (case-insensitive) whose values are never recorded, such as
    /// `"x-api-key"`: a header on the allowlist (`user-agent`, `grpc-message`) named here
    /// is shown as `***`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Fields whose values are redacted like a password: a protobuf field's full name
    /// (`runtime.v1.ContainerMetadata.name`, with a dot), or a plain name matched exactly,
    /// case-insensitively, against protobuf field names, JSON keys and Docker query
    /// parameters (`"ssn"`, `"Labels"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Field or JSON key names (exact, case-insensitive) that hold environment lists, beside
    /// the built-in `env` and `envs`: their entries render as `NAME=***`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_fields: Vec<String>,
}

impl AddedRules {
    /// Check the entries once, at load.
    pub fn validate(&self) -> Result<(), String> {
        for (key, list) in [
            ("headers", &self.headers),
            ("fields", &self.fields),
            ("env_fields", &self.env_fields),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|e| e.is_empty() || e.chars().any(|c| c.is_whitespace() || c == '='))
            {
                return Err(format!("{key}: {bad:?}: expected a name without spaces or '='"));
            }
        }
        Ok(())
    }

    /// Whether a plain field or key name is one of the added secret fields.
    pub fn is_secret_name(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| !f.contains('.') && f.eq_ignore_ascii_case(name))
    }

    /// Whether a protobuf field, by full name (`pkg.Message.field`), is an added secret field.
    pub fn is_secret_full_name(&self, full_name: &str) -> bool {
        self.fields.iter().any(|f| f.contains('.') && f == full_name)
    }

    /// Whether a name is an added environment list.
    pub fn is_env_name(&self, name: &str) -> bool {
        self.env_fields.iter().any(|e| e.eq_ignore_ascii_case(name))
    }

    /// Whether a header is an added secret header.
    pub fn is_secret_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

static ADDED: OnceLock<AddedRules> = OnceLock::new();

/// Install the config's added rules for the whole process, once, before any traffic is
/// decoded. A second call keeps the first rules and says so.
pub fn install(rules: AddedRules) -> Result<(), AddedRules> {
    ADDED.set(rules)
}

/// The added rules in force (none until [`install`]).
pub fn added() -> &'static AddedRules {
    static NONE: AddedRules = AddedRules {
        headers: Vec::new(),
        fields: Vec::new(),
        env_fields: Vec::new(),
    };
    ADDED.get().unwrap_or(&NONE)
}

/// Whether the built-in rules make a name secret (case-insensitive fragments).
pub fn is_builtin_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|p| lower.contains(p))
}

/// Whether a field, JSON key or message name looks secret (case-insensitive): a built-in
/// fragment, or an added field name.
pub fn is_secret_name(name: &str) -> bool {
    is_builtin_secret_name(name) || added().is_secret_name(name)
}

/// Whether a header's value must never be recorded.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
        || is_builtin_secret_name(name)
        || added().is_secret_header(name)
}

/// Whether any segment of a dotted field path looks secret.
pub fn path_is_sensitive(path: &str) -> bool {
    path.split('.').any(is_secret_name)
}

/// Whether a name holds environment entries.
pub fn is_env_name(name: &str) -> bool {
    ENV_NAMES.iter().any(|e| name.eq_ignore_ascii_case(e)) || added().is_env_name(name)
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
        _ if is_secret_name(name) || added().is_secret_full_name(field.full_name()) => Ctx::Secret,
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
    fn added_rules_match_as_documented() {
        let added = AddedRules {
            headers: vec!["X-Api-Key".into()],
            fields: vec!["ssn".into(), "runtime.v1.ContainerMetadata.name".into()],
            env_fields: vec!["environment".into()],
        };
        assert!(added.validate().is_ok());
        assert!(added.is_secret_name("SSN"));
        assert!(!added.is_secret_name("ssn_hint"), "plain names match exactly");
        assert!(!added.is_secret_name("name"), "a dotted entry is not a plain name");
        assert!(added.is_secret_full_name("runtime.v1.ContainerMetadata.name"));
        assert!(!added.is_secret_full_name("runtime.v1.PodSandboxMetadata.name"));
        assert!(added.is_env_name("Environment"));
        assert!(added.is_secret_header("x-api-key"));
        let bad = AddedRules {
            fields: vec!["a b".into()],
            ..AddedRules::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("fields: \"a b\""));
    }

    #[test]
    fn builtin_headers_are_secret_whatever_is_added() {
        for h in [
            "Authorization",
            "X-Registry-Auth",
            "x-registry-config",
            "Cookie",
            "X-Auth-Token",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        assert!(!is_secret_header("user-agent"));
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
