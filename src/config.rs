//! Configuration: the TOML file, the one-intercept command-line shorthand, and validation.
//! Everything is checked once here, at load; the rest of the crate trusts what it gets.
//! This is the only module that reads the process environment.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Socket addresses are connection facts; the config names them as `config::Endpoint` too.
pub use crate::conn::{Endpoint, canonical_path};

/// Default admin endpoint: loopback only, so metrics never leave the node unless asked.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
/// Default time open connections get to finish after SIGTERM before they are cut.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default relay buffer per direction. Measured: 64 KiB reads keep bulk transfers near the
/// socket's own limit while an idle connection costs nothing (buffers are allocated on demand).
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
/// Default depth of a connection's tap queue, in chunks. Past it the connection's decoding is
/// given up (counted) while its bytes keep flowing.
pub const DEFAULT_TAP_QUEUE: usize = 4096;
/// Default bound on the bytes a connection's tap queue holds for its observer.
pub const DEFAULT_TAP_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default time a connect to the upstream may take. A daemon's local socket answers in
/// microseconds; a TCP upstream whose host drops SYNs would otherwise hold the client for
/// the kernel's SYN retries (minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default process-wide decode memory budget (`relay.decode_memory_limit`): 256 MiB.
pub const DEFAULT_DECODE_MEMORY_LIMIT: usize = 256 * 1024 * 1024;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sockets to intercept; several run in one process.
    #[serde(default, rename = "intercept")]
    pub intercepts: Vec<Intercept>,
    /// The admin endpoint (health and metrics).
    #[serde(default)]
    pub admin: Admin,
    /// Relay tuning shared by all intercepts.
    #[serde(default)]
    pub relay: Relay,
    /// Where spans go. `OTEL_EXPORTER_OTLP_*` environment variables override it.
    #[serde(default)]
    pub export: Export,
    /// Which traces are exported: polls are thinned, errors and slow calls always kept.
    #[serde(default)]
    pub sampling: crate::trace::sample::SamplingConfig,
    /// How calls are tied together; today what a client's W3C `traceparent` counts for.
    #[serde(default)]
    pub correlation: crate::trace::remote::CorrelationConfig,
    /// Extra protobuf descriptor sets (`FileDescriptorSet`, binary) for other gRPC services,
    /// such as plugins; the built-in CRI and containerd definitions are always loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptor_sets: Vec<PathBuf>,
    /// Redaction rules added to the built-in ones (which cannot be turned off).
    #[serde(default)]
    pub redact: crate::schema::redact::AddedRules,
}

/// Span export. With no OTLP endpoint (here or in the environment) and no file, spans are
/// printed to the console so the tool is useful with no backend.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// OTLP endpoint, e.g. `http://127.0.0.1:4317` (grpc) or `http://127.0.0.1:4318`
    /// (http/protobuf). Overridden by `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`. Overridden by `OTEL_EXPORTER_OTLP_PROTOCOL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Extra headers sent to the collector (an API key, say).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Also write spans to this file, one OTLP/JSON `ExportTraceServiceRequest` per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Print each finished trace as a waterfall on stderr: default on when there is no
    /// endpoint and no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<bool>,
    /// On the console, fold calls that belong to no trace into one summary line per 10 s
    /// (method × count, slowest); default on. Errors and traces of more than one span are always
    /// shown whole. `false` shows every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_fold: Option<bool>,
}

