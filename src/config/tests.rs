use super::*;

const EXAMPLE: &str = r#"
[[intercept]]
name = "containerd"
listen = "unix:///run/runtime-tap/containerd.sock"
upstream = "unix:///run/containerd/containerd.sock"

[[intercept]]
name = "dockerd"
listen = "tcp://127.0.0.1:2375"
upstream = "unix:///var/run/docker.sock"

[admin]
listen = "127.0.0.1:9464"
"#;

#[test]
fn parses_the_documented_schema() {
    let c = Config::parse(EXAMPLE, "x.toml").unwrap();
    assert_eq!(c.intercepts.len(), 2);
    assert_eq!(
        c.intercepts[0].listen,
        Endpoint::Unix("/run/runtime-tap/containerd.sock".into())
    );
    assert_eq!(c.intercepts[1].listen, Endpoint::Tcp("127.0.0.1:2375".into()));
    assert!(c.intercepts[0].decode);
    assert_eq!(c.relay.buffer_size, DEFAULT_BUFFER_SIZE);
    // The effective config round-trips.
    assert_eq!(Config::parse(&c.to_toml(), "y.toml").unwrap(), c);
}

fn err(text: &str) -> String {
    Config::parse(text, "bad.toml").unwrap_err().to_string()
}

#[test]
fn refuses_listen_equal_to_upstream() {
    let e = err("[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='unix:///x.sock'\n");
    assert!(e.starts_with("bad.toml: intercept[0].listen:"), "{e}");
    assert!(e.contains("also the upstream"), "{e}");
}

#[test]
fn refuses_two_intercepts_on_one_listen_address() {
    let e = err(
        "[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='unix:///y.sock'\n[[intercept]]\nname='b'\nlisten='unix:///x.sock'\nupstream='unix:///z.sock'\n",
    );
    assert!(e.starts_with("bad.toml: intercept[1].listen:"), "{e}");
}

#[test]
fn refuses_duplicate_names_bad_modes_and_unknown_keys() {
    let e = err(
        "[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='unix:///y.sock'\n[[intercept]]\nname='a'\nlisten='unix:///w.sock'\nupstream='unix:///z.sock'\n",
    );
    assert!(e.contains("intercept[1].name"), "{e}");
    let e = err("[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='unix:///y.sock'\nsocket_mode='0999'\n");
    assert!(e.contains("intercept[0].socket_mode") && e.contains("octal"), "{e}");
    let e = err("[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='unix:///y.sock'\nlisten_mode='0600'\n");
    assert!(e.starts_with("bad.toml:") && e.contains("listen_mode"), "{e}");
    let e = err("[[intercept]]\nname='a'\nlisten='x.sock'\nupstream='unix:///y.sock'\n");
    assert!(e.contains("listen") && e.contains("unix:///path"), "{e}");
    let e = err("[admin]\nlisten='127.0.0.1:9464'\n");
    assert!(e.contains("at least one [[intercept]]"), "{e}");
}

#[test]
fn endpoints_parse_and_print() {
    assert_eq!(
        "unix:///a/b.sock".parse::<Endpoint>().unwrap().to_string(),
        "unix:///a/b.sock"
    );
    assert_eq!(
        "tcp://localhost:2375".parse::<Endpoint>().unwrap(),
        Endpoint::Tcp("localhost:2375".into())
    );
    assert!("tcp://localhost".parse::<Endpoint>().is_err());
    assert!("unix://relative.sock".parse::<Endpoint>().is_err());
    assert_eq!(parse_mode("0660"), Ok(0o660));
}

/// A fresh directory with `real/` and `link -> real`, removed on drop.
struct Linked(PathBuf);

impl Linked {
    fn new(label: &str) -> Linked {
        let dir = std::env::temp_dir().join(format!("rtap-cfg-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        Linked(dir)
    }
    fn path(&self, rest: &str) -> String {
        self.0.join(rest).display().to_string()
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn one(name: &str, listen: &str, upstream: &str) -> String {
    format!("[[intercept]]\nname='{name}'\nlisten='unix://{listen}'\nupstream='unix://{upstream}'\n")
}

#[test]
fn refuses_listen_that_is_the_upstream_through_a_symlinked_directory() {
    // As /var/run -> /run: neither socket file exists yet.
    let d = Linked::new("link");
    let e = err(&one("a", &d.path("link/x.sock"), &d.path("real/x.sock")));
    assert!(e.starts_with("bad.toml: intercept[0].listen:"), "{e}");
    assert!(e.contains("also the upstream"), "{e}");
    assert!(
        e.contains(&d.path("real/x.sock")),
        "names the path both resolve to: {e}"
    );
}

#[test]
fn refuses_listen_that_is_the_upstream_through_dot_dot() {
    let d = Linked::new("dotdot");
    // `a` does not exist: bind would create it, then land on real/x.sock.
    let e = err(&one("a", &d.path("real/a/../x.sock"), &d.path("real/x.sock")));
    assert!(
        e.contains("intercept[0].listen") && e.contains("also the upstream"),
        "{e}"
    );
    let e = err(&one("a", &d.path("real/./x.sock"), &d.path("link/x.sock")));
    assert!(e.contains("also the upstream"), "{e}");
}

#[test]
fn refuses_two_intercepts_on_one_socket_through_a_symlink() {
    let d = Linked::new("two");
    let e = err(&(one("a", &d.path("link/t.sock"), &d.path("up1.sock"))
        + &one("b", &d.path("real/t.sock"), &d.path("up2.sock"))));
    assert!(e.starts_with("bad.toml: intercept[1].listen:"), "{e}");
    assert!(e.contains("another intercept"), "{e}");
}

#[test]
fn distinct_paths_stay_distinct() {
    let d = Linked::new("distinct");
    Config::parse(&one("a", &d.path("link/t.sock"), &d.path("real/u.sock")), "ok.toml").unwrap();
    assert_eq!(
        canonical_path(Path::new(&d.path("link/new/../t.sock"))),
        std::fs::canonicalize(&d.0).unwrap().join("real/t.sock")
    );
}

#[test]
fn refuses_socket_owner_and_group_that_do_not_exist() {
    let base = "[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='unix:///y.sock'\n";
    let e = err(&format!("{base}socket_owner='no-such-user-rtap'\n"));
    assert!(e.starts_with("bad.toml: intercept[0].socket_owner:"), "{e}");
    assert!(e.contains("no such user"), "{e}");
    let e = err(&format!("{base}socket_group='no-such-group-rtap'\n"));
    assert!(e.starts_with("bad.toml: intercept[0].socket_group:"), "{e}");
    Config::parse(&format!("{base}socket_owner='root'\nsocket_group='0'\n"), "ok.toml").unwrap();
}

#[test]
fn sizes_parse_with_binary_units() {
    assert_eq!(parse_size("256MiB"), Ok(256 << 20));
    assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("12MB").unwrap_err().contains("unknown unit"));
    assert!(parse_size("lots").is_err());
}
