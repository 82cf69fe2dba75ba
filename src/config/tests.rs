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
