//! Which daemon generation a bed runs, and where its binaries come from: bookworm's are the
//! machine's own packages (installed when missing); trixie's and sid's containerd and dockerd
//! are downloaded from the mirror the machine's apt already uses and unpacked with `dpkg -x`
//! into a cache folder outside the repo, never installed. One fetch per suite, under a lock,
//! so test binaries and demos running at once share it. The machine's runc serves every
//! generation (sid's runc needs a newer glibc than bookworm's), and so does its docker CLI.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use anyhow::{Context as _, bail};

/// A generation of containerd and dockerd, named after the Debian suite that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Generation {
    /// containerd 1.6, dockerd 20.10: the machine's own packages.
    Bookworm,
    /// containerd 1.7, dockerd 26.1: Debian's stable release after bookworm.
    Trixie,
    /// containerd 2.x, dockerd 28.x: Debian unstable, which moves.
    Sid,
}

impl Generation {
    /// Every generation, oldest first.
    pub const ALL: [Generation; 3] = [Generation::Bookworm, Generation::Trixie, Generation::Sid];

    /// The Debian suite's name (also the generation's name on the command line).
    pub fn suite(self) -> &'static str {
        match self {
            Generation::Bookworm => "bookworm",
            Generation::Trixie => "trixie",
            Generation::Sid => "sid",
        }
    }

    /// Whether its containerd wants the config `version = 3` (containerd 2.x: CRI split into
    /// `io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`).
    pub fn containerd_config_v3(self) -> bool {
        self == Generation::Sid
    }

    /// Make sure the generation's binaries are there (installing bookworm's packages, or
    /// fetching and unpacking the suite's once into the cache), and say where they are.
    ///
    /// # Errors
    /// When installing, downloading or unpacking fails.
    pub fn ensure(self) -> anyhow::Result<Binaries> {
        super::ensure_installed()?;
        if self == Generation::Bookworm {
            return Ok(Binaries { dirs: Vec::new() });
        }
        let root = unpacked(self)?;
        Ok(Binaries {
            dirs: vec![root.join("usr/bin"), root.join("usr/sbin")],
        })
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suite())
    }
}

impl FromStr for Generation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Generation::ALL
            .into_iter()
            .find(|g| g.suite() == s)
            .ok_or_else(|| format!("unknown daemon generation {s:?} (expected bookworm, trixie or sid)"))
    }
}

/// Where a generation's binaries are: directories to search before the machine's PATH.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The unpacked `usr/bin` and `usr/sbin` (none for bookworm).
    pub dirs: Vec<PathBuf>,
}

impl Binaries {
    /// The PATH for the generation's commands: its own directories, then the inherited PATH,
    /// then the sbin and bin directories root has (so the machine's runc is found).
    pub fn path_env(&self) -> OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = self.dirs.clone();
        dirs.extend(std::env::split_paths(&inherited));
        for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
            if !dirs.iter().any(|x| x == Path::new(d)) {
                dirs.push(PathBuf::from(d));
            }
        }
        std::env::join_paths(dirs).unwrap_or(inherited)
    }

    /// Where `cmd` is: the generation's own directories first, then the machine's.
    pub fn resolve(&self, cmd: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
            .or_else(|| super::which(cmd))
    }

    /// A command running `cmd` from the generation, with the generation's PATH (so containerd
    /// finds its own shim and dockerd its own docker-proxy).
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new(self.resolve(cmd).unwrap_or_else(|| PathBuf::from(cmd)));
        c.env("PATH", self.path_env());
        c
    }

    /// The first line `cmd --version` prints, or what went wrong.
    pub fn version(&self, cmd: &str) -> String {
        match self.command(cmd).arg("--version").stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            Ok(out) => format!(
                "{cmd} --version failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("{cmd} --version: {e}"),
        }
    }
}

/// The cache folder for unpacked daemons: `RUNTIME_TAP_DAEMON_CACHE`, else
/// /var/cache/runtime-tap/daemons. Outside the repo: a clone stays clean and a second clone
/// reuses the download.
pub fn cache_root() -> PathBuf {
    std::env::var_os("RUNTIME_TAP_DAEMON_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/runtime-tap/daemons"), PathBuf::from)
}

