//! Shared test helpers: the runtime-tap binary as a child process, echo and sink servers,
//! and small utilities. Each test binary includes this module with `mod support;`.
#![allow(dead_code)]

pub mod cri;
pub mod http1;
pub mod otlp;
pub mod proc;
pub mod recorded;
pub mod replay;
pub mod stack;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A fresh directory for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtap-t-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon generation the end-to-end tests run against: `RTAP_GENERATION` (bookworm,
/// trixie or sid; tests/run sets it), bookworm when unset.
///
/// # Panics
/// When `RTAP_GENERATION` names no generation.
pub fn generation() -> runtime_tap::bed::Generation {
    match std::env::var("RTAP_GENERATION") {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|e| panic!("RTAP_GENERATION: {e}")),
        _ => runtime_tap::bed::Generation::Bookworm,
    }
}

/// A free TCP port on loopback (bound and released: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// runtime-tap running as a child process, stopped with SIGTERM on drop.
pub struct Tap {
    pub child: Child,
    pub admin: Option<String>,
    pub log: PathBuf,
}

impl Tap {
    /// Start `runtime-tap run --config` with `config` (TOML) written into `dir`; waits until
    /// the log says every intercept listens.
    pub fn start(dir: &Path, config: &str) -> Tap {
        Tap::start_with(dir, config, |_| {})
    }

    /// As `start`, with a hook to adjust the command (environment, descriptors).
    pub fn start_with(dir: &Path, config: &str, adjust: impl FnOnce(&mut Command)) -> Tap {
        Tap::start_via(dir, config, &[], adjust)
    }

