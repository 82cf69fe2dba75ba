//! The things measured: the direct socket and the relays in front of it, each a separate
//! process (tree) listening on its own socket path in front of the same upstream.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A way to reach the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The upstream socket itself: the physical limit.
    Direct,
    /// `socat UNIX-LISTEN:…,fork UNIX-CONNECT:…` (a process per connection).
    Socat,
    /// HAProxy `mode tcp`, unix bind and server.
    Haproxy,
    /// nginx `stream` proxy, unix listen and proxy_pass, one worker.
    Nginx,
    /// runtime-tap, decoding on, spans exported over OTLP/gRPC to the benchmark's receiver.
    TapExport,
    /// runtime-tap, `decode = false`: relay only.
    TapRelay,
    /// tap-export with the binary given by `--tap-bin-b` and the environment given by
    /// `--tap-env-b`: an A/B of two builds (or two settings) in one interleaved run, where
    /// machine drift cancels out (two runs on a shared machine do not).
    TapExportB,
}

pub const ALL: [Target; 7] = [
    Target::Direct,
    Target::Socat,
    Target::Haproxy,
    Target::Nginx,
    Target::TapExport,
    Target::TapRelay,
    Target::TapExportB,
];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Socat => "socat",
            Target::Haproxy => "haproxy",
            Target::Nginx => "nginx",
            Target::TapExport => "tap-export",
            Target::TapRelay => "tap-relay",
            Target::TapExportB => "tap-export-b",
        }
    }

    /// Decoding on and spans exported (the two builds of an A/B are both).
    pub fn exports(self) -> bool {
        matches!(self, Target::TapExport | Target::TapExportB)
    }

    pub fn parse(s: &str) -> Option<Target> {
        ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Debian packages for the peer relays, and the command each provides.
const PEERS: &[(&str, &str)] = &[
    ("socat", "socat"),
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    ("libnginx-mod-stream", "/usr/lib/nginx/modules/ngx_stream_module.so"),
];

/// nginx's dynamic stream module as Debian ships it.
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Installs the peers the chosen targets need, with apt-get, when missing.
pub fn ensure_peers(targets: &[Target]) -> anyhow::Result<()> {
    let wanted = |pkg: &str| match pkg {
        "socat" => targets.contains(&Target::Socat),
        "haproxy" => targets.contains(&Target::Haproxy),
        _ => targets.contains(&Target::Nginx),
    };
    let missing: Vec<&str> = PEERS
        .iter()
        .filter(|(p, _)| wanted(p))
        .filter(|(_, cmd)| {
            if cmd.starts_with('/') {
                !Path::new(cmd).exists()
            } else {
                runtime_tap::bed::which(cmd).is_none()
            }
        })
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} (apt-get)...", missing.join(" "));
    runtime_tap::bed::run(Command::new("apt-get").args(["update", "-qq"]))?;
    // No init system here: the packages' postinst scripts do not start the system services.
    runtime_tap::bed::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

/// Versions of the peers and daemons, for the report: the first output line that names one.
pub fn versions(tap_bin: &Path) -> Vec<(String, String)> {
    let line = |cmd: &mut Command, needle: &str| {
        cmd.stdin(Stdio::null())
            .output()
            .ok()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).to_string();
                s.push('\n');
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.lines()
                    .find(|l| l.to_lowercase().contains(needle))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    vec![
        (
            "runtime-tap".into(),
            line(Command::new(tap_bin).arg("--version"), "runtime-tap"),
        ),
        ("socat".into(), line(Command::new("socat").arg("-V"), "socat version")),
        ("haproxy".into(), line(Command::new("haproxy").arg("-v"), "version")),
        ("nginx".into(), line(Command::new("nginx").arg("-v"), "version")),
        (
            "containerd".into(),
            line(Command::new("containerd").arg("--version"), "containerd"),
        ),
        (
            "dockerd".into(),
            line(Command::new("dockerd").arg("--version"), "version"),
        ),
    ]
}

/// What a relay needs to know about the run.
pub struct Env<'a> {
    /// Per-workload scratch directory (sockets, configs, logs).
    pub dir: &'a Path,
    pub tap_bin: &'a Path,
    /// The B build of an A/B (`--tap-bin-b`), run as target tap-export-b.
    pub tap_bin_b: Option<&'a Path>,
    /// Extra environment of target tap-export-b (`--tap-env-b`).
    pub env_b: &'a [(String, String)],
    /// The benchmark's OTLP/gRPC receiver, `http://127.0.0.1:PORT`.
    pub otlp_endpoint: &'a str,
    /// runtime-tap's intercept name (`service.name`): containerd, dockerd, bulk.
    pub service: &'a str,
    /// runtime-tap's admin endpoint (/metrics); none: off, as for the paired workloads.
    pub admin: Option<std::net::SocketAddr>,
}

