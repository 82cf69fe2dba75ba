//! A private container-runtime bed: containerd and dockerd from Debian's packages, of one
//! [`Generation`] (the machine's bookworm packages, or trixie's or sid's unpacked privately),
//! started under a temporary directory with their own sockets, state and namespaces, for the
//! test suite, the benchmarks and `runtime-tap demo`. It never touches the machine's own
//! /run/containerd or /var/run/docker.sock, and it stops only what it started, by pid:
//! the daemons, the shims they started (found by the bed's path in their command line) and
//! the containers under those shims. A watchdog process does the same if the owner dies.

pub mod cri;
pub mod demo;
pub mod generation;
pub mod registry;

pub use generation::{Binaries, Generation};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Debian packages the bed needs, and a command each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("docker.io", "dockerd"),
    ("busybox-static", "busybox"),
    ("docker-registry", "docker-registry"),
];
/// Whether `package` is there: its command is on PATH, and for busybox-static the package
/// itself (Debian's plain `busybox` also gives a `busybox` command, but linked dynamically it
/// cannot run in the bed's image, which has no libc).
fn is_installed(package: &str, cmd: &str) -> bool {
    if package != "busybox-static" {
        return which(cmd).is_some();
    }
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The sandbox image every generation's CRI plugin is configured with (and the bed provides).
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";

/// How long a daemon may take to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Install the bed's packages when any is missing (apt-get; needs root and the package
/// registry). Does nothing when all are there.
///
/// # Errors
/// When installing fails.
pub fn ensure_installed() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(package, cmd)| !is_installed(package, cmd))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} (apt-get)...", missing.join(" "));
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed ({update})");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

/// Where `cmd` is on PATH (plus the sbin directories root has).
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// The daemon versions a bed runs: the first line of `containerd --version` and of
/// `dockerd --version`.
#[derive(Clone, Debug)]
pub struct Versions {
    pub containerd: String,
    pub dockerd: String,
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.containerd, self.dockerd)
    }
}

/// A running private bed. Dropping it stops everything it started.
pub struct Bed {
    /// The bed's directory; everything it writes is below it.
    pub dir: PathBuf,
    generation: Generation,
    binaries: Binaries,
    versions: Versions,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    /// The private registry, once started ([`Bed::start_registry`]).
    registry: Option<registry::Registry>,
    watchdog: Option<Child>,
}

impl Bed {
    /// A bed of the machine's own packages (bookworm's); see [`Bed::with_generation`].
    pub fn new(label: &str) -> anyhow::Result<Bed> {
        Bed::with_generation(label, Generation::Bookworm)
    }

    /// A new bed directory under /tmp (short: unix socket paths are limited to 107 bytes),
    /// with a watchdog that cleans up if this process dies without dropping the bed, for the
    /// daemons of `generation` (fetched once when they are not there yet). Prints the
    /// versions it runs to stderr.
    pub fn with_generation(label: &str, generation: Generation) -> anyhow::Result<Bed> {
        let binaries = generation.ensure()?;
        let versions = Versions {
            containerd: binaries.version("containerd"),
            dockerd: binaries.version("dockerd"),
        };
        eprintln!("bed {label}: {generation}: {versions}");
        let dir = std::env::temp_dir().join(format!("rtap-{label}-{}", std::process::id()));
        if dir.exists() {
            teardown_dir(&dir);
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("teardown.sh"), TEARDOWN_SCRIPT).context("write teardown script")?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap 'exit 0' TERM; while kill -0 {pid} 2>/dev/null; do sleep 1 & wait $!; done; sh '{dir}/teardown.sh' '{dir}'",
                pid = std::process::id(),
                dir = dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start bed watchdog")?;
        Ok(Bed {
            dir,
            generation,
            binaries,
            versions,
            containerd: None,
            dockerd: None,
            registry: None,
            watchdog: Some(watchdog),
        })
    }

    /// containerd's own socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// dockerd's own socket.
    pub fn docker_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The daemon generation the bed runs.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The containerd and dockerd versions the bed runs.
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// A command running `cmd` of the bed's generation (its ctr, containerd...; the machine's
    /// when the generation has none, as for runc and the docker CLI) with the generation's
    /// PATH.
    pub fn command(&self, cmd: &str) -> Command {
        self.binaries.command(cmd)
    }

    /// The generation's ctr.
    pub fn ctr_path(&self) -> PathBuf {
        self.binaries.resolve("ctr").unwrap_or_else(|| PathBuf::from("ctr"))
    }