/// One intercepted socket: clients connect to `listen`, bytes go on to `upstream`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Intercept {
    /// Becomes `service.name` of this intercept's spans, and names a socket-activated listener.
    pub name: String,
    /// Where clients connect: `unix:///path` or `tcp://host:port`.
    pub listen: Endpoint,
    /// The daemon's socket: `unix:///path` or `tcp://host:port`.
    pub upstream: Endpoint,
    /// Octal mode of the listening socket (`"0660"`); default: the upstream socket's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<String>,
    /// Owner of the listening socket (name or uid); default: the upstream socket's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<String>,
    /// Group of the listening socket (name or gid); default: the upstream socket's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Decode a copy of the traffic (default on). Off: a plain byte relay that only counts.
    #[serde(default = "default_true")]
    pub decode: bool,
    /// Attach the decoded request and response payloads (redacted, size-capped) to spans as
    /// events. Off by default: payloads can be large and are for debugging.
    #[serde(default)]
    pub capture_payloads: bool,
    /// Trace context propagation (off by default): each forwarded request without a W3C
    /// `traceparent` gets one naming runtime-tap's span for it, so daemons with their own
    /// tracing continue the same trace. The one mode that changes bytes: one header line per
    /// HTTP/1 request head, one literal header field per HTTP/2 request header block (README,
    /// "Propagation"). Needs `decode` (the span it names is the decoded call's).
    #[serde(default)]
    pub propagate_context: bool,
    /// Raw capture (off by default): write every connection's bytes to pcapng files in this
    /// directory, `<name>-<n>.pcapng`, with synthesized TCP/IPv4 framing for Wireshark.
    /// Not redacted: for debugging on trusted machines; files are created 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_dir: Option<PathBuf>,
    /// A capture file is closed and the next one started past this size (bytes).
    #[serde(default = "default_capture_max_bytes")]
    pub capture_max_bytes: u64,
    /// Capture files kept per intercept; the oldest is deleted when a new one starts.
    #[serde(default = "default_capture_files")]
    pub capture_files: usize,
    /// Flight recorder (off by default): keep this many of the intercept's most recent raw
    /// bytes in memory (`"16MiB"`; from 64KiB to 1GiB), and write a connection's share of
    /// them as a pcapng when one of its calls fails or is slower than `sampling.slow_ms`.
    /// Needs `decode` (a dump is decided where a decoded call ends). Not redacted, like
    /// `capture_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_recorder: Option<String>,
    /// Where the flight recorder writes (created 0700 when missing); `capture_dir` when that
    /// is set, else this, else [`crate::capture::flight::DEFAULT_DIR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_recorder_dir: Option<PathBuf>,
    /// Flight recorder files kept per intercept; the oldest is deleted past it.
    #[serde(default = "default_flight_recorder_files")]
    pub flight_recorder_files: usize,
    /// At most this many flight recorder dumps per minute per intercept; the rest are
    /// counted in `runtime_tap_flight_recorder_dumps_skipped_total{reason="rate_limited"}`.
    #[serde(default = "default_flight_recorder_per_minute")]
    pub flight_recorder_per_minute: u32,
    /// At most this many open client connections (off by default: refusing kubelet is worse
    /// than not tracing it). Beyond it a new connection is accepted and closed at once,
    /// counted in `runtime_tap_connections_refused_total` and logged at a bounded rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

impl Intercept {
    /// An intercept with the defaults for everything but its name and addresses.
    pub fn new(name: impl Into<String>, listen: Endpoint, upstream: Endpoint) -> Intercept {
        Intercept {
            name: name.into(),
            listen,
            upstream,
            socket_mode: None,
            socket_owner: None,
            socket_group: None,
            decode: true,
            capture_payloads: false,
            propagate_context: false,
            capture_dir: None,
            capture_max_bytes: crate::capture::DEFAULT_MAX_BYTES,
            capture_files: crate::capture::DEFAULT_FILES,
            flight_recorder: None,
            flight_recorder_dir: None,
            flight_recorder_files: crate::capture::flight::DEFAULT_FILES,
            flight_recorder_per_minute: crate::capture::flight::DEFAULT_PER_MINUTE,
            max_connections: None,
        }
    }

    /// The flight recorder's ring size in bytes, when it is on (validated at load).
    pub fn flight_recorder_bytes(&self) -> Option<usize> {
        self.flight_recorder.as_deref().and_then(|s| parse_size(s).ok())
    }

    /// Where the flight recorder's dumps go: the capture directory's rules apply to both.
    pub fn flight_recorder_dir(&self) -> PathBuf {
        self.capture_dir
            .clone()
            .or_else(|| self.flight_recorder_dir.clone())
            .unwrap_or_else(|| PathBuf::from(crate::capture::flight::DEFAULT_DIR))
    }
}

