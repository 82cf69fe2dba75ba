//! Replaying recorded connections (tests/fixtures/captures) through a real runtime-tap: the
//! test client writes the recorded client chunks, a fake upstream answers with the recorded
//! server chunks, each side waiting for the other's bytes that came before its own in the
//! recording, so the proxy sees the recorded order. Both sides keep what they received, for
//! byte-exact checks.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

/// Where the recorded captures are.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/captures");

/// One step of a recorded connection, in recorded order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Bytes from the client (`c2s = true`) or from the server.
    Data { c2s: bool, bytes: Vec<u8> },
    /// That side half-closed.
    Eof { c2s: bool },
}

/// A recorded connection.
#[derive(Clone, Debug)]
pub struct Recording {
    pub name: String,
    pub steps: Vec<Step>,
}

impl Recording {
    /// Load `tests/fixtures/captures/<name>`.
    pub fn load(name: &str) -> Recording {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap();
        let steps = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let c2s = v["dir"].as_str() == Some("c2s");
                if v["eof"].as_bool() == Some(true) {
                    Step::Eof { c2s }
                } else {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v["b64"].as_str().unwrap())
                        .unwrap();
                    Step::Data { c2s, bytes }
                }
            })
            .collect();
        Recording {
            name: name.to_string(),
            steps,
        }
    }

    /// Every recorded capture: the top-level files and docker-cli/.
    pub fn all() -> Vec<Recording> {
        let mut names = Vec::new();
        for sub in ["", "docker-cli/"] {
            let dir = Path::new(FIXTURES).join(sub);
            for e in std::fs::read_dir(dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if name.ends_with(".jsonl") {
                    names.push(format!("{sub}{name}"));
                }
            }
        }
        names.sort();
        names.iter().map(|n| Recording::load(n)).collect()
    }

    /// A connection made of client and server bytes given here (for crafted requests).
    pub fn exchange(name: &str, pairs: &[(&[u8], &[u8])]) -> Recording {
        let mut steps = Vec::new();
        for (req, resp) in pairs {
            steps.push(Step::Data {
                c2s: true,
                bytes: req.to_vec(),
            });
            steps.push(Step::Data {
                c2s: false,
                bytes: resp.to_vec(),
            });
        }
        Recording {
            name: name.to_string(),
            steps,
        }
    }

    /// All bytes one side sent.
    pub fn sent(&self, c2s: bool) -> Vec<u8> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Data { c2s: d, bytes } if *d == c2s => Some(bytes.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }
}

/// What each side received in one replay.
pub struct Received {
    /// What the fake upstream read (should equal the recorded client bytes).
    pub by_server: Vec<u8>,
    /// What the client read (should equal the recorded server bytes).
    pub by_client: Vec<u8>,
}

/// Play one side of `rec` on `stream`: write own chunks in order, before each waiting until
/// the peer's bytes recorded before it have arrived; then half-close and read to the end.
fn play(mut stream: UnixStream, rec: &Recording, as_client: bool) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut expected = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut shut = false;
    for step in &rec.steps {
        match step {
            Step::Data { c2s, bytes } if *c2s == as_client => {
                while got.len() < expected {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("{}: waiting for peer bytes: {e}", rec.name),
                    }
                }
                if !shut {
                    stream.write_all(bytes).unwrap();
                }
            }
            Step::Data { bytes, .. } => expected += bytes.len(),
            Step::Eof { c2s } if *c2s == as_client => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                shut = true;
            }
            Step::Eof { .. } => {}
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{}: reading to the end: {e}", rec.name),
        }
    }
    got
}

/// Replay `rec` through the proxy listening at `listen`, whose upstream is `upstream`
/// (a listener the test bound): one connection, both sides played, what each received.
pub fn replay(upstream: &UnixListener, listen: &Path, rec: &Recording) -> Received {
    let server_side = upstream.try_clone().unwrap();
    let server_rec = rec.clone();
    let server = std::thread::spawn(move || {
        let (stream, _) = server_side.accept().unwrap();
        play(stream, &server_rec, false)
    });
    let by_client = play(super::connect(listen), rec, true);
    let by_server = server.join().unwrap();
    Received { by_server, by_client }
}

/// Replay `rec` and assert both directions arrived byte-exact.
pub fn replay_exact(upstream: &UnixListener, listen: &Path, rec: &Recording) {
    let got = replay(upstream, listen, rec);
    assert!(
        got.by_server == rec.sent(true),
        "{}: client bytes changed on the way",
        rec.name
    );
    assert!(
        got.by_client == rec.sent(false),
        "{}: server bytes changed on the way",
        rec.name
    );
}
