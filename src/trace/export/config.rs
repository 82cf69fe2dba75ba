//! Settings of the span export pipeline and the standard `OTEL_*` variables that change them.
//! Reads no process environment: the caller (the crate's `config.rs`) hands the variables in.

use std::path::PathBuf;
use std::time::Duration;

use super::ExportError;

/// Spans the queue holds before new ones are dropped (`queue_full`). The SDK's default is 2048
/// (`OTEL_BSP_MAX_QUEUE_SIZE`); runtime-tap must absorb bursts of 10,000 spans/s for a few
/// seconds of collector trouble, so it keeps more. A queued span costs about 1.5 KiB (a full
/// queue of unary-call spans added ~100 MiB of RSS in the benchmark's `--collector` runs):
/// lower `max_queue` where that matters more than riding out a longer outage.
pub const DEFAULT_MAX_QUEUE: usize = 65_536;
/// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for company (`OTEL_BSP_SCHEDULED_DELAY`). Shorter
/// than the SDK's 5 s so spans show up while the operator is still looking.
pub const DEFAULT_SCHEDULED_DELAY: Duration = Duration::from_millis(200);
/// Longest one export request may take, retries included (`OTEL_BSP_EXPORT_TIMEOUT`).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`), default port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), default port 4318, path `/v1/traces`.
    HttpProtobuf,
}

impl Protocol {
    /// Parses the value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(value: &str) -> Option<Protocol> {
        match value.trim() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            _ => None,
        }
    }
}

/// Where and how spans are exported. At least one of OTLP (`endpoint` or `traces_endpoint`),
/// `file` and `console` must be set.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportConfig {
    /// OTLP base endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. `http://127.0.0.1:4317`. For
    /// http/protobuf `/v1/traces` is appended. `None` (and no `traces_endpoint`): no OTLP.
    pub endpoint: Option<String>,
    /// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: Protocol,
    /// Extra request headers / gRPC metadata (`OTEL_EXPORTER_OTLP_HEADERS`), e.g. an API key.
    pub headers: Vec<(String, String)>,
    /// Full traces URL, used as is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); wins over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// Extra resource attributes of every service (`OTEL_RESOURCE_ATTRIBUTES`). `service.name`
    /// and `host.name` are runtime-tap's own and win over these.
    pub resource_attributes: Vec<(String, String)>,
    /// Span file: JSON lines, one OTLP/JSON `ExportTraceServiceRequest` each.
    pub file: Option<PathBuf>,
    /// Each finished trace as a waterfall on stderr (colour on a terminal).
    pub console: bool,
    /// On the console, fold calls that belong to no trace into one summary line per period
    /// (errors and traces of more than one span are always shown whole).
    pub console_fold: bool,
    /// Queue capacity in spans (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch: usize,
    /// Longest wait to fill a batch (`OTEL_BSP_SCHEDULED_DELAY`, milliseconds).
    pub scheduled_delay: Duration,
    /// Longest time one export may take (`OTEL_BSP_EXPORT_TIMEOUT`, milliseconds).
    pub export_timeout: Duration,
}

impl Default for ExportConfig {
    fn default() -> ExportConfig {
        ExportConfig {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: Vec::new(),
            traces_endpoint: None,
            resource_attributes: Vec::new(),
            file: None,
            console: false,
            console_fold: true,
            max_queue: DEFAULT_MAX_QUEUE,
            max_batch: DEFAULT_MAX_BATCH,
            scheduled_delay: DEFAULT_SCHEDULED_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

impl ExportConfig {
    /// `base` with the standard OpenTelemetry variables applied on top: each one that `env`
    /// returns non-empty overrides the matching field. The traces-specific variables
    /// (`OTEL_EXPORTER_OTLP_TRACES_*`) win over the general ones. Durations are milliseconds.
    ///
    /// The crate's `config.rs` passes `&|k| std::env::var(k).ok()`; tests pass a map.
    ///
    /// # Errors
    ///
    /// [`ExportError::Env`] naming the variable when a value does not parse.
    pub fn from_env_and(base: ExportConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<ExportConfig, ExportError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let bad = |name: &str, reason: &str| ExportError::Env {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let mut cfg = base;

        if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            cfg.endpoint = Some(v.trim().to_owned());
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            cfg.traces_endpoint = Some(v.trim().to_owned());
        }
        for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            if let Some(v) = get(name) {
                cfg.protocol = Protocol::parse(&v).ok_or_else(|| bad(name, "expected grpc or http/protobuf"))?;
            }
        }
        for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(v) = get(name) {
                for (k, val) in parse_key_values(&v).map_err(|r| bad(name, r))? {
                    cfg.headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
                    cfg.headers.push((k, val));
                }
            }
        }
        if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
            let name = "OTEL_RESOURCE_ATTRIBUTES";
            for (k, val) in parse_key_values(&v).map_err(|r| bad(name, r))? {
                cfg.resource_attributes.retain(|(old, _)| *old != k);
                cfg.resource_attributes.push((k, val));
            }
        }
        let count = |name: &str| -> Result<Option<usize>, ExportError> {
            get(name)
                .map(|v| v.trim().parse::<usize>().map_err(|_| bad(name, "expected a count")))
                .transpose()
        };
        let millis = |name: &str| -> Result<Option<Duration>, ExportError> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| bad(name, "expected milliseconds"))
                })
                .transpose()
        };
        if let Some(n) = count("OTEL_BSP_MAX_QUEUE_SIZE")? {
            cfg.max_queue = n;
        }
        if let Some(n) = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            cfg.max_batch = n;
        }
        if let Some(d) = millis("OTEL_BSP_SCHEDULED_DELAY")? {
            cfg.scheduled_delay = d;
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_BSP_EXPORT_TIMEOUT",
        ] {
            if let Some(d) = millis(name)? {
                cfg.export_timeout = d;
            }
        }
        Ok(cfg)
    }

    /// The URL OTLP requests go to, `None` when OTLP is off.
    pub fn otlp_url(&self) -> Option<String> {
        if let Some(url) = &self.traces_endpoint {
            return Some(url.clone());
        }
        let base = self.endpoint.as_ref()?;
        Some(match self.protocol {
            Protocol::Grpc => base.clone(),
            Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        })
    }

    /// Checks the settings once, before the pipeline starts.
    ///
    /// # Errors
    ///
    /// [`ExportError::Config`] for a zero queue, batch or timeout, or when no sink is set.
    pub fn validate(&self) -> Result<(), ExportError> {
        let bad = |reason: &str| Err(ExportError::Config(reason.to_owned()));
        if self.max_queue == 0 {
            return bad("max_queue must be at least 1");
        }
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1");
        }
        if self.export_timeout.is_zero() {
            return bad("export_timeout must be above zero");
        }
        if self.otlp_url().is_none() && self.file.is_none() && !self.console {
            return bad("no span sink: set an OTLP endpoint, a span file or console");
        }
        Ok(())
    }
}

/// Parses the W3C-baggage-like `k=v,k2=v2` lists of `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES`; keys and values are trimmed and percent-decoded.
pub fn parse_key_values(input: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    for item in input.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or("expected key=value pairs separated by commas")?;
        let k = percent_decode(k.trim());
        if k.is_empty() {
            return Err("empty key");
        }
        out.push((k, percent_decode(v.trim())));
    }
    Ok(out)
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex_val(*h).zip(hex_val(*l)),
            _ => None,
        };
        match escape {
            Some((h, l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
