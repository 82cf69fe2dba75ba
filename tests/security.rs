//! Security properties of the real runtime-tap binary: config files writable by others are
//! refused; the recorded captures' fake credentials (and crafted Docker secrets, query strings
//! and header values) never reach the logs at trace level, the span file, /metrics or an OTLP
//! receiver; each built-in redaction rule holds on recorded traffic and added rules take
//! effect; the process-wide decode memory limit sheds and gives up while bytes stay exact; the
//! per-intercept connection limit refuses, counts and logs at a bounded rate; and runtime-tap
//! runs unprivileged, needing CAP_CHOWN only for socket ownership.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::otlp::OtlpReceiver;
use support::replay::{Recording, replay_exact};
use support::{Tap, TempDir, free_port};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    nix::unistd::chown(
        path,
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .unwrap();
}

/// (exit code, stdout, stderr) of `runtime-tap ARGS`.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin().args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Config files writable by others

const MINIMAL: &str = "[[intercept]]\nname = \"c\"\nlisten = \"unix:///tmp/rtap-sec-never.sock\"\nupstream = \"unix:///tmp/rtap-sec-never-up.sock\"\n";

#[test]
fn a_config_file_writable_by_others_is_refused_by_run_and_check_config() {
    let dir = TempDir::new("sec-perm");
    let file = dir.path("tap.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let f = file.to_str().unwrap();

    // World-writable: refused by both commands, naming the file, its mode and the fix.
    chmod(&file, 0o666);
    for args in [vec!["check-config", f], vec!["run", "--config", f]] {
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(f), "{err}");
        assert!(err.contains("mode 0666"), "{err}");
        assert!(err.contains(&format!("chmod o-w {f}")), "{err}");
    }

    // Group-writable by an ordinary group: refused; by root's group: accepted.
    chmod(&file, 0o660);
    chown(&file, None, Some(1234));
    let (code, _, err) = run(&["check-config", f]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("mode 0660 lets group 1234 write it"), "{err}");
    assert!(err.contains(&format!("chmod g-w {f}")), "{err}");
    chown(&file, None, Some(0));
    let (code, out, err) = run(&["check-config", f]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("cannot be turned off"),
        "check-config says built-in redaction stays: {out}"
    );

    // Owner-only: fine.
    chmod(&file, 0o600);
    assert_eq!(run(&["check-config", f]).0, Some(0));
}

#[test]
fn a_descriptor_set_writable_by_others_is_refused() {
    let dir = TempDir::new("sec-perm-ds");
    let set = dir.path("plugin.binpb");
    std::fs::write(&set, b"").unwrap();
    chmod(&set, 0o646);
    let file = dir.path("tap.toml");
    std::fs::write(&file, format!("descriptor_sets = [\"{}\"]\n{MINIMAL}", set.display())).unwrap();
    chmod(&file, 0o644);
    let (code, _, err) = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}: mode 0646 lets any user write it", set.display())),
        "{err}"
    );
    chmod(&set, 0o644);
    let (code, _, err) = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Secrets: logs, spans, metrics, OTLP; built-in and added redaction rules

/// Every fake credential in the recorded captures (tests/fixtures/captures/README.md).
const CAPTURE_SECRETS: &[&str] = &["not-a-real-secret", "not-a-real-password", "fixture-user"];

/// Markers in crafted Docker requests, each in a place a built-in rule covers.
const CRAFTED_SECRETS: &[(&str, &str)] = &[
    ("header X-Registry-Auth", "HDRMARKER"),
    ("header Authorization", "AUTHZMARKER"),
    ("query buildargs", "BUILDARGMARKER"),
    ("query URL credentials", "URLCREDMARKER"),
    ("query name part (token)", "QTOKENMARKER"),
    ("body Env value", "ENVMARKER"),
    ("body key name part (password)", "LABELMARKER"),
    ("never-captured route /auth", "AUTHBODYMARKER"),
];

/// Non-secret markers that are in payloads, headers and query strings: they may be span
/// attributes, never log text.
const LOG_ONLY_MARKERS: &[&str] = &[
    "SECRETMARKER",
    "fixture-pod",
    "fixture-ctr",
    "Docker-Client",
    "grpc-python",
];

fn http(req: &str) -> Vec<u8> {
    req.replace('\n', "\r\n").into_bytes()
}

