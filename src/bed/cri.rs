//! A CRI (and generic gRPC) client built from proto/: request and response messages are the
//! descriptors runtime-tap embeds, encoded with prost-reflect from JSON, sent over one HTTP/2
//! connection with the h2 crate, as kubelet does over its unix socket. Used by the demo and
//! the tests; not part of the proxy.

use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::DynamicMessage;

use crate::schema::Schema;

/// A failed call: grpc-status and grpc-message (transport failures are UNAVAILABLE, 14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grpc-status {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

/// How the message of a call that never reached the server starts: the connection was going
/// away (GOAWAY) before the call was sent, or the server's GOAWAY refused its stream. grpc-go
/// (kubelet, dockerd) retries such calls transparently on a new connection; callers of this
/// client may do the same.
pub const UNPROCESSED: &str = "unprocessed: ";

impl Status {
    /// The call never reached the server (see [`UNPROCESSED`]): safe to retry.
    pub fn is_unprocessed(&self) -> bool {
        self.code == 14 && self.message.starts_with(UNPROCESSED)
    }
}

/// A stream error: unprocessed when the server's GOAWAY refused the stream (its id above the
/// GOAWAY's last stream id), else UNAVAILABLE.
fn refused_or(what: &str, e: h2::Error) -> Status {
    if e.is_go_away() && e.is_remote() {
        unprocessed(what, e)
    } else {
        unavailable(what, e)
    }
}

fn unprocessed(what: &str, e: impl std::fmt::Display) -> Status {
    Status {
        code: 14,
        message: format!("{UNPROCESSED}{what}: {e}"),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status {
        code: 14,
        message: format!("{what}: {e}"),
    }
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Status {
    Status {
        code: 3,
        message: format!("{what}: {e}"),
    }
}

pub struct GrpcClient {
    send: h2::client::SendRequest<Bytes>,
    schema: Schema,
}

impl GrpcClient {
    /// Connect over a unix socket and do the HTTP/2 handshake.
    ///
    /// # Errors
    /// UNAVAILABLE when the socket cannot be reached or the handshake fails.
    pub async fn connect(socket: &Path) -> Result<GrpcClient, Status> {
        let io = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let (send, conn) = h2::client::handshake(io)
            .await
            .map_err(|e| unavailable("h2 handshake", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(GrpcClient {
            send,
            schema: Schema::builtin(),
        })
    }

    /// Call `method` ("runtime.v1.RuntimeService/Version") with a request given as JSON
    /// (proto3 JSON mapping) and extra metadata; the response as JSON.
    ///
    /// # Errors
    /// The call's grpc-status when not OK; INVALID_ARGUMENT for a request that does not match
    /// the method's input type; UNAVAILABLE for transport failures.
    pub async fn unary(
        &mut self,
        method: &str,
        request: serde_json::Value,
        metadata: &[(&str, &str)],
    ) -> Result<serde_json::Value, Status> {
        let Some(reply) = self.server_stream(method, request, metadata).await?.into_iter().next() else {
            return Ok(serde_json::Value::Object(Default::default()));
        };
        serde_json::to_value(&reply).map_err(|e| invalid("response", e))
    }

    /// Call a unary or server-streaming `method`; every response message, decoded. For
    /// streams that carry bytes (Content/Read), the messages give them without a JSON detour.
    ///
    /// # Errors
    /// As [`unary`](Self::unary).
    pub async fn server_stream(
        &mut self,
        method: &str,
        request: serde_json::Value,
        metadata: &[(&str, &str)],
    ) -> Result<Vec<DynamicMessage>, Status> {
        let info = self
            .schema
            .method(&format!("/{method}"))
            .ok_or_else(|| invalid(method, "not a method in proto/"))?;
        let msg = DynamicMessage::deserialize(info.input.clone(), request).map_err(|e| invalid(method, e))?;
        let payload = msg.encode_to_vec();
        let mut frame = BytesMut::with_capacity(payload.len() + 5);
        frame.put_u8(0);
        frame.put_u32(payload.len() as u32);
        frame.put_slice(&payload);
        let mut req = http::Request::post(format!("http://localhost/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "runtime-tap-cri/1.0");
        for (k, v) in metadata {
            req = req.header(*k, *v);
        }
        let req = req.body(()).map_err(|e| invalid("request", e))?;
        let mut send = self.send.clone().ready().await.map_err(|e| unprocessed("h2", e))?;
        let (response, mut stream) = send.send_request(req, false).map_err(|e| unprocessed("send", e))?;
        stream
            .send_data(frame.freeze(), true)
            .map_err(|e| refused_or("send", e))?;
        let response = response.await.map_err(|e| refused_or("response", e))?;
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| unavailable("body", e))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| unavailable("trailers", e))?
            .unwrap_or_default();
        let get = |name: &str| {
            trailers
                .get(name)
                .or_else(|| headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code: u32 = get("grpc-status").and_then(|s| s.parse().ok()).unwrap_or(2);
        if code != 0 {
            return Err(Status {
                code,
                message: get("grpc-message").unwrap_or_default(),
            });
        }
        let mut data = data.freeze();
        let mut replies = Vec::new();
        while data.len() >= 5 {
            data.advance(1);
            let len = (data.get_u32() as usize).min(data.len());
            let reply =
                DynamicMessage::decode(info.output.clone(), data.split_to(len)).map_err(|e| invalid("response", e))?;
            replies.push(reply);
        }
        Ok(replies)
    }
}

/// Wait until the CRI plugin behind `socket` knows `image` (ImageStatus answers with it).
/// containerd fills the CRI image cache from the events of an import a few tens of
/// milliseconds after `ctr images import` returns (containerd 2.x, through the Transfer
/// service); a RunPodSandbox in between finds no sandbox image and tries to pull it.
///
/// # Errors
/// When the image is not known within `timeout`, with the last answer or failure.
pub async fn wait_for_image(socket: &Path, image: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let last = match GrpcClient::connect(socket).await {
            Ok(mut c) => c
                .unary(
                    "runtime.v1.ImageService/ImageStatus",
                    serde_json::json!({"image": {"image": image}}),
                    &[],
                )
                .await
                .map(|reply| reply.get("image").is_some_and(|i| !i.is_null())),
            Err(e) => Err(e),
        };
        match last {
            Ok(true) => return Ok(()),
            _ if start.elapsed() > timeout => {
                anyhow::bail!(
                    "the CRI plugin at {} did not know {image} within {timeout:?}: {last:?}",
                    socket.display()
                )
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
