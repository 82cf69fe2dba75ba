//! Builds the seed corpora `fuzz/corpus/<target>/seed-*` from the recorded captures
//! (`tests/fixtures/captures/*.jsonl`, `docker-cli/*.jsonl`), the shipped configs and the
//! Docker route table. Idempotent: rewrites its own `seed-*` files, leaves what the fuzzer
//! found alone. Usage: `build-seeds [corpus-dir]` (default: `fuzz/corpus`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use runtime_tap::schema::{Schema, docker};
use runtime_tap::wire::Direction;
use runtime_tap::wire::grpc::{GrpcDecoder, GrpcEvent};
use runtime_tap::wire::h1::{H1Decoder, H1Event};
use runtime_tap::wire::h2::frame::{FrameHeader, FrameType, PREFACE, flags};
use runtime_tap_fuzz::{push_chunk, push_eof};

// cargo-fuzz instruments every binary of this crate for coverage, so this one must link
// libFuzzer's runtime too (its hooks and counters). It keeps its own `main`: the linker then
// never pulls libFuzzer's, and this no-op target is never run.
libfuzzer_sys::fuzz_target!(|_unused: &[u8]| {});

type Capture = Vec<(Direction, Option<Vec<u8>>)>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(path: &Path) -> Capture {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("capture line is json");
            let dir = match v["dir"].as_str() {
                Some("c2s") => Direction::ClientToServer,
                Some("s2c") => Direction::ServerToClient,
                other => panic!("{}: bad dir {other:?}", path.display()),
            };
            if v["eof"].as_bool() == Some(true) {
                return (dir, None);
            }
            let b64 = v["b64"].as_str().expect("b64");
            (
                dir,
                Some(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")),
            )
        })
        .collect()
}

fn captures(folder: &str) -> Vec<(String, Capture)> {
    let dir = repo().join("tests/fixtures/captures").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), load(&p)))
        .collect()
}

/// The capture in the record format, stopping after `max` bytes of records.
fn encode(cap: &Capture, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (dir, seg) in cap {
        if out.len() >= max {
            break;
        }
        match seg {
            Some(b) => push_chunk(&mut out, *dir, b),
            None => push_eof(&mut out, *dir),
        }
    }
    out
}

struct Corpus {
    root: PathBuf,
    counts: BTreeMap<&'static str, usize>,
}

impl Corpus {
    fn put(&mut self, target: &'static str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        *self.counts.entry(target).or_default() += 1;
    }
}

fn with_selector(selector: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(body);
    v
}