fn http_with_body(head: &str, body: &str) -> Vec<u8> {
    let mut b = http(&format!(
        "{head}\nContent-Type: application/json\nContent-Length: {}\n\n",
        body.len()
    ));
    b.extend_from_slice(body.as_bytes());
    b
}

/// An HTTP/1.1 response with a JSON body.
fn json_response(status: &str, body: &str) -> Vec<u8> {
    let mut b = http(&format!(
        "HTTP/1.1 {status}\nContent-Type: application/json\nContent-Length: {}\n\n",
        body.len()
    ));
    b.extend_from_slice(body.as_bytes());
    b
}

fn ok_json() -> Vec<u8> {
    json_response("200 OK", "[]")
}

fn created() -> Vec<u8> {
    json_response(
        "201 Created",
        "{\"Id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}\n",
    )
}

/// Docker requests carrying the crafted markers, answered like dockerd would.
fn crafted_docker() -> Recording {
    let list = http(
        "GET /v1.41/containers/json?filters=SECRETMARKER HTTP/1.1\nHost: docker\nUser-Agent: Docker-Client/28.2.2 (linux)\nX-Registry-Auth: HDRMARKER\nAuthorization: Bearer AUTHZMARKER\n\n",
    );
    let build = http(
        "POST /v1.41/build?buildargs=%7B%22NPM_TOKEN%22%3A%22BUILDARGMARKER%22%7D&remote=https%3A%2F%2Fu%3AURLCREDMARKER%40git.example%2Fr&registry_token=QTOKENMARKER&t=app HTTP/1.1\nHost: docker\nContent-Length: 0\n\n",
    );
    let create = http_with_body(
        "POST /v1.41/containers/create?name=sec-c1 HTTP/1.1\nHost: docker",
        r#"{"Image":"bb","Env":["API_KEY=ENVMARKER"],"Labels":{"db_password":"LABELMARKER"}}"#,
    );
    let auth = http_with_body(
        "POST /v1.41/auth HTTP/1.1\nHost: docker",
        r#"{"username":"AUTHBODYMARKER","password":"AUTHBODYMARKER","serveraddress":"registry.example"}"#,
    );
    let auth_ok = json_response("200 OK", r#"{"Status":"Login Succeeded"}"#);
    Recording::exchange(
        "crafted-docker",
        &[
            (&list, &ok_json()),
            (&build, &ok_json()),
            (&create, &created()),
            (&auth, &auth_ok),
        ],
    )
}

/// What one replay run produced, every place an attacker could read.
struct Outputs {
    log: String,
    span_file: String,
    metrics: String,
    otlp: String,
}

/// Run runtime-tap (trace logs, payload capture on, span file and OTLP export) with two
/// intercepts in front of fake upstreams, replay every recorded capture and `extra`
/// connections through it byte-exact, stop it and collect what it wrote.
fn replay_all(label: &str, extra_config: &str, extra: &[Recording]) -> Outputs {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(OtlpReceiver::start());
    let dir = TempDir::new(label);
    let grpc_up = UnixListener::bind(dir.path("containerd-up.sock")).unwrap();
    let http_up = UnixListener::bind(dir.path("docker-up.sock")).unwrap();
    let spans = dir.path("spans.jsonl");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{extra_config}\n[[intercept]]\nname = \"containerd\"\nlisten = \"unix://{d}/containerd.sock\"\nupstream = \"unix://{d}/containerd-up.sock\"\ncapture_payloads = true\n\n\
         [[intercept]]\nname = \"dockerd\"\nlisten = \"unix://{d}/docker.sock\"\nupstream = \"unix://{d}/docker-up.sock\"\ncapture_payloads = true\n\n\
         [admin]\nlisten = \"{admin}\"\n\n[relay]\ngrace_period_secs = 2\n\n[export]\nendpoint = \"{}\"\nfile = \"{}\"\n\n[sampling]\ndefault_rules = false\n",
        receiver.endpoint(),
        spans.display(),
        d = dir.0.display(),
    );
    let mut tap = Tap::start_with(&dir.0, &config, |c| {
        c.env("RUST_LOG", "trace");
    });
    let mut recordings = Recording::all();
    recordings.extend_from_slice(extra);
    for rec in &recordings {
        let (up, listen) = if rec.name.starts_with("docker-cli/") || rec.name.starts_with("crafted-docker") {
            (&http_up, dir.path("docker.sock"))
        } else {
            (&grpc_up, dir.path("containerd.sock"))
        };
        replay_exact(up, &listen, rec);
    }
    // Every call counted before stopping, so the span file and receiver hold them all.
    let calls = |t: &Tap| t.metric("runtime_tap_calls_total ").unwrap_or(0);
    let mut last = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = calls(&tap);
        if now > 0 && now == last {
            break;
        }
        last = now;
    }
    let (_, metrics) = tap.admin_get("/metrics");
    assert_eq!(tap.stop(), Some(0));
    let otlp = format!("{:?}", receiver.resource_spans());
    let out = Outputs {
        log: tap.log_text(),
        span_file: std::fs::read_to_string(&spans).unwrap_or_default(),
        metrics,
        otlp,
    };
    // The run did produce what we look through: trace logs, spans in both sinks.
    assert!(out.log.contains("TRACE"), "trace level is on");
    assert!(out.span_file.contains("RunPodSandbox"), "span file has the CRI calls");
    assert!(out.otlp.contains("RunPodSandbox"), "receiver has the CRI calls");
    out
}

