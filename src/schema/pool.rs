//! The descriptor pool: every message and service from `proto/` (compiled by build.rs into
//! one embedded `FileDescriptorSet`), plus users' own sets from config, and method lookup by
//! gRPC path. Rule it keeps: the embedded set is decoded once per process; a `Schema` is an
//! `Arc` clone of it until a user set is added (copy on write inside prost-reflect).

use std::sync::OnceLock;

use prost_reflect::{DescriptorError, DescriptorPool, MessageDescriptor, MethodDescriptor};

use super::Side;
use super::rules::{self, Rule};

/// The `FileDescriptorSet` that build.rs compiled from `proto/`.
static BUILTIN_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime_tap_descriptors.bin"));

/// Errors of the schema module.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A user descriptor set (config `descriptor_sets`) did not decode or link.
    #[error("invalid descriptor set: {0}")]
    DescriptorSet(#[from] DescriptorError),
    /// A payload did not decode as the method's message type.
    #[error("payload of {method} ({side:?}) does not decode as {message}: {source}")]
    Decode {
        method: String,
        side: Side,
        message: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// Which API family a method belongs to; picks its rule table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// Kubernetes CRI: packages `runtime.v1` and `runtime.v1alpha2`.
    Cri,
    /// containerd's own API: packages `containerd.*`.
    Containerd,
    /// Anything else in the pool (users' own sets, well-known types).
    Other,
}

impl Api {
    /// The API family of a protobuf package.
    pub fn of_package(package: &str) -> Api {
        if package == "runtime.v1" || package == "runtime.v1alpha2" {
            Api::Cri
        } else if package == "containerd" || package.starts_with("containerd.") {
            Api::Containerd
        } else {
            Api::Other
        }
    }
}

/// Descriptor pool of every API runtime-tap knows. Cheap to clone.
#[derive(Clone)]
pub struct Schema {
    pool: DescriptorPool,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's own Debug prints every descriptor.
        f.debug_struct("Schema")
            .field("files", &self.pool.files().len())
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// The pool compiled from `proto/`: CRI runtime.v1 and v1alpha2, containerd's services,
    /// types and events, google.rpc and the well-known types. Decoded once per process.
    ///
    /// # Panics
    ///
    /// Never in practice: the embedded set is produced by build.rs and checked by tests.
    pub fn builtin() -> Schema {
        static POOL: OnceLock<DescriptorPool> = OnceLock::new();
        let pool = POOL.get_or_init(|| {
            DescriptorPool::decode(BUILTIN_SET).expect("embedded descriptor set decodes (built by build.rs)")
        });
        Schema { pool: pool.clone() }
    }

    /// Adds a user's encoded `FileDescriptorSet` (config `descriptor_sets = [...]`, as written by
    /// `protoc --include_imports -o` or protox). Files already in the pool are skipped.
    ///
    /// # Errors
    ///
    /// [`SchemaError::DescriptorSet`] if the bytes are not a descriptor set or do not link
    /// against the pool; the schema is unchanged then.
    pub fn add_descriptor_set(&mut self, bytes: &[u8]) -> Result<(), SchemaError> {
        let mut pool = self.pool.clone();
        pool.decode_file_descriptor_set(bytes)?;
        self.pool = pool;
        Ok(())
    }

    /// The underlying prost-reflect pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// A message type by full name (`runtime.v1.PodSandboxConfig`), without a leading dot.
    pub fn message(&self, full_name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(full_name.trim_start_matches('.'))
    }

    /// The method a request's `:path` names (`/containerd.services.tasks.v1.Tasks/Start`;
    /// the leading slash is optional), or `None` if the pool has no such service or method.
    /// Resolves the method's rules each time: look it up once per call, not per message.
    pub fn method(&self, grpc_path: &str) -> Option<MethodInfo> {
        let path = grpc_path.strip_prefix('/').unwrap_or(grpc_path);
        let (service, method) = path.split_once('/')?;
        if method.is_empty() || method.contains('/') {
            return None;
        }
        let service = self.pool.get_service_by_name(service)?;
        let descriptor = service.methods().find(|m| m.name() == method)?;
        Some(MethodInfo::new(descriptor))
    }
}

/// What the pool knows about one gRPC method, and the rules that apply to it.
#[derive(Clone)]
pub struct MethodInfo {
    /// `containerd.services.tasks.v1.Tasks/Start` (the span name and `rpc.method`).
    pub full_name: String,
    /// Request message type.
    pub input: MessageDescriptor,
    /// Response message type.
    pub output: MessageDescriptor,
    /// The client sends a stream of requests.
    pub client_streaming: bool,
    /// The server sends a stream of responses.
    pub server_streaming: bool,
    /// API family, which picks the rule table.
    pub api: Api,
    pub(crate) descriptor: MethodDescriptor,
    /// Rules of the API's table that name this method and whose field path exists in its
    /// message types, resolved once here so extraction does no table scan.
    pub(crate) rules: Vec<&'static Rule>,
}

impl std::fmt::Debug for MethodInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodInfo")
            .field("full_name", &self.full_name)
            .field("input", &self.input.full_name())
            .field("output", &self.output.full_name())
            .field("client_streaming", &self.client_streaming)
            .field("server_streaming", &self.server_streaming)
            .field("api", &self.api)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl MethodInfo {
    fn new(descriptor: MethodDescriptor) -> MethodInfo {
        let service = descriptor.parent_service();
        let api = Api::of_package(service.package_name());
        let full_name = format!("{}/{}", service.full_name(), descriptor.name());
        let input = descriptor.input();
        let output = descriptor.output();
        let rules = rules::rules_for(api, &full_name, service.package_name(), &input, &output);
        MethodInfo {
            full_name,
            client_streaming: descriptor.is_client_streaming(),
            server_streaming: descriptor.is_server_streaming(),
            api,
            input,
            output,
            descriptor,
            rules,
        }
    }

    /// The prost-reflect method descriptor.
    pub fn descriptor(&self) -> &MethodDescriptor {
        &self.descriptor
    }

    /// The message type of one side of the call.
    pub fn message(&self, side: Side) -> &MessageDescriptor {
        match side {
            Side::Request => &self.input,
            Side::Response => &self.output,
        }
    }
}
