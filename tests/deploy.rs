//! Everything in deploy/ is checked here, so none of it rots: runtime-tap configs pass
//! `check-config`; systemd units and drop-ins pass `systemd-analyze verify` and agree with the
//! configs (names, paths, access); Kubernetes manifests, the Collector config and the compose
//! file parse and have the right shape; and the socket-activated service keeps every new
//! connection through restarts, launched by `systemd-socket-activate` as the units would.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runtime_tap::config::{Config, Endpoint};
use runtime_tap::schema::grpc_status;
use serde_yaml_ng::Value;
use support::proc::plain;
use support::{TempDir, echo_server};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path, keep));
        } else if keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn check_config(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime-tap"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// runtime-tap configs

#[test]
fn every_deploy_config_passes_check_config() {
    let configs = files_under(&deploy(), &|p| p.extension().is_some_and(|e| e == "toml"));
    for path in &configs {
        check_config(path);
    }
    assert!(configs.len() >= 4, "{configs:?}");
    // The configs the Kubernetes installer writes onto nodes are copies of deploy/config/
    // (kustomize reads files below its own directory only): checked above, and kept equal.
    let installer = &generated_config_maps()["runtime-tap-config"];
    let mut n = 0;
    for (key, path) in installer {
        if key.ends_with(".toml") {
            assert_eq!(
                std::fs::read_to_string(path).unwrap(),
                std::fs::read_to_string(deploy().join("config").join(key)).unwrap(),
                "{} differs from deploy/config/{key}",
                path.display()
            );
            n += 1;
        }
    }
    assert_eq!(
        n, 2,
        "containerd-node.toml and docker-node.toml in the installer ConfigMap"
    );
}

// ---------------------------------------------------------------------------------------
// systemd units

/// A unit file as (section, key, value) in order; repeated keys stay repeated.
fn unit_entries(path: &Path) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else {
            let (k, v) = line.split_once('=').expect("key=value");
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// All values of `section.key`, space-separated lists split.
fn unit_values(entries: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .flat_map(|(_, _, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// The single value of `section.key`.
fn unit_value(entries: &[(String, String, String)], section: &str, key: &str) -> String {
    let all: Vec<_> = entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .collect();
    assert_eq!(all.len(), 1, "{section}.{key}: {all:?}");
    all[0].clone()
}

const LAYOUTS: [&str; 2] = ["repoint", "takeover"];

/// The configs of each layout (deploy/config/) and the socket unit of each intercept.
fn layout_configs(layout: &str) -> [&'static str; 2] {
    match layout {
        "repoint" => ["containerd-node.toml", "docker-node.toml"],
        _ => ["containerd-node-takeover.toml", "docker-node-takeover.toml"],
    }
}

fn unix_path(e: &Endpoint) -> &Path {
    match e {
        Endpoint::Unix(p) => p,
        Endpoint::Tcp(a) => panic!("expected a unix socket, got tcp://{a}"),
    }
}

/// Stand-ins for the vendor units the drop-ins extend (as Debian ships them, abridged).
fn vendor_unit(name: &str, bin: &Path) -> String {
    match name {
        "containerd.service" => format!(
            "[Unit]\nDescription=containerd\n[Service]\nExecStart={}\nType=notify\nDelegate=yes\nKillMode=process\nRestart=always\n[Install]\nWantedBy=multi-user.target\n",
            bin.join("containerd").display()
        ),
        "docker.service" => format!(
            "[Unit]\nDescription=Docker\nAfter=docker.socket containerd.service\nRequires=docker.socket\n[Service]\nType=notify\nEnvironmentFile=-/etc/default/docker\nExecStart={} -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS\n[Install]\nWantedBy=multi-user.target\n",
            bin.join("dockerd").display()
        ),
        "docker.socket" => "[Unit]\nDescription=Docker Socket for the API\n[Socket]\nListenStream=/run/docker.sock\nSocketMode=0660\nSocketUser=root\nSocketGroup=docker\n[Install]\nWantedBy=sockets.target\n".to_string(),
        "kubelet.service" => format!(
            "[Unit]\nDescription=kubelet\n[Service]\nExecStart={}\nRestart=always\n[Install]\nWantedBy=multi-user.target\n",
            bin.join("kubelet").display()
        ),
        other => panic!("no stand-in for {other}: add one"),
    }
}

/// Lay out one layout's units in a temp dir as they would sit in /etc/systemd/system, with
/// ExecStart programs pointing at files that exist here (the built runtime-tap, stand-ins for
/// the daemons). Returns the unit files to verify and every file that came from deploy/.
fn lay_out_units(layout: &str, dir: &TempDir) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let units = dir.path("units");
    let bin = dir.path("bin");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    for daemon in ["containerd", "dockerd", "kubelet"] {
        let p = bin.join(daemon);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rewrite = |text: &str| {
        text.replace(
            "ExecStart=/usr/local/bin/runtime-tap ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_runtime-tap")),
        )
        .replace(
            "ExecStart=containerd ",
            &format!("ExecStart={}/containerd ", bin.display()),
        )
        .replace("ExecStart=dockerd ", &format!("ExecStart={}/dockerd ", bin.display()))
    };
    let mut top = Vec::new();
    let mut ours = Vec::new();
    let mut copy = |from: &Path, to: PathBuf| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, rewrite(&std::fs::read_to_string(from).unwrap())).unwrap();
        ours.push(to);
    };
    copy(
        &deploy().join("systemd/runtime-tap.service"),
        units.join("runtime-tap.service"),
    );
    top.push(units.join("runtime-tap.service"));
    for entry in std::fs::read_dir(deploy().join("systemd").join(layout)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(extended) = name.strip_suffix(".d") {
            for conf in std::fs::read_dir(&path).unwrap() {
                let conf = conf.unwrap().path();
                assert!(conf.extension().is_some_and(|e| e == "conf"), "{}", conf.display());
                copy(&conf, units.join(&name).join(conf.file_name().unwrap()));
            }
            let vendor = units.join(extended);
            std::fs::write(&vendor, vendor_unit(extended, &bin)).unwrap();
            top.push(vendor);
        } else {
            copy(&path, units.join(&name));
            top.push(units.join(&name));
        }
    }
    // docker.service's drop-in needs docker.socket to load it.
    if top.iter().any(|p| p.ends_with("docker.service")) && !top.iter().any(|p| p.ends_with("docker.socket")) {
        let p = units.join("docker.socket");
        std::fs::write(&p, vendor_unit("docker.socket", &bin)).unwrap();
        top.push(p);
    }
    top.sort();
    (top, ours)
}

fn systemd_analyze_verify(units: &[PathBuf]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether a systemd tool the test needs is there. tests/run installs Debian's systemd
/// package, so a missing tool is a failure, not a silent pass; on a machine without it set
/// RUNTIME_TAP_SKIP_SYSTEMD=1 to skip these tests knowingly.
fn need_systemd_tool(program: &str) -> bool {
    if have(program) {
        return true;
    }
    let skip = std::env::var("RUNTIME_TAP_SKIP_SYSTEMD").is_ok_and(|v| v == "1");
    assert!(
        skip,
        "{program} is not installed (Debian: systemd; tests/run installs it). \
         Set RUNTIME_TAP_SKIP_SYSTEMD=1 to skip the systemd tests."
    );
    eprintln!("{program} not installed, RUNTIME_TAP_SKIP_SYSTEMD=1: skipped");
    false
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !need_systemd_tool("systemd-analyze") {
        return;
    }
    for layout in LAYOUTS {
        let dir = TempDir::new(&format!("verify-{layout}"));
        let (units, ours) = lay_out_units(layout, &dir);
        let (ok, text) = systemd_analyze_verify(&units);
        // Unknown keys and sections are only warnings to systemd: any word about our files
        // is a failure here.
        let about_ours: Vec<&str> = text.lines().filter(|l| l.contains(&*dir.0.to_string_lossy())).collect();
        assert!(ok && about_ours.is_empty(), "{layout}: systemd-analyze verify:\n{text}");

        // The check is real: a misspelt directive in any one of the files is reported.
        for file in &ours {
            let good = std::fs::read_to_string(file).unwrap();
            std::fs::write(file, format!("{good}\nSockeMode=0600\n")).unwrap();
            let (_, text) = systemd_analyze_verify(&units);
            assert!(
                text.contains("Unknown key") && text.contains(&*file.to_string_lossy()),
                "a typo in {} went unnoticed:\n{text}",
                file.display()
            );
            std::fs::write(file, good).unwrap();
        }
    }
}

/// The service's capability bounding set is what deploy/README.md's privilege table names,
/// and `systemd-analyze security` scores it no worse than the exposure the README records.
#[test]
fn service_capabilities_follow_the_privilege_table_and_security_scores_it() {
    if !need_systemd_tool("systemd-analyze") {
        return;
    }
    let readme = std::fs::read_to_string(deploy().join("README.md")).unwrap();
    let privileges = readme.split("## Privileges").nth(1).expect("a Privileges section");
    let named: BTreeSet<&str> = privileges
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("CAP_") && *w != "CAP_DAC_")
        .collect();
    let unit = std::fs::read_to_string(deploy().join("systemd/runtime-tap.service")).unwrap();
    let bounding: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .collect();
    assert_eq!(bounding.len(), 1, "one CapabilityBoundingSet= line: {bounding:?}");
    let caps: BTreeSet<&str> = bounding[0].split_whitespace().collect();
    assert_eq!(
        caps, named,
        "the bounding set and the README's privilege table disagree"
    );

    let dir = TempDir::new("security");
    let (units, _) = lay_out_units("repoint", &dir);
    let service = units.iter().find(|u| u.ends_with("runtime-tap.service")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=50"])
        .arg(service)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze security:\n{text}");
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for runtime-tap.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let recorded: f64 = privileges
        .lines()
        .find_map(|l| l.strip_prefix("| now | "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the README records the exposure (| now | X.Y ...)");
    eprintln!("exposure {score} (README: {recorded})");
    assert!(
        score <= recorded,
        "exposure {score} is worse than the {recorded} deploy/README.md records:\n{text}"
    );
}

#[test]
fn socket_units_match_the_configs_and_the_daemons_access() {
    // Access of the daemon sockets the intercepts stand in for (DESIGN.md invariant 7).
    let access = BTreeMap::from([
        ("containerd", ("0660", "root", "root")),
        ("dockerd", ("0660", "root", "docker")),
    ]);
    for layout in LAYOUTS {
        let dir = deploy().join("systemd").join(layout);
        let sockets: BTreeMap<String, Vec<(String, String, String)>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "socket"))
            .map(|p| {
                let e = unit_entries(&p);
                (unit_value(&e, "Socket", "FileDescriptorName"), e)
            })
            .collect();
        assert_eq!(
            sockets.keys().collect::<Vec<_>>(),
            ["containerd", "dockerd"],
            "{layout}"
        );
        for config in layout_configs(layout) {
            let config = Config::load(&deploy().join("config").join(config)).unwrap();
            for i in &config.intercepts {
                let unit = sockets
                    .get(&i.name)
                    .unwrap_or_else(|| panic!("{layout}: no socket unit with FileDescriptorName={}", i.name));
                let what = format!("{layout} {}", i.name);
                assert_eq!(
                    Path::new(&unit_value(unit, "Socket", "ListenStream")),
                    unix_path(&i.listen),
                    "{what}"
                );
                let (mode, user, group) = access[i.name.as_str()];
                assert_eq!(unit_value(unit, "Socket", "SocketMode"), mode, "{what}");
                assert_eq!(unit_value(unit, "Socket", "SocketUser"), user, "{what}");
                assert_eq!(unit_value(unit, "Socket", "SocketGroup"), group, "{what}");
                assert_eq!(unit_value(unit, "Socket", "Service"), "runtime-tap.service", "{what}");
                // Listening before every client that connects to it: kubelet (CRI) and dockerd
                // (--containerd) to containerd's; cri-dockerd (and kubelet, which starts
                // after it) to dockerd's.
                let before = unit_values(unit, "Unit", "Before");
                let clients: &[&str] = match i.name.as_str() {
                    "containerd" => &["docker.service", "kubelet.service"],
                    "dockerd" => &["cri-docker.service", "kubelet.service"],
                    other => panic!("no clients known for intercept {other}"),
                };
                for client in clients {
                    assert!(
                        before.contains(&client.to_string()),
                        "{what}: Before= lacks {client}: {before:?}"
                    );
                }
                assert_eq!(unit_values(unit, "Install", "WantedBy"), ["sockets.target"], "{what}");
                assert_eq!(
                    unit_values(unit, "Install", "RequiredBy"),
                    ["runtime-tap.service"],
                    "{what}"
                );
            }
        }
    }
    // The takeover's private daemon sockets are where the drop-ins move the daemons.
    let takeover = Config::load(&deploy().join("config/docker-node-takeover.toml")).unwrap();
    let upstream = |name: &str| {
        let i = takeover.intercepts.iter().find(|i| i.name == name).unwrap();
        unix_path(&i.upstream).to_path_buf()
    };
    let t = deploy().join("systemd/takeover");
    let containerd = unit_values(
        &unit_entries(&t.join("containerd.service.d/runtime-tap.conf")),
        "Service",
        "ExecStart",
    );
    let at = containerd.iter().position(|w| w == "--address").expect("--address");
    assert_eq!(Path::new(&containerd[at + 1]), upstream("containerd"));
    let docker_socket = unit_entries(&t.join("docker.socket.d/runtime-tap.conf"));
    let listen: Vec<_> = docker_socket
        .iter()
        .filter(|(_, k, _)| k == "ListenStream")
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(
        listen,
        ["", upstream("dockerd").to_str().unwrap()],
        "reset, then the private path"
    );
    let config = Config::load(&deploy().join("config/containerd-node-takeover.toml")).unwrap();
    assert_eq!(unix_path(&config.intercepts[0].upstream), upstream("containerd"));
    // Re-pointing: dockerd's --containerd is runtime-tap's containerd socket.
    let repoint = Config::load(&deploy().join("config/docker-node.toml")).unwrap();
    let docker = unit_values(
        &unit_entries(&deploy().join("systemd/repoint/docker.service.d/runtime-tap.conf")),
        "Service",
        "ExecStart",
    );
    let flag = format!("--containerd={}", unix_path(&repoint.intercepts[0].listen).display());
    assert!(docker.contains(&flag), "{docker:?} lacks {flag}");

    // The service: simple, restarted on failure, after its upstream only (ordering it after
    // dockerd or kubelet would deadlock: they wait for containerd through runtime-tap).
    let svc = unit_entries(&deploy().join("systemd/runtime-tap.service"));
    assert_eq!(unit_value(&svc, "Service", "Type"), "simple");
    assert_eq!(
        unit_value(&svc, "Service", "ExecStart"),
        "/usr/local/bin/runtime-tap run --config /etc/runtime-tap/config.toml"
    );
    assert_eq!(unit_value(&svc, "Service", "Restart"), "on-failure");
    let after = unit_values(&svc, "Unit", "After");
    assert!(after.contains(&"containerd.service".into()));
    for client in ["docker.service", "kubelet.service", "cri-docker.service"] {
        assert!(
            !after.contains(&client.into()),
            "runtime-tap.service must not start after {client}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes manifests, Collector config, compose file

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The ConfigMaps kustomization.yaml generates: name -> key -> the file it is read from.
fn generated_config_maps() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let dir = deploy().join("kubernetes");
    let k = &yaml_docs(&dir.join("kustomization.yaml"))[0];
    let mut out = BTreeMap::new();
    for g in k["configMapGenerator"].as_sequence().expect("configMapGenerator") {
        let name = g["name"].as_str().unwrap().to_string();
        let mut files = BTreeMap::new();
        for f in g["files"].as_sequence().unwrap() {
            let f = f.as_str().unwrap();
            // `key=path`, or `path` whose key is its file name.
            let (key, path) = match f.split_once('=') {
                Some((key, path)) => (key.to_string(), path),
                None => (Path::new(f).file_name().unwrap().to_string_lossy().into_owned(), f),
            };
            assert!(dir.join(path).is_file(), "{name}: {path} is missing");
            files.insert(key, dir.join(path));
        }
        out.insert(name, files);
    }
    out
}

fn manifest_doc(file: &str, kind: &str, name: &str) -> Value {
    yaml_docs(&deploy().join("kubernetes").join(file))
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file}: no {kind} {name}"))
}

#[test]
fn every_yaml_file_parses() {
    let files = files_under(&deploy(), &|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        assert!(!yaml_docs(f).is_empty(), "{}: empty", f.display());
    }
}

#[test]
fn kubernetes_manifests_have_the_right_kinds_and_fit_together() {
    let dir = deploy().join("kubernetes");
    let mut docs = Vec::new();
    // collector/ holds Collector configs (ConfigMap contents), not manifests.
    let collector = dir.join("collector");
    for f in files_under(&dir, &|p| {
        p.extension().is_some_and(|e| e == "yaml") && !p.starts_with(&collector)
    }) {
        for d in yaml_docs(&f) {
            let (api, kind) = (d["apiVersion"].as_str(), d["kind"].as_str());
            assert!(
                api.is_some() && kind.is_some(),
                "{}: a document without apiVersion/kind",
                f.display()
            );
            docs.push(d);
        }
    }
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["DaemonSet", "Deployment", "Service", "Namespace"] {
        assert!(kinds.contains(kind), "no {kind} in deploy/kubernetes: {kinds:?}");
    }
    let api = |kind: &str| match kind {
        "DaemonSet" | "Deployment" => "apps/v1",
        "Kustomization" => "kustomize.config.k8s.io/v1beta1",
        _ => "v1",
    };
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        assert_eq!(d["apiVersion"].as_str(), Some(api(kind)), "{kind}");
    }
    let kustomize = docs.iter().find(|d| d["kind"] == "Kustomization").unwrap();
    for r in kustomize["resources"].as_sequence().unwrap() {
        assert!(
            dir.join(r.as_str().unwrap()).exists(),
            "kustomization lists missing {r:?}"
        );
    }

    // Every ConfigMap is generated with a content hash in its name, so a changed file is a
    // changed pod template and the workload rolls; one written out in a manifest would not
    // roll anything when edited, and the hash could be turned off for all of them.
    assert!(
        !docs.iter().any(|d| d["kind"] == "ConfigMap"),
        "a ConfigMap in a manifest: generate it in kustomization.yaml instead"
    );
    assert!(
        kustomize["generatorOptions"]["disableNameSuffixHash"].as_bool() != Some(true),
        "the hash suffix is what rolls the workloads"
    );
    let generated = generated_config_maps();
    let config_maps: BTreeSet<&str> = generated.keys().map(String::as_str).collect();
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
        .collect();
    for w in &workloads {
        let name = w["metadata"]["name"].as_str().unwrap();
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for (k, v) in w["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(
                &labels[k.as_str().unwrap()],
                v,
                "{name}: selector does not match the pod labels"
            );
        }
        for v in w["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(config_maps.contains(cm), "{name} mounts missing ConfigMap {cm}");
            }
        }
    }
    for s in docs.iter().filter(|d| d["kind"] == "Service") {
        let name = s["metadata"]["name"].as_str().unwrap();
        let selected = workloads.iter().any(|w| {
            s["spec"]["selector"]
                .as_mapping()
                .unwrap()
                .iter()
                .all(|(k, v)| &w["spec"]["template"]["metadata"]["labels"][k.as_str().unwrap()] == v)
        });
        assert!(selected, "Service {name} selects no workload");
    }

    // The installer: privileged, host PID, the host paths it writes, units that exist.
    let ds = manifest_doc("runtime-tap-installer.yaml", "DaemonSet", "runtime-tap-installer");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    let init = &pod["initContainers"][0];
    assert_eq!(init["securityContext"]["privileged"].as_bool(), Some(true));
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from(["/usr/local/bin", "/etc/systemd/system", "/etc/runtime-tap"])
    );
    let install_sh = &generated_config_maps()["runtime-tap-config"]["install.sh"];
    let script = &std::fs::read_to_string(install_sh).unwrap();
    let syntax = Command::new("sh").arg("-n").arg(install_sh).output().unwrap();
    assert!(
        syntax.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    assert!(script.contains("nsenter -t 1 -m -u -i -n -p --"));
    // Type=simple: `systemctl restart` returns once the process is forked, so the script must
    // wait and then see the same process active with no automatic restart in between, and
    // fail (stopping the rollout) otherwise.
    let after_restart = &script[script
        .find("systemctl restart runtime-tap.service")
        .expect("restarts the service")..];
    let health = &script[script.find("healthy() {").expect("a health check")..];
    for needle in ["NRestarts", "MainPID", "ActiveState", "sleep \"$settle\""] {
        assert!(health.contains(needle), "the health check lacks {needle}");
    }
    assert!(
        after_restart.contains("if ! healthy; then") && after_restart.contains("exit 1"),
        "install.sh must check the restarted service and fail when it is not healthy"
    );
    assert!(
        after_restart.contains("mv -f \"$bin.old\" \"$bin\""),
        "a failed update puts the previous binary back"
    );
    let settle: u64 = script
        .split("RUNTIME_TAP_SETTLE_SECONDS:-")
        .nth(1)
        .and_then(|r| r.split('}').next())
        .and_then(|n| n.parse().ok())
        .expect("a default settle time");
    let restart_sec: u64 = unit_value(
        &unit_entries(&deploy().join("systemd/runtime-tap.service")),
        "Service",
        "RestartSec",
    )
    .parse()
    .unwrap();
    assert!(
        settle >= 3 * restart_sec,
        "settle {settle}s must outlast a few RestartSec={restart_sec}s crash cycles"
    );
    assert!(
        script.contains("check-config"),
        "the config is checked before it replaces the old one"
    );
    for unit in [
        "runtime-tap.service",
        "runtime-tap-containerd.socket",
        "runtime-tap-dockerd.socket",
    ] {
        assert!(script.contains(unit), "install.sh does not install {unit}");
    }
    assert!(
        script.contains("$src/systemd/repoint/$s")
            && deploy().join("systemd/repoint/runtime-tap-dockerd.socket").exists()
    );
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY deploy/systemd /opt/runtime-tap/systemd"));
    assert!(dockerfile.contains("/opt/runtime-tap/bin/runtime-tap"));
}

