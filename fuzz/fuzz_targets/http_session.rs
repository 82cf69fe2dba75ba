//! The Docker HTTP session (`observe::http::HttpSession`): HTTP/1.1 events to calls, routes,
//! ids, redaction, `/events` streams, hijacked attach/exec, fed the record format.
//! Properties: no panic; every call started ends exactly once, after it started, even when the
//! decoder gives up or the session is dropped without `closed`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use runtime_tap::observe::docker_ids::DockerIds;
use runtime_tap::observe::http::HttpSession;

fuzz_target!(|input: &[u8]| {
    runtime_tap_fuzz::session::run(input, |ctx| Box::new(HttpSession::new(ctx, Arc::new(DockerIds::new()))));
});