/// A refused intercept setting: the field (under `intercept[i].`) and why.
type Refusal = (&'static str, String);

impl Intercept {
    /// A name usable as `service.name` and as a socket-activation name.
    fn check_name(&self) -> Result<(), Refusal> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(("name", format!("{:?}: use letters, digits, '-', '_' or '.'", self.name)));
        }
        Ok(())
    }

    /// Listen differs from upstream and from every earlier intercept's listen (`listens`:
    /// canonical and as written), compared as the kernel resolves them: a symlinked directory
    /// or a `..` must not hide that two paths name one socket (the proxy would remove the
    /// daemon's socket as stale, or connect to itself).
    fn check_addresses(&self, listens: &mut Vec<(Endpoint, Endpoint)>) -> Result<(), Refusal> {
        let (listen, upstream) = (self.listen.canonical(), self.upstream.canonical());
        let same = |a: &Endpoint, b: &Endpoint| {
            if a == b {
                String::new()
            } else {
                format!(" ({a} and {b} are both {})", a.canonical())
            }
        };
        if listen == upstream {
            return Err((
                "listen",
                format!(
                    "{} is also the upstream{}: the proxy would connect to itself",
                    self.listen,
                    same(&self.listen, &self.upstream)
                ),
            ));
        }
        if let Some((_, other)) = listens.iter().find(|(l, _)| *l == listen) {
            return Err((
                "listen",
                format!(
                    "{} is the listen address of another intercept{}",
                    self.listen,
                    same(&self.listen, other)
                ),
            ));
        }
        listens.push((listen, self.listen.clone()));
        Ok(())
    }

    /// Mode, owner and group of the listening socket: well-formed, names that exist on this
    /// machine (looked up now, so check-config catches a typo), and only for a unix socket.
    fn check_socket_access(&self) -> Result<(), Refusal> {
        if let Some(mode) = &self.socket_mode {
            parse_mode(mode).map_err(|m| ("socket_mode", m))?;
        }
        if let Some(owner) = &self.socket_owner {
            access::resolve_user(owner).map_err(|e| ("socket_owner", e.to_string()))?;
        }
        if let Some(group) = &self.socket_group {
            access::resolve_group(group).map_err(|e| ("socket_group", e.to_string()))?;
        }
        Ok(())
    }

    /// The other per-intercept settings, each within its bounds.
    fn check_settings(&self) -> Result<(), Refusal> {
        if self.propagate_context && !self.decode {
            return Err((
                "propagate_context",
                "needs decode = true: the traceparent names the span of the decoded call".into(),
            ));
        }
        if self.capture_max_bytes < 64 * 1024 {
            return Err(("capture_max_bytes", "must be at least 65536".into()));
        }
        if self.max_connections == Some(0) {
            return Err((
                "max_connections",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        if self.capture_files == 0 {
            return Err(("capture_files", "must be at least 1".into()));
        }
        self.check_flight_recorder()?;
        if matches!(self.listen, Endpoint::Tcp(_)) {
            let unix_only = [
                ("socket_mode", &self.socket_mode),
                ("socket_owner", &self.socket_owner),
                ("socket_group", &self.socket_group),
            ];
            for (field, value) in unix_only {
                if value.is_some() {
                    return Err((field, "only applies to a unix listen socket".into()));
                }
            }
        }
        Ok(())
    }
}

impl Intercept {
    fn check_flight_recorder(&self) -> Result<(), Refusal> {
        use crate::capture::flight::{MAX_BYTES, MIN_BYTES};
        let Some(size) = &self.flight_recorder else {
            return Ok(());
        };
        let bytes = parse_size(size).map_err(|e| ("flight_recorder", e))?;
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
            return Err(("flight_recorder", format!("{size:?}: must be from 64KiB to 1GiB")));
        }
        if !self.decode {
            return Err((
                "flight_recorder",
                "needs decode = true: a dump is decided where a decoded call ends".into(),
            ));
        }
        if self.flight_recorder_files == 0 {
            return Err(("flight_recorder_files", "must be at least 1".into()));
        }
        if self.flight_recorder_per_minute == 0 {
            return Err((
                "flight_recorder_per_minute",
                "must be at least 1 (leave flight_recorder out to turn it off)".into(),
            ));
        }
        Ok(())
    }
}

/// The admin endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port` to serve /healthz, /readyz and /metrics on; `"off"` disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: DEFAULT_ADMIN_LISTEN.to_string(),
        }
    }
}