/// A running target in front of one upstream.
pub struct Relay {
    pub target: Target,
    /// Where clients connect.
    pub socket: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Relay {
    /// Starts `target` in front of `upstream` and waits until it accepts.
    pub fn start(target: Target, upstream: &Path, env: &Env) -> anyhow::Result<Relay> {
        if target == Target::Direct {
            return Ok(Relay {
                target,
                socket: upstream.to_path_buf(),
                child: None,
                log: PathBuf::new(),
            });
        }
        let name = target.name();
        let socket = env.dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let log = env.dir.join(format!("{name}.log"));
        let up = upstream.display();
        let sock = socket.display();
        let cmd = match target {
            Target::Direct => unreachable!(),
            Target::Socat => {
                let mut c = Command::new("socat");
                c.arg(format!("UNIX-LISTEN:{sock},fork"))
                    .arg(format!("UNIX-CONNECT:{up}"));
                c
            }
            Target::Haproxy => {
                let cfg = env.dir.join("haproxy.cfg");
                // Defaults otherwise (buffer sizes, threads = cores); long timeouts so that the
                // idle workload's connections are not reaped.
                std::fs::write(
                    &cfg,
                    format!(
                        "global\n  maxconn 8192\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout client-fin 30s\n  timeout server-fin 30s\nlisten bench\n  bind unix@{sock}\n  server s1 unix@{up}\n"
                    ),
                )?;
                let mut c = Command::new("haproxy");
                c.arg("-db").arg("-f").arg(&cfg);
                c
            }
            Target::Nginx => {
                let prefix = env.dir.join("nginx");
                std::fs::create_dir_all(&prefix)?;
                let cfg = prefix.join("nginx.conf");
                let p = prefix.display();
                std::fs::write(
                    &cfg,
                    format!(
                        "load_module {NGINX_STREAM_MODULE};\ndaemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 16384;\nuser root;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\nevents {{ worker_connections 8192; }}\nstream {{\n  server {{\n    listen unix:{sock};\n    proxy_pass unix:{up};\n    proxy_half_close on;\n    proxy_timeout 1h;\n  }}\n}}\n"
                    ),
                )?;
                let mut c = Command::new("nginx");
                c.arg("-p")
                    .arg(&prefix)
                    .arg("-c")
                    .arg(&cfg)
                    .arg("-e")
                    .arg(prefix.join("error.log"));
                c
            }
            Target::TapExport | Target::TapRelay | Target::TapExportB => {
                let cfg = env.dir.join(format!("{name}.toml"));
                let export = if target.exports() {
                    // Every call exported (no poll thinning): the worst case for export cost, and
                    // the spans column then accounts for every call. RTAP_BENCH_SAMPLING=default
                    // (benches/instructions --default-sampling) keeps the default rules instead:
                    // Version/Version is a poll they thin, so most calls are sampled out.
                    let sampling = if std::env::var("RTAP_BENCH_SAMPLING").as_deref() == Ok("default") {
                        ""
                    } else {
                        "\n[sampling]\ndefault_rules = false\n"
                    };
                    format!(
                        "[export]\nendpoint = \"{}\"\nconsole = false\n{sampling}",
                        env.otlp_endpoint
                    )
                } else {
                    // No [export]: with decoding off there is nothing to export (and an export
                    // section with no sink is refused).
                    String::new()
                };
                let admin = env.admin.map_or("off".to_string(), |a| a.to_string());
                std::fs::write(
                    &cfg,
                    format!(
                        "[[intercept]]\nname = \"{}\"\nlisten = \"unix://{sock}\"\nupstream = \"unix://{up}\"\ndecode = {}\n\n[admin]\nlisten = \"{admin}\"\n\n[relay]\ngrace_period_secs = 1\n\n{export}",
                        env.service,
                        target.exports()
                    ),
                )?;
                let bin = match target {
                    Target::TapExportB => env.tap_bin_b.context("tap-export-b needs --tap-bin-b")?,
                    _ => env.tap_bin,
                };
                let mut c = Command::new(bin);
                c.arg("run").arg("--config").arg(&cfg).env("RUST_LOG", "warn");
                if target == Target::TapExportB {
                    c.envs(env.env_b.iter().map(|(k, v)| (k, v)));
                }
                // The OTLP endpoint comes from the config only.
                for (k, _) in std::env::vars() {
                    if k.starts_with("OTEL_") {
                        c.env_remove(k);
                    }
                }
                c
            }
        };
        Relay::spawn(target, socket, cmd, log)
    }

    /// Starts runtime-tap with a config file written by the caller (a workload of its own,
    /// such as `node-mix`, with several intercepts); `socket` is the one probed for readiness.
    pub fn start_tap(bin: &Path, config: &Path, socket: PathBuf, log: PathBuf) -> anyhow::Result<Relay> {
        let mut c = Command::new(bin);
        c.arg("run").arg("--config").arg(config).env("RUST_LOG", "warn");
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                c.env_remove(k);
            }
        }
        Relay::spawn(Target::TapExport, socket, c, log)
    }

    fn spawn(target: Target, socket: PathBuf, mut cmd: Command, log: PathBuf) -> anyhow::Result<Relay> {
        let name = target.name();
        let logf = std::fs::File::create(&log)?;
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe. If the benchmark
        // dies without stopping its relays (killed), the kernel sends them SIGTERM; relays are
        // started from the main thread, which lives as long as the process.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let mut relay = Relay {
            target,
            socket,
            child: Some(child),
            log,
        };
        relay.wait_ready()?;
        Ok(relay)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                bail!("{} exited at start ({status}): {}", self.target.name(), self.log_tail());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                // Let the probe connection's teardown finish before anyone measures.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!(
                    "{} not accepting on {} after 15 s: {}",
                    self.target.name(),
                    self.socket.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The relay's root pid; none for the direct socket.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the relay's whole tree, by pid: SIGTERM to the root, then SIGKILL to whatever is
    /// left after 3 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pids = crate::procfs::tree(child.id());
        let kill = |pid: u32, sig| {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        };
        kill(child.id(), nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().skip(1) {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                kill(*pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
        if self.target != Target::Direct {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
