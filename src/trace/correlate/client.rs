//! Client spans (`[correlation] client_spans`): the client's side of a call, as a CLIENT span
//! in the client's own resource, for clients behind no other intercept (kubelet, docker, ctr).
//!
//! The rule it keeps: a CLIENT span is made only where the call's client is not the server of
//! an observed call it was placed under (entity, temporal, stream): there the caller's side is
//! already a span, the SERVER span of that other intercept. It has the call's name, start, end
//! and status; it takes the SERVER span's former parent (a `pod start` root, a remote
//! `traceparent`, or none) and becomes that span's parent. The SERVER span keeps its id: that
//! is the id propagation injects into the forwarded request, and the daemon's own spans belong
//! under the server's side of the call, so injection is the same with client spans on or off.
//! Service graphs then see CLIENT(kubelet) -> SERVER(containerd), CLIENT(docker) ->
//! SERVER(dockerd), and SERVER(dockerd) -> SERVER(containerd) parent-child across resources.

use opentelemetry_semantic_conventions::attribute::{
    HTTP_REQUEST_METHOD, HTTP_ROUTE, NETWORK_TRANSPORT, RPC_METHOD, RPC_SYSTEM_NAME, SERVER_ADDRESS,
};

use super::pod::{client_name, client_service};
use super::*;

/// The SERVER span's attributes a CLIENT span repeats: what was called, where, and by whom.
const CLIENT_ATTRIBUTES: &[&str] = &[
    RPC_SYSTEM_NAME,
    RPC_METHOD,
    HTTP_REQUEST_METHOD,
    HTTP_ROUTE,
    NETWORK_TRANSPORT,
    SERVER_ADDRESS,
    names::CLIENT_PID,
    names::CLIENT_EXECUTABLE,
];

/// Whether the call of `node` gets a CLIENT span: its client is known by name (else the span
/// would be in the server's own resource) and the call hangs under no observed call of another
/// intercept: a root (an ambiguous one too), a pod member, or under a remote `traceparent`.
pub(super) fn wants_client_span(node: &Node) -> bool {
    client_name(&node.conn).is_some() && matches!(node.parent, None | Some((_, Link::Pod)))
}

/// The CLIENT span above `server`, which becomes its child. `conn` is the call's connection.
pub(super) fn client_span(server: &mut SpanRecord, conn: &ConnMeta) -> SpanRecord {
    let span_id = new_span_id();
    let parent = server.parent.replace(ParentRef { span_id, remote: false });
    let attributes = server
        .attributes
        .iter()
        .filter(|a| CLIENT_ATTRIBUTES.contains(&&*a.key))
        .cloned()
        .collect();
    SpanRecord {
        trace_id: server.trace_id,
        span_id,
        parent,
        trace_state: server.trace_state.clone(),
        name: server.name.clone(),
        kind: SpanKind::Client,
        start: server.start,
        end: server.end,
        attributes,
        events: Vec::new(),
        links: Vec::new(),
        status: server.status.clone(),
        service: client_service(conn),
    }
}
