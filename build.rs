//! Compiles every `.proto` under `proto/` (pure Rust, protox: no protoc) into one
//! `FileDescriptorSet` in `OUT_DIR`, which `src/schema/pool.rs` embeds with `include_bytes!`.
//! The well-known `google/protobuf/*.proto` files come built into protox.

use std::path::{Path, PathBuf};

/// Include root: import paths inside the files are relative to it.
const PROTO_ROOT: &str = "proto";
/// File name of the encoded set in `OUT_DIR`.
const OUT_FILE: &str = "runtime_tap_descriptors.bin";

fn main() {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut files = Vec::new();
    collect(Path::new(PROTO_ROOT), &mut files);
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let mut compiler = match protox::Compiler::new([PROTO_ROOT]) {
        Ok(c) => c,
        Err(e) => panic!("protox: cannot use include root {PROTO_ROOT}: {e:?}"),
    };
    compiler.include_imports(true).include_source_info(false);
    if let Err(e) = compiler.open_files(&files) {
        panic!("protox: cannot compile {PROTO_ROOT}/: {e:?}");
    }
    let set = compiler.encode_file_descriptor_set();

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(OUT_FILE);
    std::fs::write(&out, set).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// Every `.proto` file under `dir`, recursively.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|x| x == "proto") {
            out.push(path);
        }
    }
}