    /// Start containerd (with a working CRI plugin) and wait until it answers.
    pub fn start_containerd(&mut self) -> anyhow::Result<()> {
        let config = containerd_config(self.generation, &self.dir);
        std::fs::write(self.dir.join("containerd.toml"), config)?;
        // Appended to: a restart after `kill_containerd` keeps the first run's log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))?;
        let child = self
            .command("containerd")
            .arg("--config")
            .arg(self.dir.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start containerd ({})", self.versions.containerd))?;
        self.containerd = Some(child);
        let sock = self.containerd_socket();
        wait_until(READY_TIMEOUT, "containerd", || {
            self.ctr(&sock)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .with_context(|| self.failure_note("containerd"))
    }

    /// What a daemon's failure to start needs next to it: the generation, the version met and
    /// the end of the daemon's log.
    fn failure_note(&self, daemon: &str) -> String {
        let version = if daemon == "containerd" {
            &self.versions.containerd
        } else {
            &self.versions.dockerd
        };
        let log = std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{} bed, {version}; end of {daemon}.log:\n{}",
            self.generation,
            tail.join("\n")
        )
    }

    /// containerd's pid, while the bed runs it.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// Kill containerd with SIGKILL, as a crash would (no cleanup: its socket file stays,
    /// its shims and their containers live on), and reap it. `start_containerd` starts it
    /// again on the same socket and state.
    pub fn kill_containerd(&mut self) {
        if let Some(mut c) = self.containerd.take() {
            signal(&c, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Start dockerd on the containerd socket `containerd` (containerd's own, or an
    /// intercepting one) and wait until it answers.
    pub fn start_dockerd(&mut self, containerd: &Path) -> anyhow::Result<()> {
        self.start_dockerd_env(containerd, &[])
    }

    /// As [`Bed::start_dockerd`], with `env` added to dockerd's environment (such as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, which turns on dockerd's own tracing from 26.x on).
    pub fn start_dockerd_env(&mut self, containerd: &Path, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let d = &self.dir;
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let child = self
            .command("dockerd")
            .envs(env.iter().copied())
            .arg("--containerd")
            .arg(containerd)
            .args([
                "--containerd-namespace",
                "moby",
                "--containerd-plugins-namespace",
                "plugins.moby",
            ])
            .arg("--data-root")
            .arg(d.join("docker"))
            .arg("--exec-root")
            .arg(d.join("docker-exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.docker_socket().display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start dockerd ({})", self.versions.dockerd))?;
        self.dockerd = Some(child);
        let sock = self.docker_socket();
        wait_until(READY_TIMEOUT, "dockerd", || {
            self.docker(&sock)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .with_context(|| self.failure_note("dockerd"))
    }

    /// A private docker CLI config directory, so the machine's ~/.docker is never touched.
    pub fn docker_config_dir(&self) -> PathBuf {
        self.dir.join("docker-cli")
    }

    /// A docker CLI command against `socket` (dockerd's own, or an intercepting one): the
    /// machine's CLI (28.x talks to every generation's dockerd), with the generation's PATH.
    pub fn docker(&self, socket: &Path) -> Command {
        let mut c = docker_command(socket, &self.docker_config_dir());
        c.env("PATH", self.binaries.path_env());
        c
    }

    /// The Docker API version the bed's docker CLI and dockerd agree on (the `/v1.NN/` of the
    /// CLI's requests): the daemon's newest, or the CLI's own where the daemon's is newer.
    ///
    /// # Errors
    /// When `docker version` fails.
    pub fn docker_api_version(&self) -> anyhow::Result<String> {
        let out = run(self
            .docker(&self.docker_socket())
            .args(["version", "--format", "{{.Client.APIVersion}}"]))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The generation's ctr against `socket`, made absolute (ctr 2.x refuses a relative
    /// socket path: "invalid (non-empty) authority").
    pub fn ctr(&self, socket: &Path) -> Command {
        let mut c = self.command("ctr");
        c.arg("-a")
            .arg(std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf()));
        c
    }

    /// Import the tiny busybox image `bb:latest` into dockerd through `socket`, and save it
    /// as a tar (also under the name CRI's sandbox image needs) for `ctr images import`.
    /// Returns the saved tar's path.
    pub fn make_images(&self, socket: &Path) -> anyhow::Result<PathBuf> {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin"))?;
        let busybox = which("busybox").context("busybox-static is not installed")?;
        std::fs::copy(&busybox, rootfs.join("bin/busybox"))?;
        for cmd in ["sh", "echo", "sleep", "cat", "true", "false", "ls", "head", "wc"] {
            let link = rootfs.join("bin").join(cmd);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
        let tar = self.dir.join("rootfs.tar");
        run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."))?;
        run(self
            .docker(socket)
            .arg("import")
            .arg("-c")
            .arg(r#"CMD ["/bin/sleep","3600"]"#)
            .arg(&tar)
            .arg("bb:latest"))?;
        run(self
            .docker(socket)
            .args(["tag", "bb:latest", "registry.k8s.io/pause:3.6"]))?;
        let saved = self.dir.join("images.tar");
        run(self
            .docker(socket)
            .arg("save")
            .arg("-o")
            .arg(&saved)
            .args(["bb:latest", "registry.k8s.io/pause:3.6"]))?;
        Ok(saved)
    }

    /// Import `tar` (from [`Bed::make_images`]) into containerd's k8s.io namespace through
    /// `socket` with the generation's ctr, and wait until the CRI plugin knows the sandbox
    /// image: containerd 2.x fills its CRI image cache from the import's events shortly after
    /// ctr returns, and a pod started in between would try to pull the image.
    ///
    /// # Errors
    /// When the import fails or the CRI plugin does not see the image in time.
    pub fn import_cri_images(&self, socket: &Path, tar: &Path) -> anyhow::Result<()> {
        run(self.ctr(socket).args(["-n", "k8s.io", "images", "import"]).arg(tar))
            .with_context(|| format!("import the CRI images ({})", self.versions.containerd))?;
        let socket = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
        // A runtime of its own on a thread of its own: callers may be inside one already.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("runtime for the CRI image wait")?
                        .block_on(cri::wait_for_image(&socket, SANDBOX_IMAGE, READY_TIMEOUT))
                })
                .join()
                .unwrap_or_else(|_| bail!("the CRI image wait panicked"))
        })
    }

    /// Stop everything the bed started and remove its directory.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            // dockerd stops its containers on SIGTERM; give it the time to.
            signal(&d, nix::sys::signal::Signal::SIGTERM);
            wait_timeout(&mut d, Duration::from_secs(20));
        }
        if let Some(mut c) = self.containerd.take() {
            signal(&c, nix::sys::signal::Signal::SIGTERM);
            wait_timeout(&mut c, Duration::from_secs(10));
        }
        self.stop_registry();
        teardown_dir(&self.dir);
        if let Some(mut w) = self.watchdog.take() {
            signal(&w, nix::sys::signal::Signal::SIGTERM);
            let _ = w.wait();
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// containerd's config for `generation` below `dir`: every socket and all state private
/// (grpc, ttrpc and debug addresses, root, state, runc's root), a CRI plugin that works here
/// (restrict_oom_score_adj) and the sandbox image the bed provides (registry.k8s.io/pause:3.6;
/// 1.7 would default to 3.8). containerd 2.x wants `version = 3`, where CRI is split into
/// images and runtime plugins; NRI, on by default there, would open /var/run/nri: off.
/// Registry hosts come from the bed's hosts folder (`config_path`), where
/// [`Bed::start_registry`] tells CRI that its registry speaks plain HTTP.
fn containerd_config(generation: Generation, dir: &Path) -> String {
    let d = dir.display();
    let hosts = Bed::hosts_dir(dir);
    let hosts = hosts.display();
    let common = format!(
        r#"root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/containerd-debug.sock"
"#
    );
    if generation.containerd_config_v3() {
        return format!(
            r#"version = 3
{common}[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{SANDBOX_IMAGE}"
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "{hosts}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        Root = "{d}/runc"
"#
        );
    }
    format!(
        r#"version = 2
{common}[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{SANDBOX_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
"#
    )
}

/// Kills, by pid, every process whose command line names the bed directory (daemons, shims)
/// and their children (containers), unmounts what is mounted below it, and removes it.
const TEARDOWN_SCRIPT: &str = r#"d="$1"
[ -n "$d" ] && [ -d "$d" ] || exit 0
ours() { for p in /proc/[0-9]*; do pid=${p#/proc/}; [ "$pid" = "$$" ] && continue; tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -qF -- "$d/" && case "$(tr '\0' ' ' < $p/cmdline)" in *teardown.sh*|*"kill -0"*) ;; *) echo $pid;; esac; done; }
for sig in TERM KILL; do
  pids=$(ours)
  [ -n "$pids" ] || break
  kids=""; for p in $pids; do kids="$kids $(cat /proc/$p/task/*/children 2>/dev/null)"; done
  kill -$sig $kids $pids 2>/dev/null
  sleep 1
done
grep -F " $d/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
rm -rf "$d"
"#;

fn teardown_dir(dir: &Path) {
    let script = dir.join("teardown.sh");
    if !script.exists() {
        let _ = std::fs::create_dir_all(dir);
        if let Ok(mut f) = std::fs::File::create(&script) {
            let _ = f.write_all(TEARDOWN_SCRIPT.as_bytes());
        }
    }
    let _ = Command::new("sh").arg(&script).arg(dir).stdin(Stdio::null()).status();
}

/// A docker CLI command against `socket` with the CLI config directory `config` (a bed's
/// [`Bed::docker_config_dir`]), for callers that cannot hold the bed.
pub fn docker_command(socket: &Path, config: &Path) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT");
    c
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not become ready within {timeout:?}")
}

/// Run a command to completion; its stderr in the error when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