/// `kubectl kustomize DIR` (kustomize built into kubectl), as `kubectl apply -k` renders it.
fn kustomize_build(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The ConfigMap names each workload's pod template mounts, as rendered.
fn mounted_config_maps(docs: &[Value]) -> BTreeMap<String, Vec<String>> {
    docs.iter()
        .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
        .map(|w| {
            let names = w["spec"]["template"]["spec"]["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|v| v["configMap"]["name"].as_str().map(str::to_string))
                .collect();
            (w["metadata"]["name"].as_str().unwrap().to_string(), names)
        })
        .collect()
}

#[test]
fn editing_a_config_map_file_rolls_its_workload() {
    // deploy/README.md: "Updating the image or a ConfigMap's file rolls through the nodes".
    // A DaemonSet rolls when its pod template changes; the generated ConfigMap's name (with
    // its content hash) is in the template, so an edited file must change that name.
    if !have("kubectl") {
        eprintln!("kubectl not installed: kustomize output not checked (the structure is, above)");
        return;
    }
    let tmp = TempDir::new("deploy-kustomize");
    let copy = tmp.path("kubernetes");
    let status = Command::new("cp")
        .arg("-r")
        .arg(deploy().join("kubernetes"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let before = mounted_config_maps(&kustomize_build(&copy));
    let rendered_cms: BTreeSet<String> = kustomize_build(&copy)
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for (name, files) in generated_config_maps() {
        // Rendered with a hash suffix, and that is the name the workloads mount.
        let hashed: Vec<_> = rendered_cms
            .iter()
            .filter(|n| n.strip_prefix(&format!("{name}-")).is_some_and(|h| !h.is_empty()))
            .collect();
        assert_eq!(hashed.len(), 1, "{name}: {rendered_cms:?}");
        let users: Vec<_> = before.iter().filter(|(_, cms)| cms.contains(hashed[0])).collect();
        assert!(!users.is_empty(), "no workload mounts {}", hashed[0]);

        // One file edited: the workloads that mount it now mount another name; others not.
        let (_, file) = files.iter().next().unwrap();
        let rel = file.strip_prefix(deploy().join("kubernetes")).unwrap();
        let edited = copy.join(rel);
        let text = std::fs::read_to_string(&edited).unwrap();
        std::fs::write(&edited, format!("{text}\n# edited\n")).unwrap();
        let after = mounted_config_maps(&kustomize_build(&copy));
        for (workload, cms) in &before {
            let changed = after[workload] != *cms;
            let mounts = cms.contains(hashed[0]);
            assert_eq!(
                changed,
                mounts,
                "{workload}: editing {} changed its pod template: {changed}, it mounts {name}: {mounts}",
                rel.display()
            );
        }
        std::fs::write(&edited, text).unwrap();
    }
}

/// A Collector duration ("30s", "500ms", "2m").
fn duration(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        _ => panic!("duration {s:?}"),
    }
}

fn collector_config(name: &str) -> Value {
    let path = &generated_config_maps()[name]["config.yaml"];
    yaml_docs(path).remove(0)
}

/// Every component a pipeline names is defined (a Collector refuses to start otherwise).
fn check_pipelines(name: &str, c: &Value) {
    for (pipeline, p) in c["service"]["pipelines"].as_mapping().unwrap() {
        for section in ["receivers", "processors", "exporters"] {
            for component in p[section].as_sequence().into_iter().flatten() {
                let id = component.as_str().unwrap();
                assert!(
                    c[section].get(id).is_some(),
                    "{name}: pipeline {pipeline:?} uses undefined {section}.{id}"
                );
            }
        }
    }
    for ext in c["service"]["extensions"].as_sequence().into_iter().flatten() {
        assert!(
            c["extensions"].get(ext.as_str().unwrap()).is_some(),
            "{name}: extension {ext:?}"
        );
    }
}

#[test]
fn collector_keeps_slow_and_failed_traces_and_waits_for_late_spans() {
    let gateway = collector_config("otel-collector");
    check_pipelines("otel-collector", &gateway);
    let traces = &gateway["service"]["pipelines"]["traces"];
    assert!(
        traces["processors"]
            .as_sequence()
            .unwrap()
            .contains(&Value::from("tail_sampling"))
    );
    let ts = &gateway["processors"]["tail_sampling"];
    let wait = duration(ts["decision_wait"].as_str().unwrap());
    // Longer than the time runtime-tap may hold a child's span for its parent, with margin.
    assert!(
        wait >= runtime_tap::trace::correlate::MAX_EXPORT_DELAY * 2,
        "decision_wait {wait:?} must well exceed runtime-tap's export delay"
    );
    let policies = ts["policies"].as_sequence().unwrap();
    let of_type = |t: &str| {
        policies
            .iter()
            .find(|p| p["type"] == t)
            .unwrap_or_else(|| panic!("no {t} policy"))
    };
    assert!(
        of_type("status_code")["status_code"]["status_codes"]
            .as_sequence()
            .unwrap()
            .contains(&Value::from("ERROR"))
    );
    // The Collector's "slow" is runtime-tap's own default slow threshold, so a trace
    // runtime-tap kept for being slow is not then dropped as ordinary.
    assert_eq!(
        of_type("latency")["latency"]["threshold_ms"].as_u64(),
        Some(runtime_tap::trace::sample::DEFAULT_SLOW.as_millis() as u64),
        "latency policy threshold vs runtime-tap's [sampling] slow_ms default"
    );
    // A baseline share of ordinary traces, so successful pod starts and docker runs reach
    // Jaeger too: neither none nor all.
    let pct = of_type("probabilistic")["probabilistic"]["sampling_percentage"]
        .as_f64()
        .expect("probabilistic.sampling_percentage");
    assert!(pct > 0.0 && pct < 100.0, "baseline sampling_percentage {pct}");
    let names: BTreeSet<&str> = policies.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names.len(), policies.len(), "policy names must be unique: {names:?}");
    // Its exporter reaches the Jaeger Service; the agents reach the gateway's Service, and
    // listen where the configs in deploy/ export to.
    let service_port = |host_port: &str| {
        let (host, port) = host_port.rsplit_once(':').unwrap();
        let name = host.split('.').next().unwrap();
        let file = if name == "jaeger" {
            "jaeger.yaml"
        } else {
            "otel-collector.yaml"
        };
        let svc = manifest_doc(file, "Service", name);
        let port: u64 = port.parse().unwrap();
        assert!(
            svc["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == Some(port)),
            "Service {name} has no port {port}"
        );
    };
    service_port(gateway["exporters"]["otlp/jaeger"]["endpoint"].as_str().unwrap());
    let agent = collector_config("otel-agent");
    check_pipelines("otel-agent", &agent);
    service_port(agent["exporters"]["otlp"]["endpoint"].as_str().unwrap());
    assert_eq!(
        agent["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("127.0.0.1:4317")
    );
    let ds = manifest_doc("otel-collector.yaml", "DaemonSet", "otel-agent");
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"].as_bool(), Some(true));
    for config in files_under(&deploy().join("config"), &|p| {
        p.extension().is_some_and(|e| e == "toml")
    }) {
        let c = Config::load(&config).unwrap();
        assert_eq!(
            c.export.endpoint.as_deref(),
            Some("http://127.0.0.1:4317"),
            "{}",
            config.display()
        );
    }
}

#[test]
fn compose_file_runs_jaeger_with_otlp() {
    let docs = yaml_docs(&deploy().join("compose/docker-compose.yml"));
    let jaeger = &docs[0]["services"]["jaeger"];
    assert!(
        jaeger["image"]
            .as_str()
            .unwrap()
            .starts_with("jaegertracing/all-in-one:")
    );
    assert_eq!(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"].as_str(), Some("true"));
    let ports: Vec<&str> = jaeger["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for port in ["16686", "4317", "4318"] {
        assert!(
            ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "port {port}: {ports:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Socket activation with the units' own settings

/// What a socket unit sets: (FileDescriptorName, ListenStream, SocketMode).
fn socket_unit(path: &Path) -> (String, PathBuf, u32) {
    let e = unit_entries(path);
    let mode = u32::from_str_radix(&unit_value(&e, "Socket", "SocketMode"), 8).unwrap();
    (
        unit_value(&e, "Socket", "FileDescriptorName"),
        PathBuf::from(unit_value(&e, "Socket", "ListenStream")),
        mode,
    )
}

/// The deploy config with its paths moved into `dir` (`/run/x/y.sock` -> `dir/run-x-y.sock`).
fn relocated(config: &Path, dir: &TempDir) -> (String, BTreeMap<PathBuf, PathBuf>) {
    let c = Config::load(config).unwrap();
    let mut text = std::fs::read_to_string(config).unwrap();
    let mut moved = BTreeMap::new();
    for i in &c.intercepts {
        for p in [unix_path(&i.listen), unix_path(&i.upstream)] {
            let to = dir.path(&p.to_string_lossy().trim_start_matches('/').replace('/', "-"));
            text = text.replace(
                &format!("\"unix://{}\"", p.display()),
                &format!("\"unix://{}\"", to.display()),
            );
            moved.insert(p.to_path_buf(), to);
        }
    }
    text = text.replace("listen = \"127.0.0.1:9464\"", "listen = \"off\"");
    let spans = dir.path("spans.jsonl");
    text = text.replace(
        "endpoint = \"http://127.0.0.1:4317\"",
        &format!("file = \"{}\"", spans.display()),
    );
    text.push_str("\n[relay]\ngrace_period_secs = 1\n");
    (text, moved)
}

fn wait_log(log: &Path, what: &str) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no {what:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn call(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"call")?;
    s.shutdown(Shutdown::Write)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got)
}

fn stop(child: &mut Child) -> Option<i32> {
    support::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok().and_then(|s| s.code())
}

#[test]
fn socket_activation_as_systemd_socket_activate_does_it() {
    if !need_systemd_tool("systemd-socket-activate") {
        return;
    }
    // The repoint containerd unit and config: systemd-socket-activate binds the unit's path
    // (moved into a temp dir), waits for the first connection, then execs runtime-tap with the
    // listener as descriptor 3 named like FileDescriptorName=.
    let dir = TempDir::new("deploy-ssa");
    let (name, listen, _) = socket_unit(&deploy().join("systemd/repoint/runtime-tap-containerd.socket"));
    let (config, moved) = relocated(&deploy().join("config/containerd-node.toml"), &dir);
    std::fs::write(dir.path("config.toml"), &config).unwrap();
    echo_server(&moved[Path::new("/run/containerd/containerd.sock")]);
    let sock = moved[&listen].clone();
    let log = dir.path("tap.log");
    let mut child = Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", sock.display()))
        .arg(format!("--fdname={name}"))
        .args(["-E", "RUST_LOG"])
        .arg(env!("CARGO_BIN_EXE_runtime-tap"))
        .args(["run", "--config"])
        .arg(dir.path("config.toml"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // runtime-tap is not running yet: this first call waits in the socket's queue.
    assert_eq!(call(&sock).unwrap(), b"call");
    wait_log(&log, "handed over by the service manager");
    for _ in 0..5 {
        assert_eq!(call(&sock).unwrap(), b"call");
    }
    // systemd-socket-activate became runtime-tap (exec), so the socket ends with it: it cannot
    // show a restart. The next test keeps the socket as systemd does.
    assert_eq!(stop(&mut child), Some(0));
}

/// Start runtime-tap the way a socket unit does, through systemd-socket-activate: the
/// listener (held by the test, as systemd holds it) is passed in as LISTEN_FDS, and
/// systemd-socket-activate passes it on in place, names it, waits for a connection and execs.
fn activate(listener: &UnixListener, name: &str, config: &Path, log: &Path) -> Child {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    nix::fcntl::fcntl(listener, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "export LISTEN_PID=$$ LISTEN_FDS=1; unset LISTEN_FDNAMES; exec systemd-socket-activate --fdname={name} -E RUST_LOG '{}' run --config '{}' 3<&{fd}",
            env!("CARGO_BIN_EXE_runtime-tap"),
            config.display()
        ))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn socket_activated_service_restarts_without_a_refused_connection() {
    if !need_systemd_tool("systemd-socket-activate") {
        return;
    }
    // The takeover containerd unit and config: the path clients already use.
    let dir = TempDir::new("deploy-restart");
    let (name, listen, mode) = socket_unit(&deploy().join("systemd/takeover/runtime-tap-containerd.socket"));
    let (config, moved) = relocated(&deploy().join("config/containerd-node-takeover.toml"), &dir);
    std::fs::write(dir.path("config.toml"), &config).unwrap();
    echo_server(&moved[Path::new("/run/containerd/containerd-real.sock")]);
    let sock = moved[&listen].clone();
    // The socket unit's part: bind with SocketMode=, keep it across service restarts.
    let listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(mode)).unwrap();

    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop_flag = stop_flag.clone();
        let sock = sock.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                match call(&sock) {
                    Ok(got) if got == b"call" => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    let mut logs = Vec::new();
    let mut child = None;
    for round in 0..3 {
        // `systemctl restart runtime-tap.service`: SIGTERM, exit, start again; meanwhile the
        // client's new connections wait in the socket.
        if let Some(mut old) = child.take() {
            assert_eq!(stop(&mut old), Some(0));
            assert!(sock.exists(), "runtime-tap removed a handed-over socket");
        }
        let log = dir.path(&format!("tap-{round}.log"));
        child = Some(activate(&listener, &name, &dir.path("config.toml"), &log));
        wait_log(&log, "handed over by the service manager");
        std::thread::sleep(Duration::from_millis(300));
        logs.push(log);
    }
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert_eq!(stop(&mut child.unwrap()), Some(0));
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert!(ok > 10, "only {ok} calls");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        mode,
        "a handed-over socket is never chmodded"
    );
    for log in logs {
        let text = plain(&std::fs::read_to_string(&log).unwrap());
        assert!(
            text.contains(&format!("handed over by the service manager fd=3 name={name}")),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Grafana dashboard

/// A Docker-like upstream: answers every HTTP/1.1 request head with `200 OK`, or `500` for
/// paths starting with /fail, one request per connection.
fn http_upstream(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                if head.starts_with(b"PRI * HTTP/2.0") {
                    // The HTTP/2 connection of real_metrics_render: read it to its end.
                    let _ = std::io::copy(&mut conn, &mut std::io::sink());
                    return;
                }
                let status = if head.starts_with(b"GET /fail") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            });
        }
    });
}

/// A real /metrics render with a series of every family the dashboard needs: one intercept,
/// an HTTP call answered 200 and one answered 500, and an HTTP/2 connection whose decoding
/// is given up (a frame larger than any SETTINGS allow).
fn real_metrics_render() -> String {
    let dir = TempDir::new("deploy-grafana");
    let (listen, upstream) = (dir.path("tap.sock"), dir.path("daemon.sock"));
    http_upstream(&upstream);
    let admin = format!("127.0.0.1:{}", support::free_port());
    let config = format!(
        "{}\n[export]\nfile = \"{}\"\n",
        support::one_intercept("dockerd", &listen, &upstream, &admin),
        dir.path("spans.jsonl").display()
    );
    let tap = support::Tap::start(&dir.0, &config);
    for path in ["/_ping", "/fail"] {
        let mut s = UnixStream::connect(&listen).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 "), "{got}");
    }
    let mut h2 = UnixStream::connect(&listen).unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
    bytes.extend_from_slice(&[0u8; 64]);
    h2.write_all(&bytes).unwrap();
    let start = Instant::now();
    loop {
        let (_, body) = tap.admin_get("/metrics");
        let has = |series: &str| body.lines().any(|l| l.starts_with(series));
        if has("runtime_tap_call_duration_seconds_count{") && has("runtime_tap_decoder_give_ups_total{") {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no call or decoder give-up series on /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Series name -> the label names it carries, from a Prometheus text render.
fn series_labels(render: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in render.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let series = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let set = out.entry(name.to_string()).or_default();
        for pair in labels.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
            set.insert(pair.split_once('=').unwrap().0.to_string());
        }
    }
    out
}

/// Labels a PromQL expression uses: `by (...)` / `without (...)` groupings and selector
/// matchers `{label=...}`, with the metric each selector belongs to (None for groupings).
fn expr_labels(expr: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for kw in ["by (", "without ("] {
        for part in expr.split(kw).skip(1) {
            for l in part.split(')').next().unwrap().split(',') {
                out.push((None, l.trim().to_string()));
            }
        }
    }
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let metric: String = rest[..open]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let close = open + rest[open..].find('}').unwrap();
        // Grafana's `{{legend}}` does not occur in expressions; `$__rate_interval` is in [].
        for m in rest[open + 1..close].split(',') {
            let label: String = m
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((Some(metric.clone()), label));
        }
        rest = &rest[close + 1..];
    }
    out
}

/// Whether PromQL's fully anchored regex `re` matches `value`, for the subset the dashboard
/// may use: alternatives of literal characters and `.`.
fn promql_matches(re: &str, value: &str) -> bool {
    re.split('|').any(|alt| {
        assert!(
            alt.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
            "status regex {re:?}: only alternatives of literals and . are understood here"
        );
        alt.len() == value.len() && alt.chars().zip(value.chars()).all(|(a, v)| a == '.' || a == v)
    })
}

#[test]
fn grafana_dashboard_queries_metrics_runtime_tap_serves() {
    let path = deploy().join("grafana/runtime-tap-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let served = series_labels(&real_metrics_render());
    let mut status_matchers = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("panel {title:?} has no targets")) {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            // Every metric it names is a series runtime-tap renders.
            let metrics: BTreeSet<String> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("runtime_tap_"))
                .map(str::to_string)
                .collect();
            assert!(
                !metrics.is_empty(),
                "panel {title:?} queries no runtime-tap metric: {expr}"
            );
            for m in &metrics {
                assert!(served.contains_key(m), "panel {title:?}: {m} is not on /metrics");
            }
            // Every label it groups or filters by is on those metrics.
            for (metric, label) in expr_labels(expr) {
                let on: Vec<&String> = match &metric {
                    Some(m) => vec![m],
                    None => metrics.iter().collect(),
                };
                for m in on {
                    assert!(
                        served[m].contains(&label) || (label == "le" && m.ends_with("_bucket")),
                        "panel {title:?}: {m} has no label {label:?} (it has {:?})",
                        served[m]
                    );
                }
            }
            if expr.contains("status") {
                let re = expr
                    .split("status=~\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_else(|| panic!("panel {title:?}: filter status with =~\"...\": {expr}"));
                status_matchers.push((title.to_string(), re.to_string()));
            }
        }
    }
    // The error panel counts what spans mark Error (DESIGN.md span contract): gRPC's
    // server-error codes (src/schema/grpc_status.rs) and HTTP 5xx; not NOT_FOUND,
    // ALREADY_EXISTS or a 404, which are answers, not failures.
    assert!(!status_matchers.is_empty(), "no panel shows errors");
    let server_errors: Vec<&str> = grpc_status::SERVER_ERRORS
        .iter()
        .map(|&c| grpc_status::name(c))
        .collect();
    let values = grpc_status::NAMES
        .iter()
        .map(|s| s.to_string())
        .chain((100..600).map(|c: u32| c.to_string()))
        .chain(["incomplete", "unset", "other"].map(String::from));
    for (title, re) in &status_matchers {
        for v in values.clone() {
            let error = server_errors.contains(&v.as_str()) || v.starts_with('5') && v.len() == 3;
            assert_eq!(
                promql_matches(re, &v),
                error,
                "panel {title:?}: status {v} counted as an error: {}, span status Error: {error}",
                promql_matches(re, &v)
            );
        }
    }
}
