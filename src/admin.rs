//! The admin endpoint: /healthz (the process is up), /readyz (every listener is bound and
//! accepting) and /metrics (Prometheus text). Served by hyper on its own listener, loopback by
//! default, from start to exit: through the grace period /readyz answers 503 (draining) while
//! /metrics still shows the connections that finish.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Registry;

/// Bind the admin listener. Bound before the intercepts so a port clash fails the start
/// before any socket file is created.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve admin requests until `stop` is cancelled (at exit, after the grace period).
pub async fn serve(listener: TcpListener, registry: Registry, stop: CancellationToken) {
    let mut errors = crate::relay::accept::AcceptErrors::new();
    let listen = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => {
                    errors.accepted("admin", listen.as_str());
                    a
                }
                Err(e) => {
                    errors.failed("admin", listen.as_str(), &e);
                    errors.backoff().await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(route(&req, &registry)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if registry.ready() => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: a listener is not accepting (starting, or draining after a stop signal)\n".into(),
        ),
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", registry.render()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