/// Relay tuning.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Read buffer per direction, in bytes. On a connection nothing decodes (opaque), a
    /// direction whose reads keep filling it (bulk) doubles it, up to 256 KiB.
    #[serde(default = "default_buffer_size")]
    pub buffer_size: usize,
    /// Depth of each connection's tap queue, in chunks.
    #[serde(default = "default_tap_queue")]
    pub tap_queue: usize,
    /// Bytes each connection's tap queue may hold before its decoding is given up.
    #[serde(default = "default_tap_queue_bytes")]
    pub tap_queue_bytes: usize,
    /// Seconds open connections may run after SIGTERM before they are closed.
    #[serde(default = "default_grace_secs")]
    pub grace_period_secs: u64,
    /// Seconds a connect to the upstream may take before the client is closed (counted as
    /// an upstream connect failure). Connect only: a connected upstream may take its time.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Process-wide bound on buffered decode state (tap queues plus decoder buffers), such as
    /// `"256MiB"`: past 75% of it payloads are no longer decoded, at it a connection that
    /// needs more gives up decoding (counted); bytes are relayed either way.
    #[serde(default = "default_decode_memory_limit")]
    pub decode_memory_limit: String,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            buffer_size: DEFAULT_BUFFER_SIZE,
            tap_queue: DEFAULT_TAP_QUEUE,
            tap_queue_bytes: DEFAULT_TAP_QUEUE_BYTES,
            grace_period_secs: DEFAULT_GRACE_PERIOD.as_secs(),
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT.as_secs(),
            decode_memory_limit: default_decode_memory_limit(),
        }
    }
}

impl Relay {
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// `decode_memory_limit` in bytes (validated at load).
    pub fn decode_memory_limit_bytes(&self) -> usize {
        parse_size(&self.decode_memory_limit).unwrap_or(DEFAULT_DECODE_MEMORY_LIMIT)
    }
}

fn default_decode_memory_limit() -> String {
    "256MiB".to_string()
}

/// Parse a byte size: a plain number of bytes, or a number with `KiB`, `MiB` or `GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as \"256MiB\""))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?}: too large"))
}

fn default_true() -> bool {
    true
}
fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.to_string()
}
fn default_buffer_size() -> usize {
    DEFAULT_BUFFER_SIZE
}
fn default_tap_queue() -> usize {
    DEFAULT_TAP_QUEUE
}
fn default_tap_queue_bytes() -> usize {
    DEFAULT_TAP_QUEUE_BYTES
}
fn default_capture_max_bytes() -> u64 {
    crate::capture::DEFAULT_MAX_BYTES
}
fn default_flight_recorder_files() -> usize {
    crate::capture::flight::DEFAULT_FILES
}
fn default_flight_recorder_per_minute() -> u32 {
    crate::capture::flight::DEFAULT_PER_MINUTE
}
fn default_capture_files() -> usize {
    crate::capture::DEFAULT_FILES
}
fn default_grace_secs() -> u64 {
    DEFAULT_GRACE_PERIOD.as_secs()
}
fn default_connect_timeout_secs() -> u64 {
    DEFAULT_CONNECT_TIMEOUT.as_secs()
}

