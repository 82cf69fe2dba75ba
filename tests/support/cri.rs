//! A CRI (and generic gRPC) client built from proto/: request and response messages are the
//! descriptors runtime-tap embeds, encoded with prost-reflect from JSON, sent over one HTTP/2
//! connection per client with the h2 crate, as kubelet does over its unix socket.

use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use runtime_tap::schema::Schema;

/// A failed call: grpc-status and grpc-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

pub struct GrpcClient {
    send: h2::client::SendRequest<Bytes>,
    schema: Schema,
}

impl GrpcClient {
    pub async fn connect(socket: &Path) -> GrpcClient {
        let io = tokio::net::UnixStream::connect(socket).await.expect("connect");
        let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        GrpcClient {
            send,
            schema: Schema::builtin(),
        }
    }

    /// Call `method` ("runtime.v1.RuntimeService/Version") with a request given as JSON
    /// (proto3 JSON mapping) and extra metadata; the response as JSON.
    pub async fn unary(
        &mut self,
        method: &str,
        request: serde_json::Value,
        metadata: &[(&str, &str)],
    ) -> Result<serde_json::Value, Status> {
        let info = self
            .schema
            .method(&format!("/{method}"))
            .unwrap_or_else(|| panic!("{method} not in proto/"));
        let msg = DynamicMessage::deserialize(info.input.clone(), request).expect("request matches the proto");
        let payload = msg.encode_to_vec();
        let mut frame = BytesMut::with_capacity(payload.len() + 5);
        frame.put_u8(0);
        frame.put_u32(payload.len() as u32);
        frame.put_slice(&payload);
        let mut req = http::Request::post(format!("http://localhost/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "runtime-tap-test-cri/1.0");
        for (k, v) in metadata {
            req = req.header(*k, *v);
        }
        let send = self.send.clone();
        let mut send = send.ready().await.expect("h2 ready");
        let (response, mut stream) = send.send_request(req.body(()).unwrap(), false).expect("send request");
        stream.send_data(frame.freeze(), true).expect("send body");
        let response = response.await.expect("response");
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
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
        if data.len() < 5 {
            return Ok(serde_json::Value::Object(Default::default()));
        }
        data.advance(1);
        let len = data.get_u32() as usize;
        let reply = DynamicMessage::decode(info.output.clone(), &data[..len]).expect("response matches the proto");
        Ok(serde_json::to_value(&reply).expect("json"))
    }
}
