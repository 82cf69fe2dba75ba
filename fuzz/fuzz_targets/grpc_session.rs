//! The gRPC protocol session (`observe::grpc::GrpcSession`): decoder events to calls, with
//! schema extraction, payload capture and shedding, fed the record format. Properties: no
//! panic; every call started ends exactly once, after it started, even when the decoder gives
//! up or the session is dropped without `closed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_tap::observe::grpc::GrpcSession;
use runtime_tap::schema::Schema;

fuzz_target!(|input: &[u8]| {
    runtime_tap_fuzz::session::run(input, |ctx| Box::new(GrpcSession::new(ctx, Schema::builtin())));
});