fn raw_bytes_contain(needle: &str) -> bool {
    let all: Vec<Recording> = Recording::all().into_iter().chain([crafted_docker()]).collect();
    all.iter().any(|r| {
        let mut b = r.sent(true);
        b.extend(r.sent(false));
        b.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

#[test]
fn no_secret_from_the_captures_in_trace_logs_spans_metrics_or_otlp() {
    let out = replay_all("sec-leak", "", &[crafted_docker()]);
    let places = [
        ("log", &out.log),
        ("span file", &out.span_file),
        ("metrics", &out.metrics),
        ("otlp", &out.otlp),
    ];
    let secrets = CAPTURE_SECRETS
        .iter()
        .copied()
        .chain(CRAFTED_SECRETS.iter().map(|(_, m)| *m));
    for secret in secrets {
        assert!(raw_bytes_contain(secret), "{secret} is in the replayed traffic");
        for (place, text) in places {
            assert!(!text.contains(secret), "{secret} leaked into the {place}");
        }
    }
    for marker in LOG_ONLY_MARKERS {
        assert!(raw_bytes_contain(marker), "{marker} is in the replayed traffic");
        assert!(
            !out.log.contains(marker),
            "{marker} (payload, header or query) in the trace log"
        );
    }
    // The query marker is a plain filter value: kept in url.query, never logged.
    assert!(out.span_file.contains("filters=SECRETMARKER"), "url.query kept");
}

/// One built-in rule: its name, a value the recorded or crafted traffic carries in the clear,
/// and what the payload capture shows instead.
struct BuiltinRule {
    rule: &'static str,
    secret: &'static str,
    shown: &'static str,
}

const BUILTIN_RULES: &[BuiltinRule] = &[
    BuiltinRule {
        rule: "secret message type (CRI AuthConfig: username and password)",
        secret: "not-a-real-password",
        shown: r#"\"username\":\"***\""#,
    },
    BuiltinRule {
        rule: "environment list `envs` (CRI KeyValue value)",
        secret: "not-a-real-secret",
        shown: r#"\"key\":\"DB_PASSWORD\",\"value\":\"***\""#,
    },
    BuiltinRule {
        rule: "environment list in an OCI spec inside an Any (`process.env`)",
        secret: "/usr/local/sbin:/usr/local/bin:/usr/sbin",
        shown: "PATH=***",
    },
    BuiltinRule {
        rule: "environment list in a Docker body (`Env`)",
        secret: "ENVMARKER",
        shown: "API_KEY=***",
    },
    BuiltinRule {
        rule: "secret name part in a JSON key (`db_password`)",
        secret: "LABELMARKER",
        shown: r#"\"db_password\":\"***\""#,
    },
    BuiltinRule {
        rule: "secret query parameter (`buildargs`)",
        secret: "BUILDARGMARKER",
        shown: "buildargs=REDACTED",
    },
    BuiltinRule {
        rule: "credentials in a URL query value (`remote`)",
        secret: "URLCREDMARKER",
        shown: "remote=REDACTED",
    },
    BuiltinRule {
        rule: "secret name part in a query parameter (`registry_token`)",
        secret: "QTOKENMARKER",
        shown: "registry_token=REDACTED",
    },
    BuiltinRule {
        rule: "route never captured (`POST /auth` body)",
        secret: "AUTHBODYMARKER",
        shown: "POST /auth",
    },
    BuiltinRule {
        rule: "secret headers (`X-Registry-Auth`, `Authorization`) never recorded",
        secret: "HDRMARKER",
        shown: "GET /containers/json",
    },
];

#[test]
fn each_builtin_redaction_rule_holds_on_recorded_traffic() {
    let out = replay_all("sec-rules", "", &[crafted_docker()]);
    let mut failures = Vec::new();
    for r in BUILTIN_RULES {
        assert!(
            raw_bytes_contain(r.secret),
            "{}: {} is in the traffic",
            r.rule,
            r.secret
        );
        if out.span_file.contains(r.secret) {
            failures.push(format!("{}: {} reached the span file", r.rule, r.secret));
        }
        if !out.span_file.contains(r.shown) {
            failures.push(format!("{}: {} not in the span file", r.rule, r.shown));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn added_redaction_rules_take_effect_and_builtins_stay() {
    let added = "[redact]\nheaders = [\"user-agent\"]\nfields = [\"command\", \"runtime.v1.PodSandboxMetadata.uid\"]\nenv_fields = [\"ExtraEnv\"]\n";
    let extra = Recording::exchange(
        "crafted-docker-extra-env",
        &[(
            &http_with_body(
                "POST /v1.41/containers/create?name=sec-c2 HTTP/1.1\nHost: docker\nUser-Agent: Docker-Client/28.2.2 (linux)",
                r#"{"Image":"bb","ExtraEnv":["PLAIN=EXTRAENVMARKER"]}"#,
            ),
            &created(),
        )],
    );
    let out = replay_all("sec-added", added, &[crafted_docker(), extra]);
    let spans = &out.span_file;
    // headers: the allowlisted User-Agent value is hidden.
    assert!(!spans.contains("Docker-Client"), "added header rule");
    assert!(
        spans.contains("\"user_agent.original\""),
        "the attribute stays, its value hidden"
    );
    // fields, plain name: CreateContainer's `command` (["/bin/echo", "hi"]) is hidden.
    assert!(
        spans.contains(r#"\"command\":[\"***\""#),
        "added field rule, plain name"
    );
    // fields, full name: the pod uid inside RunPodSandbox's payload is hidden.
    assert!(spans.contains(r#"\"uid\":\"***\""#), "added field rule, full name");
    // env_fields: entries keep their names.
    assert!(
        !spans.contains("EXTRAENVMARKER") && spans.contains("PLAIN=***"),
        "added env field"
    );
    // Built-ins still apply.
    for secret in CAPTURE_SECRETS.iter().chain(&["ENVMARKER", "BUILDARGMARKER"]) {
        assert!(!spans.contains(secret), "{secret}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The process-wide decode memory limit

/// A metric summed over every series whose line starts with `prefix`.
fn metric_sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
        .sum()
}

#[test]
fn decode_memory_limit_sheds_then_gives_up_while_bytes_stay_exact() {
    const LIMIT: u64 = 256 * 1024;
    const CONNS: usize = 24;
    const BODY: usize = 4 * 1024 * 1024;
    let dir = TempDir::new("sec-mem");
    let upstream = dir.path("up.sock");
    support::digest_server(&upstream);
    let listen = dir.path("tap.sock");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{}decode_memory_limit = \"256KiB\"\n",
        support::one_intercept("mem", &listen, &upstream, &admin)
            .replace("[[intercept]]\n", "[[intercept]]\ncapture_payloads = true\n")
    );
    let tap = Tap::start(&dir.0, &config);
    // Many connections at once, each a Docker-style POST with a large JSON body: the
    // observers fall behind the relay, and their queues together pass the small budget.
    let clients: Vec<_> = (0..CONNS)
        .map(|i| {
            let listen = listen.clone();
            std::thread::spawn(move || {
                let mut body = vec![b' '; BODY];
                body[0] = b'{';
                body[BODY - 1] = b'}';
                body[1..20].copy_from_slice(format!("\"n\":{i:<14},").as_bytes());
                let mut sent = format!(
                    "POST /v1.41/containers/create?name=mem-{i} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
                )
                .into_bytes();
                sent.extend_from_slice(&body);
                let mut s = support::connect(&listen);
                s.write_all(&sent).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                assert_eq!(answer, support::sha256(&sent), "connection {i}: bytes changed on the way");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let get = |series: &str| tap.metric(series).unwrap_or_else(|| panic!("{series} on /metrics"));
    // Once every connection is done, everything reserved was given back.
    let mut used = u64::MAX;
    for _ in 0..100 {
        used = get("runtime_tap_decode_memory_bytes ");
        if used == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = tap.admin_get("/metrics");
    let peak = get("runtime_tap_decode_memory_peak_bytes ");
    let give_ups = get("runtime_tap_tap_give_ups_total{intercept=\"mem\",reason=\"decode_memory\"}");
    let sheds = get("runtime_tap_payload_sheds_total{intercept=\"mem\"}");
    eprintln!("decode memory: limit {LIMIT}, peak {peak}, give-ups {give_ups}, payload sheds {sheds}");
    assert_eq!(get("runtime_tap_decode_memory_limit_bytes "), LIMIT);
    assert!(peak > 0 && peak <= LIMIT, "peak {peak} within the limit {LIMIT}");
    assert!(give_ups > 0, "connections gave up at the limit: {metrics}");
    assert!(sheds > 0, "payloads were shed past the high-water mark: {metrics}");
    assert_eq!(used, 0, "all reservations released");
    assert_eq!(
        metric_sum(&metrics, "runtime_tap_connections_accepted_total{intercept=\"mem\"}"),
        CONNS as u64
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The per-intercept connection limit

#[test]
fn connections_beyond_max_connections_are_closed_counted_and_logged_once() {
    let dir = TempDir::new("sec-limit");
    let upstream = dir.path("up.sock");
    support::echo_server(&upstream);
    let listen = dir.path("tap.sock");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = support::one_intercept("lim", &listen, &upstream, &admin)
        .replace("[[intercept]]\n", "[[intercept]]\nmax_connections = 2\n");
    let tap = Tap::start(&dir.0, &config);
    let echo = |s: &mut std::os::unix::net::UnixStream, text: &[u8]| {
        s.write_all(text).unwrap();
        let mut got = vec![0; text.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, text);
    };
    let mut a = support::connect(&listen);
    let mut b = support::connect(&listen);
    echo(&mut a, b"first");
    echo(&mut b, b"second");
    // Beyond the limit: accepted, then closed at once without reaching the upstream.
    const REFUSED: u64 = 40;
    for _ in 0..REFUSED {
        let mut c = support::connect(&listen);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(b"refused?");
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a connection beyond the limit is closed, not relayed");
    }
    echo(&mut a, b"still fine");
    assert_eq!(
        tap.metric("runtime_tap_connections_refused_total{intercept=\"lim\",reason=\"limit\"}"),
        Some(REFUSED)
    );
    let lines = tap.log_text().matches("connection limit reached").count();
    assert_eq!(lines, 1, "one log line for {REFUSED} refusals within the interval");
    // A freed place is taken again.
    drop(b);
    let mut ok = None;
    for _ in 0..100 {
        let mut c = support::connect(&listen);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Until the relay has seen `b` close, the place is still taken and this connection is
        // closed at once: the write can then fail with EPIPE, which is a retry, not a failure.
        let mut got = [0u8; 5];
        if c.write_all(b"again").is_ok() && c.read_exact(&mut got).is_ok() {
            ok = Some(got);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ok, Some(*b"again"));
}

#[test]
fn max_connections_is_off_by_default_and_zero_is_refused() {
    let dir = TempDir::new("sec-limit-cfg");
    let file = dir.path("tap.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    chmod(&file, 0o644);
    let (code, out, _) = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("max_connections"), "no limit unless set: {out}");
    assert!(out.contains("decode_memory_limit = \"256MiB\""), "{out}");
    std::fs::write(
        &file,
        MINIMAL.replace("name = \"c\"", "name = \"c\"\nmax_connections = 0"),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("intercept[0].max_connections: must be at least 1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Least privilege

const NOBODY: u32 = 65534;

/// setpriv arguments that run the rest as uid/gid 65534 with no capabilities, or with only
/// CAP_CHOWN (ambient, so it survives the exec).
fn unprivileged(chown_cap: bool) -> Vec<&'static str> {
    let mut args = vec!["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    if chown_cap {
        args.extend([
            "--inh-caps=-all,+chown",
            "--ambient-caps=+chown",
            "--bounding-set=-all,+chown",
        ]);
    } else {
        args.extend(["--inh-caps=-all", "--bounding-set=-all"]);
    }
    args
}

/// A directory the unprivileged user owns, for its sockets and files.
fn nobody_dir(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    chmod(&dir.0, 0o755);
    chown(&dir.0, Some(NOBODY), Some(NOBODY));
    dir
}

#[test]
fn runs_unprivileged_byte_exact_and_degrades_peer_names_without_ptrace() {
    let dir = nobody_dir("sec-nobody");
    // The fake dockerd socket belongs to the unprivileged user, as a socket it may use.
    let up_path = dir.path("docker-up.sock");
    let upstream = UnixListener::bind(&up_path).unwrap();
    chown(&up_path, Some(NOBODY), Some(NOBODY));
    chmod(&up_path, 0o660);
    let listen = dir.path("docker.sock");
    let spans = dir.path("spans.jsonl");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{}\n[export]\nfile = \"{}\"\n",
        support::one_intercept("dockerd", &listen, &up_path, &admin),
        spans.display()
    );
    let mut tap = Tap::start_via(&dir.0, &config, &unprivileged(false), |_| {});
    let status = std::fs::read_to_string(format!("/proc/{}/status", tap.pid())).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    assert!(status.lines().any(|l| l == "CapEff:\t0000000000000000"), "{status}");
    // The listening socket copied the upstream's owner and mode (its own user: no chown needed).
    let meta = std::fs::metadata(&listen).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            meta.permissions().mode() & 0o777
        ),
        (NOBODY, 0o660)
    );
    for name in ["docker-cli/01-version.jsonl", "docker-cli/05-create.jsonl"] {
        replay_exact(&upstream, &listen, &Recording::load(name));
    }
    assert_eq!(tap.stop(), Some(0));
    let text = std::fs::read_to_string(&spans).unwrap();
    assert!(text.contains("GET /version"), "spans exported unprivileged: {text}");
    // The client and the fake server (this test, root) are another user's process: their
    // pids are recorded; /proc/PID/exe cannot be read without CAP_SYS_PTRACE, so the name
    // falls back to the world-readable /proc/PID/comm, cut at 15 characters.
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy().into_owned();
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
    assert!(
        exe_name.len() > 15 && exe_name.starts_with(&comm),
        "{exe_name} vs {comm}"
    );
    let pid = format!(
        "{{\"key\":\"runtime_tap.client.pid\",\"value\":{{\"intValue\":\"{}\"}}}}",
        std::process::id()
    );
    assert!(text.contains(&pid), "{text}");
    let named =
        |name: &str| format!("{{\"key\":\"runtime_tap.client.executable\",\"value\":{{\"stringValue\":\"{name}\"}}}}");
    assert!(text.contains(&named(&comm)), "comm name: {text}");
    assert!(!text.contains(&exe_name), "no exe name without CAP_SYS_PTRACE: {text}");
}

#[test]
fn socket_owner_of_another_user_needs_cap_chown_and_works_with_it_alone() {
    let dir = nobody_dir("sec-chown");
    let up_path = dir.path("up.sock");
    support::echo_server(&up_path);
    chown(&up_path, Some(NOBODY), Some(NOBODY));
    chmod(&up_path, 0o660);
    let listen = dir.path("tap.sock");
    let config = support::one_intercept("own", &listen, &up_path, "off")
        .replace("[[intercept]]\n", "[[intercept]]\nsocket_group = \"0\"\n");
    let path = dir.path("tap.toml");
    std::fs::write(&path, &config).unwrap();
    // Without CAP_CHOWN: a clear error, exit non-zero.
    let mut args = unprivileged(false);
    let bin = env!("CARGO_BIN_EXE_runtime-tap");
    args.extend([bin, "run", "--config", path.to_str().unwrap()]);
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("intercept own"), "{err}");
    assert!(err.contains("cannot set socket owner"), "{err}");
    assert!(err.contains("needs CAP_CHOWN"), "{err}");
    // With CAP_CHOWN only: the socket gets root's group, and relays.
    let _ = std::fs::remove_file(&listen);
    let mut tap = Tap::start_via(&dir.0, &config, &unprivileged(true), |_| {});
    let status = std::fs::read_to_string(format!("/proc/{}/status", tap.pid())).unwrap();
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000001"),
        "only CAP_CHOWN: {status}"
    );
    let meta = std::fs::metadata(&listen).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 0);
    let mut s = support::connect(&listen);
    s.write_all(b"through").unwrap();
    let mut got = [0u8; 7];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"through");
    drop(s);
    assert_eq!(tap.stop(), Some(0));
}