    /// As `start_with`, run through `wrapper` (a program and its arguments that execs the
    /// rest, such as `setpriv --reuid=65534 ...`) when it is not empty.
    pub fn start_via(dir: &Path, config: &str, wrapper: &[&str], adjust: impl FnOnce(&mut Command)) -> Tap {
        let path = dir.join("tap.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("tap-{}.log", rand::random::<u32>()));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_runtime-tap"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_runtime-tap")),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null());
        cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        adjust(&mut cmd);
        let child = cmd.spawn().expect("start runtime-tap");
        let admin = admin_of(config);
        let intercepts = config.matches("[[intercept]]").count();
        let tap = Tap { child, admin, log };
        tap.wait_log(
            |log| log.matches("intercept listening").count() >= intercepts,
            Duration::from_secs(20),
        );
        tap
    }

    /// Start runtime-tap with `listener` handed over the way systemd does (descriptor 3,
    /// LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES = `name`), through `bash` so LISTEN_PID can
    /// name the exec'd process; `config` (TOML) is written into `dir`. Waits until it listens.
    pub fn start_activated(dir: &Path, listener: &UnixListener, name: &str, config: &str) -> Tap {
        Tap::start_activated_all(dir, &[(listener, name)], config)
    }

    /// As `start_activated`, with several listeners: descriptors 3, 4, ... in order, named
    /// in `LISTEN_FDNAMES` (colon-separated) as systemd does.
    pub fn start_activated_all(dir: &Path, listeners: &[(&UnixListener, &str)], config: &str) -> Tap {
        use std::os::fd::AsRawFd;
        // Each descriptor survives exec into bash, which parks it above 9 first (so that
        // moving one to 3 or 4 cannot clobber another) and then moves it in place.
        let (mut park, mut place, mut names) = (String::new(), String::new(), Vec::new());
        for (i, (listener, name)) in listeners.iter().enumerate() {
            nix::fcntl::fcntl(*listener, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
            park.push_str(&format!(" {}<&{}", 20 + i, listener.as_raw_fd()));
            place.push_str(&format!(" {}<&{} {}<&-", 3 + i, 20 + i, 20 + i));
            names.push(*name);
        }
        let names = names.join(":");
        let path = dir.join(format!("{}.toml", names.replace(':', "-")));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{}-{}.log", names.replace(':', "-"), rand::random::<u32>()));
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec{park}; export LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={names} RUST_LOG=debug; exec '{}' run --config '{}'{place}",
                listeners.len(),
                env!("CARGO_BIN_EXE_runtime-tap"),
                path.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let tap = Tap {
            child,
            admin: admin_of(config),
            log,
        };
        tap.wait_log(
            |l| l.matches("intercept listening").count() >= listeners.len(),
            Duration::from_secs(20),
        );
        assert!(tap.log_text().contains("handed over by the service manager"));
        tap
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log satisfies `pred`; panics with the log on timeout or early exit.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, timeout: Duration) {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if pred(&text) {
                return;
            }
            if start.elapsed() > timeout {
                panic!("runtime-tap log did not show what was expected in {timeout:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open file descriptors of the runtime-tap process.
    pub fn fd_count(&self) -> usize {
        proc::fd_count(self.pid())
    }

    /// Descriptors of runtime-tap once it is idle: waits for the count to stay put for half a
    /// second (an admin request's connection closing, a connection's tasks ending), at most
    /// 10 s. A baseline taken after a fixed sleep is one the machine's load can still move.
    pub fn settled_fd_count(&self) -> usize {
        let start = Instant::now();
        let mut last = self.fd_count();
        let mut stable = 0;
        while stable < 5 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.fd_count();
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
        }
        last
    }

    /// Threads of the runtime-tap process (tasks do not show; a thread per connection would).
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// GET a path from the admin endpoint; (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let addr = self.admin.as_deref().expect("admin endpoint configured");
        http_get(addr, path)
    }

    /// A metric's value from /metrics (the line that starts with `series`).
    pub fn metric(&self, series: &str) -> Option<u64> {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
    }

    /// Every series on /metrics (`name{labels}` as written) and its value.
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// Resident set size of the runtime-tap process (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc::rss_kib(self.pid())
    }

    /// CPU time (user + system) the runtime-tap process has used so far.
    pub fn cpu_time(&self) -> Duration {
        proc::cpu_time(self.pid())
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The admin address a config names, unless it is off.
fn admin_of(config: &str) -> Option<String> {
    config
        .lines()
        .skip_while(|l| l.trim() != "[admin]")
        .find_map(|l| {
            l.trim()
                .strip_prefix("listen = ")
                .map(|v| v.trim_matches('"').to_string())
        })
        .filter(|a| a != "off")
}

/// A tokio runtime on two threads, for the async clients (CRI, OTLP receiver) of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// A minimal HTTP/1.0 GET over TCP.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A unix echo server: writes back what it reads; on EOF it finishes writing and shuts down
/// its write side. Runs on a thread per connection, until the process ends.
pub fn echo_server(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// A unix server that reads everything, then answers with the SHA-256 (hex) of what it got
/// and closes: proves the request side arrived intact and that EOF (half-close) reached it.
pub fn digest_server(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => h.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = conn.write_all(hex(&h.finalize()).as_bytes());
            });
        }
    });
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

/// Connect to a unix socket, retrying briefly while it is being set up.
pub fn connect(path: &Path) -> UnixStream {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("connect {}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Read lines from a child's output until one matches, for servers that print when ready.
pub fn read_until(reader: &mut impl BufRead, needle: &str) -> String {
    let mut all = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        all.push_str(&line);
        if line.contains(needle) {
            break;
        }
        line.clear();
    }
    all
}

pub fn buf_reader<R: Read>(r: R) -> BufReader<R> {
    BufReader::new(r)
}

/// A config with one unix intercept.
pub fn one_intercept(name: &str, listen: &Path, upstream: &Path, admin: &str) -> String {
    format!(
        "[[intercept]]\nname = \"{name}\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[relay]\ngrace_period_secs = 2\n",
        listen.display(),
        upstream.display()
    )
}

/// The lines a child prints, read on a thread so that every wait on them is bounded.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    /// Everything read so far, for failure messages.
    seen: String,
}

impl Lines {
    pub fn of(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: String::new(),
        }
    }

    /// Waits for a line holding `needle`, at most `timeout`; true when it came.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Proves a subscription live before a test relies on it: calls `poke(i)` (i = 0, 1, ...)
    /// until a line holding `needle` comes, for at most 30 s; returns how many pokes it took.
    /// A fixed sleep instead lets a slow subscription miss the events the test then checks.
    pub fn until_seen(&mut self, needle: &str, mut poke: impl FnMut(u32)) -> u32 {
        let start = Instant::now();
        for i in 0.. {
            poke(i);
            if self.wait_for(needle, Duration::from_millis(500)) {
                return i + 1;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {needle:?} within 30 s; the subscription printed:\n{}",
                self.seen
            );
        }
        unreachable!()
    }

    /// What was read so far.
    pub fn seen(&self) -> &str {
        &self.seen
    }
}
