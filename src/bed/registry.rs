//! The bed's private image registry: Debian's `docker-registry` (distribution 2.8) on a free
//! 127.0.0.1 port with its storage below the bed's directory, so that pulls are real (dockerd,
//! CRI PullImage, `ctr images pull`) on a machine with no other network. dockerd treats
//! 127.0.0.0/8 as plain HTTP by default; containerd is told so by a hosts.toml in the
//! `config_path` the bed's containerd config names (read at each pull, so it may be written
//! after containerd started).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use super::{Bed, READY_TIMEOUT, run, wait_until, which};

/// The folder, below the bed's directory, that containerd's registry `config_path` names.
pub(super) const HOSTS_DIR: &str = "certs.d";

/// A running registry the bed started.
pub(super) struct Registry {
    /// `127.0.0.1:PORT`.
    pub(super) host: String,
    pub(super) child: Child,
}

impl Bed {
    /// Start the private registry and wait until `GET /v2/` answers; write containerd's
    /// hosts.toml for it (plain HTTP). Returns its `127.0.0.1:PORT`. Does nothing more when it
    /// runs already.
    ///
    /// # Errors
    /// When `docker-registry` is not installed or does not answer in time.
    pub fn start_registry(&mut self) -> anyhow::Result<String> {
        if let Some(r) = &self.registry {
            return Ok(r.host.clone());
        }
        let exe = which("docker-registry").context("docker-registry is not installed")?;
        // A port the kernel just gave out is free; the registry binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let host = format!("127.0.0.1:{port}");
        let config = self.dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                self.dir.join("registry").display()
            ),
        )?;
        let log = std::fs::File::create(self.dir.join("registry.log"))?;
        let child = std::process::Command::new(exe)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        self.registry = Some(Registry {
            host: host.clone(),
            child,
        });
        wait_until(READY_TIMEOUT, "docker-registry", || {
            registry_get(&host, "/v2/", "").is_ok_and(|(status, _)| status == 200)
        })?;
        let hosts = self.dir.join(HOSTS_DIR).join(&host);
        std::fs::create_dir_all(&hosts)?;
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
            ),
        )?;
        Ok(host)
    }

    /// The private registry's `127.0.0.1:PORT`, once [`Bed::start_registry`] started it.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_ref().map(|r| r.host.as_str())
    }

    /// Tag the local image `local` as `REGISTRY/name` in the dockerd behind `socket` and push
    /// it to the private registry. Returns the pushed reference (`127.0.0.1:PORT/name`).
    ///
    /// # Errors
    /// When the registry is not started or the tag or push fails.
    pub fn push_image(&self, socket: &Path, local: &str, name: &str) -> anyhow::Result<String> {
        let host = self.registry().context("the bed's registry is not started")?;
        let reference = format!("{host}/{name}");
        run(self.docker(socket).args(["tag", local, &reference]))?;
        run(self.docker(socket).args(["push", &reference]))?;
        Ok(reference)
    }

    /// Make `bb:latest` (from [`Bed::make_images`]) into an image of two layers (a container
    /// that wrote a file, committed) and push it as `name` (say `two:1`). Returns the pushed
    /// reference.
    ///
    /// # Errors
    /// When a docker command fails.
    pub fn push_two_layer_image(&self, socket: &Path, name: &str) -> anyhow::Result<String> {
        let container = format!("rtap-two-layer-{}", std::process::id());
        let _ = run(self.docker(socket).args(["rm", "-f", &container]));
        run(self.docker(socket).args([
            "run",
            "--name",
            &container,
            "--network",
            "none",
            "bb:latest",
            "sh",
            "-c",
            "echo second layer > /layer2",
        ]))?;
        let local = format!("rtap-two-layer:{}", std::process::id());
        run(self.docker(socket).args(["commit", &container, &local]))?;
        run(self.docker(socket).args(["rm", "-f", &container]))?;
        let reference = self.push_image(socket, &local, name)?;
        run(self.docker(socket).args(["rmi", &local]))?;
        Ok(reference)
    }

    /// The compressed sizes of the layers of `name:tag` in the private registry, in manifest
    /// order, from its Docker v2 manifest (what a pull downloads).
    ///
    /// # Errors
    /// When the registry does not serve the manifest.
    pub fn registry_layer_sizes(&self, name: &str, tag: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let host = self.registry().context("the bed's registry is not started")?;
        let (status, body) = registry_get(
            host,
            &format!("/v2/{name}/manifests/{tag}"),
            "Accept: application/vnd.docker.distribution.manifest.v2+json\r\n",
        )?;
        anyhow::ensure!(status == 200, "manifest {name}:{tag}: HTTP {status}");
        let manifest: serde_json::Value = serde_json::from_slice(&body).context("manifest json")?;
        let layers = manifest["layers"].as_array().context("manifest has no layers")?;
        Ok(layers
            .iter()
            .filter_map(|l| Some((l["digest"].as_str()?.to_string(), l["size"].as_u64()?)))
            .collect())
    }

    /// Stop the registry, by its pid.
    pub(super) fn stop_registry(&mut self) {
        if let Some(mut r) = self.registry.take() {
            super::signal(&r.child, nix::sys::signal::Signal::SIGTERM);
            super::wait_timeout(&mut r.child, Duration::from_secs(5));
        }
    }

    /// The folder of containerd's registry host configs.
    pub(super) fn hosts_dir(dir: &Path) -> PathBuf {
        dir.join(HOSTS_DIR)
    }
}

/// `GET path` on `host` with HTTP/1.0 (so the body ends at close): status and body.
fn registry_get(host: &str, path: &str, headers: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{headers}\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of response head")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, buf[split + 4..].to_vec()))
}