/// Header blocks of one direction of an HTTP/2 capture, in order.
fn header_blocks(stream: &[u8], client: bool) -> Vec<Vec<u8>> {
    let mut pos = if client { PREFACE.len() } else { 0 };
    let mut blocks = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    while let Some(h) = stream.get(pos..pos + 9) {
        let hdr = FrameHeader::parse(h.try_into().unwrap());
        let Some(payload) = stream.get(pos + 9..pos + 9 + hdr.len as usize) else {
            break;
        };
        pos += 9 + hdr.len as usize;
        let frag = match hdr.kind {
            FrameType::Headers => {
                let mut p = payload;
                let mut pad = 0;
                if hdr.has(flags::PADDED) {
                    pad = usize::from(p[0]);
                    p = &p[1..];
                }
                if hdr.has(flags::PRIORITY) {
                    p = &p[5..];
                }
                p[..p.len() - pad].to_vec()
            }
            FrameType::Continuation => payload.to_vec(),
            _ => continue,
        };
        let mut b = pending.take().unwrap_or_default();
        b.extend_from_slice(&frag);
        if hdr.has(flags::END_HEADERS) {
            blocks.push(b);
        } else {
            pending = Some(b);
        }
    }
    blocks
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut corpus = Corpus {
        root,
        counts: BTreeMap::new(),
    };
    let grpc = captures("");
    let docker_cli = captures("docker-cli");

    // Methods as the protobuf target numbers them.
    let schema = Schema::builtin();
    let paths = runtime_tap_fuzz::method_paths(&schema);

    let mut per_method: BTreeMap<(usize, u8), usize> = BTreeMap::new();
    for (name, cap) in &grpc {
        let full = encode(cap, usize::MAX);
        let head = encode(cap, 4096);
        for target in ["h2_conn", "grpc", "grpc_session"] {
            corpus.put(target, &format!("{name}-full"), &with_selector(0, &full));
            corpus.put(target, &format!("{name}-head"), &with_selector(0, &head));
        }
        corpus.put("grpc", &format!("{name}-small-limits"), &with_selector(1, &head));
        corpus.put("grpc", &format!("{name}-shed"), &with_selector(2, &head));
        corpus.put("grpc_session", &format!("{name}-capture"), &with_selector(1, &head));
        corpus.put("relay", &format!("{name}"), &with_selector(0x0e, &encode(cap, 2048)));
        corpus.put("rewrite", &format!("{name}"), &encode(cap, 16384));

        // HPACK: each direction's header blocks, in order, while they fit a record.
        for (dir, client) in [(Direction::ClientToServer, true), (Direction::ServerToClient, false)] {
            let bytes: Vec<u8> = cap
                .iter()
                .filter(|(d, _)| *d == dir)
                .filter_map(|(_, b)| b.clone())
                .flatten()
                .collect();
            let mut seed = vec![0u8];
            for b in header_blocks(&bytes, client) {
                if b.len() > 254 {
                    break;
                }
                seed.push(b.len() as u8);
                seed.extend_from_slice(&b);
            }
            corpus.put("hpack", &format!("{name}-{}", dir.as_str()), &seed);
        }

        // Protobuf: the messages, as the method and side the target numbers.
        let mut dec = GrpcDecoder::new(Default::default());
        let mut events = Vec::new();
        for (dir, seg) in cap {
            match seg {
                Some(b) => dec.feed(*dir, b, &mut events),
                None => dec.eof(*dir, &mut events),
            }
        }
        let mut method_of = BTreeMap::new();
        for e in events {
            let (stream, side, msg) = match e {
                GrpcEvent::RequestHeaders { stream, headers } => {
                    if let Some(i) = headers.get(":path").and_then(|p| paths.iter().position(|x| x == p)) {
                        method_of.insert(stream, i);
                    }
                    continue;
                }
                GrpcEvent::RequestMessage { stream, message } => (stream, 0u8, message),
                GrpcEvent::ResponseMessage { stream, message } => (stream, 1u8, message),
                _ => continue,
            };
            let (Some(&m), Some(data)) = (method_of.get(&stream), msg.data) else {
                continue;
            };
            let n = per_method.entry((m, side)).or_default();
            if *n >= 3 {
                continue;
            }
            *n += 1;
            let mut seed = (m as u16).to_be_bytes().to_vec();
            seed.push(side);
            seed.extend_from_slice(&data);
            corpus.put("protobuf", &format!("{name}-{m}-{side}-{n}"), &seed);
        }
    }

    let methods = ["GET", "POST", "PUT", "DELETE", "HEAD"];
    for (name, cap) in &docker_cli {
        let full = encode(cap, usize::MAX);
        corpus.put("h1", &format!("{name}"), &with_selector(0, &full));
        corpus.put("h1", &format!("{name}-small-limits"), &with_selector(1, &full));
        corpus.put("http_session", &format!("{name}"), &with_selector(0, &full));
        corpus.put("http_session", &format!("{name}-capture"), &with_selector(1, &full));
        corpus.put("relay", &format!("{name}"), &with_selector(0x0e, &encode(cap, 2048)));
        corpus.put("rewrite", &format!("{name}"), &encode(cap, 16384));
        let mut dec = H1Decoder::default();
        let mut events = Vec::new();
        for (dir, seg) in cap {
            match seg {
                Some(b) => dec.feed(*dir, b, &mut events),
                None => dec.eof(*dir, &mut events),
            }
        }
        for (k, e) in events.iter().enumerate() {
            if let H1Event::RequestHead { method, target, .. } = e {
                let m = methods.iter().position(|x| x == method).unwrap_or(0) as u8;
                let mut seed = vec![m];
                seed.extend_from_slice(target.as_bytes());
                corpus.put("docker_route", &format!("{name}-{k}"), &seed);
            }
        }
    }
    for (k, (method, route)) in docker::routes().enumerate() {
        let path: String = route
            .split('/')
            .map(|s| if s.starts_with('{') { "abc123" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let m = methods.iter().position(|x| *x == method).unwrap_or(0) as u8;
        corpus.put(
            "docker_route",
            &format!("route-{k}"),
            &[&[m][..], b"/v1.41", path.as_bytes()].concat(),
        );
    }

    let config_dir = repo().join("deploy/config");
    for e in std::fs::read_dir(&config_dir).expect("deploy/config") {
        let p = e.expect("entry").path();
        let text = std::fs::read(&p).expect("read config");
        corpus.put("config", &p.file_name().unwrap().to_string_lossy(), &text);
    }
    corpus.put(
        "config",
        "minimal.toml",
        b"[[intercept]]\nname='a'\nlisten='unix:///x.sock'\nupstream='tcp://127.0.0.1:1'\ncapture_payloads=true\nsocket_mode='0660'\n[relay]\ntap_queue=8\n[export]\nheaders={k='v'}\nfile='/tmp/spans.jsonl'\n",
    );

    // grpc_frames scripts: op, split, args (see the target).
    let scripts: &[(&str, &[u8])] = &[
        (
            "unary",
            &[
                0, 0, 0x00, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 5, 0, 0, 2, 3, 0, 0, 3, 0, 0, 0, 3, 1, 2, 3,
                4, 0, 0,
            ],
        ),
        (
            "gzip",
            &[
                0, 5, 0x22, 1, 9, 0, 0x05, 8, 1, 2, 3, 4, 5, 6, 7, 8, 2, 0, 0, 2, 3, 0, 0, 0x03, 4, 9, 8, 7, 6, 5, 4,
                0, 0,
            ],
        ),
        (
            "deflate-continuation",
            &[
                0, 3, 0x3b, 1, 1, 0, 0x07, 6, 0, 0, 0, 0, 0, 0, 8, 1, 0, 5, 2, 0, 0, 6, 0, 0,
            ],
        ),
        (
            "streams",
            &[
                0, 0, 1, 0, 0, 2, 1, 0, 0, 0, 3, 1, 2, 3, 1, 0, 1, 0, 2, 9, 9, 7, 0, 4, 0, 1, 4, 0, 0,
            ],
        ),
        ("raw", &[0, 0, 0, 9, 1, 4, 0, 0, 0, 0]),
    ];
    for (name, s) in scripts {
        corpus.put("grpc_frames", name, s);
    }

    for (target, n) in &corpus.counts {
        println!("{target}: {n} seeds");
    }
}
