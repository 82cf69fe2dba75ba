//! Protobuf decoding against the built-in CRI/containerd descriptors: attribute extraction
//! (`schema::extract`) and payload rendering (`schema::render_json`) of arbitrary bytes as the
//! request or response of any method in the pool.
//! Input: two bytes pick the method (index into every method of every service, sorted), one
//! byte the side (bit 0) and the render cap (bits 1-7, in 8-byte units; 0 = 64 KiB), then the
//! payload. Properties: no panic; the rendering is within the cap and is valid JSON (or empty).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runtime_tap::schema::{self, MethodInfo, Schema, Side};

fn methods() -> &'static (Schema, Vec<MethodInfo>) {
    static M: OnceLock<(Schema, Vec<MethodInfo>)> = OnceLock::new();
    M.get_or_init(|| {
        let schema = Schema::builtin();
        let paths = runtime_tap_fuzz::method_paths(&schema);
        let infos = paths
            .iter()
            .map(|p| {
                schema
                    .method(p)
                    .unwrap_or_else(|| panic!("pool method {p} not found by path"))
            })
            .collect();
        (schema, infos)
    })
}

fuzz_target!(|input: &[u8]| {
    let (schema, methods) = methods();
    let Some((head, payload)) = input.split_first_chunk::<3>() else {
        return;
    };
    let method = &methods[usize::from(u16::from_be_bytes([head[0], head[1]])) % methods.len()];
    let side = if head[2] & 1 == 0 {
        Side::Request
    } else {
        Side::Response
    };
    let cap = match usize::from(head[2] >> 1) {
        0 => 64 * 1024,
        n => n * 8,
    };

    let mut attrs = Vec::new();
    if schema::extract(schema, method, side, payload, &mut attrs).is_err() {
        assert!(attrs.is_empty(), "attributes added from a payload that did not decode");
    }

    let json = schema::render_json(schema, method.message(side), payload, cap);
    assert!(json.len() <= cap, "rendered {} bytes over the cap {cap}", json.len());
    if !json.is_empty() {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
            panic!("rendering is not valid JSON ({e}): {json}");
        }
    }
});
