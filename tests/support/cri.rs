//! The CRI client built from proto/ lives in the crate (the demo uses it too); the tests'
//! calls unwrap its transport errors.

pub use runtime_tap::bed::cri::Status;

pub struct GrpcClient(runtime_tap::bed::cri::GrpcClient);

impl GrpcClient {
    pub async fn connect(socket: &std::path::Path) -> GrpcClient {
        GrpcClient(
            runtime_tap::bed::cri::GrpcClient::connect(socket)
                .await
                .expect("connect"),
        )
    }

    pub async fn unary(
        &mut self,
        method: &str,
        request: serde_json::Value,
        metadata: &[(&str, &str)],
    ) -> Result<serde_json::Value, Status> {
        self.0.unary(method, request, metadata).await
    }

    pub async fn server_stream(
        &mut self,
        method: &str,
        request: serde_json::Value,
        metadata: &[(&str, &str)],
    ) -> Result<Vec<prost_reflect::DynamicMessage>, Status> {
        self.0.server_stream(method, request, metadata).await
    }

    /// StopPodSandbox then RemovePodSandbox of `sandbox`: the end of a test's pod.
    pub async fn remove_pod(&mut self, sandbox: &str) {
        let rs = "runtime.v1.RuntimeService";
        let id = serde_json::json!({"pod_sandbox_id": sandbox});
        self.unary(&format!("{rs}/StopPodSandbox"), id.clone(), &[])
            .await
            .expect("StopPodSandbox");
        self.unary(&format!("{rs}/RemovePodSandbox"), id, &[])
            .await
            .expect("RemovePodSandbox");
    }
}