/// The unpacked root of `generation` (`<cache>/<suite>/root`), fetched when missing.
/// Holds an exclusive lock on `<cache>/<suite>/lock` meanwhile; the root appears by an atomic
/// rename once complete, so a fetch cut short leaves nothing that looks done.
fn unpacked(generation: Generation) -> anyhow::Result<PathBuf> {
    let dir = cache_root().join(generation.suite());
    let root = dir.join("root");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let lock_path = dir.join("lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("lock {}", lock_path.display()))?;
    if root.join("usr/bin/containerd").is_file() {
        return Ok(root);
    }
    eprintln!(
        "fetching {generation}'s containerd and docker.io into {} (unpacked, not installed)...",
        dir.display()
    );
    fetch(generation, &dir)?;
    Ok(root)
}

/// Download the suite's containerd and docker.io with a private apt configuration (its own
/// sources list, lists and cache below `dir`; the machine's apt state is not touched) and
/// unpack them into `dir/root`.
fn fetch(generation: Generation, dir: &Path) -> anyhow::Result<()> {
    let mirror = mirror()?;
    let suite = generation.suite();
    for sub in ["lists/partial", "archives/partial", "debs"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {}/{sub}", dir.display()))?;
    }
    let sources = dir.join("sources.list");
    std::fs::write(
        &sources,
        format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {suite} main\n"),
    )
    .with_context(|| format!("write {}", sources.display()))?;
    let apt = |args: &[&str]| -> Command {
        let mut c = Command::new("apt-get");
        for (key, value) in [
            ("Dir::Etc::SourceList", sources.as_os_str()),
            ("Dir::Etc::SourceParts", "/dev/null".as_ref()),
            ("Dir::Etc::Preferences", "/dev/null".as_ref()),
            ("Dir::Etc::PreferencesParts", "/dev/null".as_ref()),
            ("Dir::State::Lists", dir.join("lists").as_os_str()),
            ("Dir::Cache", dir.as_os_str()),
            // The downloads land in our own folder, which apt's sandbox user cannot write.
            ("APT::Sandbox::User", "root".as_ref()),
        ] {
            let mut o = OsString::from(format!("{key}="));
            o.push(value);
            c.arg("-o").arg(o);
        }
        c.arg("-qq").args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let debs = dir.join("debs");
    for old in read_dir(&debs)? {
        std::fs::remove_file(&old).with_context(|| format!("remove {}", old.display()))?;
    }
    super::run(&mut apt(&["update"])).with_context(|| format!("apt-get update for {suite} from {mirror}"))?;
    super::run(apt(&["download", "containerd", "docker.io"]).current_dir(&debs))
        .with_context(|| format!("apt-get download containerd docker.io from {suite}"))?;
    let partial = dir.join("root.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("remove {}", partial.display()))?;
    }
    for deb in read_dir(&debs)? {
        super::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))
            .with_context(|| format!("dpkg -x {}", deb.display()))?;
    }
    tidy(&partial)?;
    let root = dir.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    }
    std::fs::rename(&partial, &root).with_context(|| format!("rename {} to root", partial.display()))?;
    if !root.join("usr/bin/containerd").is_file() {
        bail!("{suite}'s containerd package has no usr/bin/containerd");
    }
    Ok(())
}

/// Leave in the unpacked tree only what may come before the machine's commands on PATH:
/// never a runc (the machine's runs every generation; sid's needs a newer glibc), nor a
/// docker CLI (the machine's talks to every dockerd), nor a dangling link (docker-init points
/// to tini-static, another package: the machine's docker-init is found next on PATH).
fn tidy(root: &Path) -> anyhow::Result<()> {
    for d in ["usr/bin", "usr/sbin"] {
        for path in read_dir(&root.join(d))? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let dangling = path.symlink_metadata().is_ok() && !path.exists();
            if name == "runc" || name == "docker" || dangling {
                std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// The files in `dir` (none when it does not exist), sorted.
fn read_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("read {}", dir.display()))?;
    paths.sort();
    Ok(paths)
}

/// The Debian mirror the machine's apt already uses (its main archive, not the security one),
/// from /etc/apt/sources.list.d/debian.sources (deb822) or /etc/apt/sources.list.
fn mirror() -> anyhow::Result<String> {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URIs:"))
        .flat_map(str::split_whitespace);
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_list = list
        .lines()
        .filter_map(|l| l.trim().strip_prefix("deb "))
        .filter_map(|rest| rest.split_whitespace().find(|w| w.contains("://")));
    from_deb822
        .chain(from_list)
        .find(|uri| !uri.contains("security"))
        .map(|uri| uri.trim_end_matches('/').to_string())
        .context("no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for g in Generation::ALL {
            assert_eq!(g.to_string().parse::<Generation>(), Ok(g));
        }
        assert!("jessie".parse::<Generation>().unwrap_err().contains("jessie"));
    }

    #[test]
    fn tidy_drops_runc_docker_and_dangling_links() {
        let dir = std::env::temp_dir().join(format!("rtap-gen-tidy-{}", std::process::id()));
        let bin = dir.join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.join("usr/sbin")).unwrap();
        for f in ["containerd", "runc", "docker", "tini-real"] {
            std::fs::write(bin.join(f), "").unwrap();
        }
        std::os::unix::fs::symlink("tini-static", bin.join("docker-init")).unwrap();
        std::os::unix::fs::symlink("tini-real", bin.join("kept-link")).unwrap();
        tidy(&dir).unwrap();
        let left: Vec<_> = read_dir(&bin)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["containerd", "kept-link", "tini-real"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
