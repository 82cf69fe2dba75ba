//! The glue with the real hook: a capture replayed through the rewriter into a session the
//! way the relay and the observer do it; the calls take the injected identity.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::wire::Direction;
use crate::wire::testutil::{Segment, load_capture};

// ---- the sessions take the injected identity ----

#[derive(Default)]
struct Sink {
    started: std::sync::Mutex<Vec<crate::trace::call::CallStart>>,
    ended: std::sync::Mutex<Vec<crate::trace::call::Call>>,
}

impl crate::trace::call::CallSink for Sink {
    fn started(&self, call: &crate::trace::call::CallStart) {
        self.started.lock().unwrap().push(call.clone());
    }
    fn ended(&self, call: crate::trace::call::Call) {
        self.ended.lock().unwrap().push(call);
    }
    fn event(&self, _: crate::trace::call::StreamEvent) {}
}

/// Replay a capture through the rewriter into a session, the way the relay and the observer
/// do it: each injection announced before the rewritten chunk.
fn session_replay(rel: &str, http2: bool) -> (Arc<Sink>, Vec<Injection>) {
    use crate::observe::session::{Session, SessionCtx};
    use std::sync::Arc as A;
    let sink = A::new(Sink::default());
    let ctx = SessionCtx {
        conn: A::new(crate::trace::call::ConnMeta {
            id: 1,
            service: A::from("x"),
            transport: "unix",
            listen: String::new(),
            upstream: String::new(),
            client: None,
            server: None,
            capture_payloads: false,
        }),
        sink: sink.clone(),
        clock: crate::trace::call::Clock::new(),
        long_lived: Default::default(),
    };
    let mut session: Box<dyn Session> = if http2 {
        Box::new(crate::observe::grpc::GrpcSession::new(
            ctx,
            crate::schema::Schema::builtin(),
        ))
    } else {
        Box::new(crate::observe::http::HttpSession::new(ctx, A::default()))
    };
    let mut r = Rewriter::new(crate::trace::context::mint);
    let mut all = Vec::new();
    let at = std::time::Instant::now();
    for (dir, seg) in load_capture(&crate::wire::testutil::capture_path(rel)) {
        match (dir, seg) {
            (Direction::ClientToServer, Segment::Data(b)) => {
                let mut inj = Vec::new();
                let out = r.client_bytes(Bytes::from(b), &mut inj);
                for i in &inj {
                    session.injected(*i);
                }
                all.extend(inj);
                session.data(dir, at, out);
            }
            (Direction::ServerToClient, Segment::Data(b)) => {
                r.server_bytes(&b);
                session.data(dir, at, Bytes::from(b));
            }
            (_, Segment::Eof) => session.eof(dir, at),
        }
    }
    session.closed(at);
    (sink, all)
}

#[test]
fn sessions_use_the_injected_identity_not_a_remote_parent() {
    for (rel, http2) in [("ctr-run.jsonl", true), ("docker-cli/02-run-create-wait.jsonl", false)] {
        let (sink, injected) = session_replay(rel, http2);
        let started = sink.started.lock().unwrap();
        let ended = sink.ended.lock().unwrap();
        assert!(!injected.is_empty(), "{rel}");
        assert_eq!(started.len(), injected.len(), "{rel}: a call per request");
        for (call, i) in started.iter().zip(&injected) {
            assert_eq!(call.span_id, i.span_id, "{rel}");
            assert_eq!(call.own_trace, Some(i.trace_id), "{rel}");
            assert_eq!(call.remote_parent, None, "{rel}: our own traceparent is no parent");
        }
        for call in ended.iter() {
            let i = injected
                .iter()
                .find(|i| i.span_id == call.span_id)
                .expect("same span id at end");
            assert_eq!(call.own_trace, Some(i.trace_id));
            assert_eq!(call.remote_parent, None);
        }
    }
}
