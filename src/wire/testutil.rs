//! Test support for the wire decoders: recorded captures (one connection per JSON-lines
//! file, see tests/fixtures/captures) as the sequence of chunks and closes the relay saw.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::Direction;

/// One record of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A chunk as read.
    Data(Vec<u8>),
    /// That side half-closed.
    Eof,
}

/// The capture folder of this crate (`tests/fixtures/captures`) joined with `rel`.
pub fn capture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captures")
        .join(rel)
}

/// Reads a capture file (`{"t":ns,"dir":"c2s"|"s2c","b64":...}` or
/// `{"dir":..,"eof":true}` per line). Panics on a malformed file: it is test data.
pub fn load_capture(path: &Path) -> Vec<(Direction, Segment)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read capture {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("capture {} line {line:?}: {e}", path.display()));
            let dir = match v["dir"].as_str() {
                Some("c2s") => Direction::ClientToServer,
                Some("s2c") => Direction::ServerToClient,
                other => panic!("capture {}: bad dir {other:?}", path.display()),
            };
            if v["eof"].as_bool() == Some(true) {
                return (dir, Segment::Eof);
            }
            let b64 = v["b64"]
                .as_str()
                .unwrap_or_else(|| panic!("capture {}: no b64 in {line:?}", path.display()));
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|e| panic!("capture {}: base64: {e}", path.display()));
            (dir, Segment::Data(data))
        })
        .collect()
}

/// The capture files of one folder under the capture folder, sorted by name.
pub fn capture_files(folder: &str) -> Vec<PathBuf> {
    let dir = capture_path(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}