/// Why a configuration was refused. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file, or a file it names, could be changed by users other than its owner.
    #[error("{0}")]
    Permissions(#[from] permissions::PermissionError),
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Read, parse and validate a config file. The file, and each descriptor set it lists,
    /// must not be writable by others (see [`permissions`]).
    ///
    /// # Errors
    /// When the file cannot be read, is writable by others, is not valid TOML of this schema,
    /// or fails validation; the error names the file and the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        permissions::check(path).map_err(read_error)??;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text, &path.display().to_string())?;
        for set in &config.descriptor_sets {
            match permissions::check(set) {
                Ok(verdict) => verdict?,
                // A missing set is reported when it is loaded, with its read error.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: set.clone(),
                        source,
                    });
                }
            }
        }
        Ok(config)
    }

    /// Parse and validate config text; `origin` names it in errors (a file path).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from(origin),
            message: describe_toml_error(&e),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Check what serde cannot: unique names and listen addresses, listen != upstream (unix
    /// paths compared canonically, see [`canonical_path`]), well-formed modes and addresses,
    /// socket owner and group names that exist on this machine.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        if self.intercepts.is_empty() {
            return Err(invalid(
                "intercept".into(),
                "at least one [[intercept]] is needed".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut listens: Vec<(Endpoint, Endpoint)> = Vec::new();
        for (i, ic) in self.intercepts.iter().enumerate() {
            let key = |field: &str| format!("intercept[{i}].{field}");
            let fail = |(field, message): (&str, String)| invalid(key(field), message);
            ic.check_name().map_err(fail)?;
            if !names.insert(ic.name.clone()) {
                return Err(invalid(key("name"), format!("{:?} is used by two intercepts", ic.name)));
            }
            ic.check_addresses(&mut listens).map_err(fail)?;
            ic.check_socket_access().map_err(fail)?;
            ic.check_settings().map_err(fail)?;
        }
        self.check_process_settings()
            .map_err(|(key, message)| invalid(key.into(), message))
    }

    /// The settings shared by all intercepts (admin, relay, sampling, redaction).
    fn check_process_settings(&self) -> Result<(), (&'static str, String)> {
        if self.admin.listen != "off" && self.admin.listen.parse::<SocketAddr>().is_err() {
            return Err((
                "admin.listen",
                format!(
                    "{:?}: expected host:port with an IP address, or \"off\"",
                    self.admin.listen
                ),
            ));
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.relay.buffer_size) {
            return Err(("relay.buffer_size", "must be between 4096 and 16777216".into()));
        }
        self.sampling.validate().map_err(|m| ("sampling", m))?;
        match parse_size(&self.relay.decode_memory_limit) {
            Ok(n) if n < 64 * 1024 => {
                return Err(("relay.decode_memory_limit", "must be at least 64KiB".into()));
            }
            Ok(_) => {}
            Err(m) => return Err(("relay.decode_memory_limit", m)),
        }
        self.redact.validate().map_err(|m| ("redact", m))?;
        if self.relay.tap_queue == 0 {
            return Err(("relay.tap_queue", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The effective configuration, defaults filled in, as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Parse an octal file mode such as `"0660"`; only permission bits are accepted.
pub fn parse_mode(mode: &str) -> Result<u32, String> {
    let bits = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{mode:?}: expected an octal mode such as \"0660\""))?;
    if bits > 0o777 {
        return Err(format!("{mode:?}: only permission bits (at most 0777) are allowed"));
    }
    Ok(bits)
}

fn describe_toml_error(e: &toml::de::Error) -> String {
    // toml's message already names the key and shows the line; keep it on one line per part.
    e.to_string().trim_end().replace("\n\n", "\n")
}

impl Export {
    /// The exporter's settings: this section, then the standard `OTEL_*` variables over it.
    ///
    /// # Errors
    /// When a value (here or in the environment) is malformed.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::trace::export::ExportConfig, crate::trace::export::ExportError> {
        use crate::trace::export::{ExportConfig, ExportError, Protocol};
        let mut base = ExportConfig {
            endpoint: self.endpoint.clone(),
            file: self.file.clone(),
            ..ExportConfig::default()
        };
        if let Some(p) = &self.protocol {
            base.protocol = Protocol::parse(p).ok_or_else(|| {
                ExportError::Config(format!("export.protocol: {p:?}: expected grpc or http/protobuf"))
            })?;
        }
        base.headers = self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut cfg = ExportConfig::from_env_and(base, env)?;
        cfg.console = self.console.unwrap_or(cfg.otlp_url().is_none() && cfg.file.is_none());
        cfg.console_fold = self.console_fold.unwrap_or(true);
        Ok(cfg)
    }
}

/// The environment variables runtime-tap reads (only this module reads the environment).
pub mod env {
    /// One variable of the process environment.
    pub fn var(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    /// `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` from a service manager, if any.
    pub fn socket_activation() -> Option<(u32, usize, Option<String>)> {
        let pid = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
        let fds = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
        let names = std::env::var("LISTEN_FDNAMES").ok();
        Some((pid, fds, names))
    }
}

pub mod access;
pub mod permissions;

#[cfg(test)]
mod tests;
