//! The schema of the calls: a `.proto` compiled here (protox, no protoc), a protoset file, or the server's
//! reflection service (v1) — then each call's method looked up in it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use super::plan::Descriptors;

/// How long one reflection answer may take.
const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the descriptor pool the plan names; `services` are the services the calls use (what reflection asks for).
pub async fn load(
    source: &Descriptors,
    services: &[String],
    channel: &Channel,
) -> anyhow::Result<DescriptorPool> {
    match source {
        Descriptors::Proto { file, import_paths } => {
            let mut includes = import_paths.clone();
            // The import paths first, so the file gets the name its importers use; its own directory last.
            let dir = file.parent().map(|d| d.to_path_buf()).unwrap_or_default();
            includes.push(if dir.as_os_str().is_empty() {
                ".".into()
            } else {
                dir
            });
            let mut compiler = protox::Compiler::new(&includes)
                .with_context(|| format!("proto: import paths {includes:?}"))?;
            compiler.include_imports(true);
            compiler
                .open_file(file)
                .map_err(|e| anyhow::anyhow!("proto: {}: {e}", file.display()))?;
            Ok(compiler.descriptor_pool())
        }
        Descriptors::Protoset(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("protoset: cannot read {}", path.display()))?;
            DescriptorPool::decode(bytes.as_slice())
                .map_err(|e| anyhow::anyhow!("protoset: {}: {e}", path.display()))
        }
        Descriptors::Reflection => from_reflection(channel.clone(), services)
            .await
            .context("no proto or protoset given, and server reflection (v1) failed"),
    }
}

/// The descriptor of `method` (`package.Service/Method`).
pub fn method(pool: &DescriptorPool, method: &str) -> anyhow::Result<MethodDescriptor> {
    let (service, name) = method
        .split_once('/')
        .context("not package.Service/Method")?;
    let service = pool
        .get_service_by_name(service)
        .with_context(|| format!("{method}: service {service} is not in the schema"))?;
    service
        .methods()
        .find(|m| m.name() == name)
        .with_context(|| format!("{method}: {} has no method {name}", service.full_name()))
}

/// Asks the server for the files defining `services`, then for any of their imports it did not send.
async fn from_reflection(channel: Channel, services: &[String]) -> anyhow::Result<DescriptorPool> {
    let mut client = ServerReflectionClient::new(channel);
    let (requests, outbox) = tokio::sync::mpsc::channel(4);
    let mut answers = client
        .server_reflection_info(ReceiverStream::new(outbox))
        .await?
        .into_inner();
    let mut wanted: Vec<MessageRequest> = services
        .iter()
        .map(|s| MessageRequest::FileContainingSymbol(s.clone()))
        .collect();
    let mut asked: HashSet<String> = HashSet::new();
    let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
    while let Some(request) = wanted.pop() {
        requests
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .await
            .context("the reflection stream closed")?;
        let answer = tokio::time::timeout(REFLECTION_TIMEOUT, answers.message())
            .await
            .context("no reflection answer within 10 s")??
            .context("the reflection stream ended early")?;
        match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(found)) => {
                for bytes in found.file_descriptor_proto {
                    let file = FileDescriptorProto::decode(bytes.as_slice())?;
                    for dependency in &file.dependency {
                        if !files.contains_key(dependency) && asked.insert(dependency.clone()) {
                            wanted.push(MessageRequest::FileByFilename(dependency.clone()));
                        }
                    }
                    files.insert(file.name().to_owned(), file);
                }
            }
            Some(MessageResponse::ErrorResponse(e)) => {
                anyhow::bail!("the server answered {}: {}", e.error_code, e.error_message)
            }
            _ => anyhow::bail!("the server answered something other than files"),
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_values())?;
    Ok(pool)
}
