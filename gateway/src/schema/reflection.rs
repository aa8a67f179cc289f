//! Asking a backend for its services' descriptors: `grpc.reflection.v1`, falling back to `v1alpha` (which many
//! servers still serve alone), over the backend's own connections (its TLS, balancing and limits).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prost_reflect::prost_types::FileDescriptorProto;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::codegen::StdError;
use tonic::metadata::MetadataMap;

use super::{MethodIndex, pool_of};
use crate::backend::Backend;
use crate::error::GatewayError;
use crate::grpc::deadline::Deadline;

/// How long one conversation with a backend's reflection service may take in all.
pub const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a backend's descriptors could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    /// The backend serves neither reflection version.
    #[error("the backend serves no reflection (neither grpc.reflection.v1 nor v1alpha)")]
    Unimplemented,
    /// The backend answered with an error status.
    #[error("reflection failed: {0}")]
    Status(String),
    /// The backend's answers made no sense.
    #[error("reflection answered {0}")]
    Answer(String),
    /// The conversation took longer than [`REFLECTION_TIMEOUT`].
    #[error("reflection did not finish within {REFLECTION_TIMEOUT:?}")]
    Timeout,
}

/// The files describing every service a backend serves (their imports included), and the protocol that gave them.
#[derive(Debug)]
pub struct Reflected {
    /// `v1` or `v1alpha`.
    pub version: &'static str,
    /// The file descriptors, encoded (as they came: decoding would lose their options' extensions).
    pub files: Vec<Vec<u8>>,
}

/// Asks `backend` for the descriptors of every service it serves: v1 first, v1alpha when v1 is not served.
pub async fn ask(backend: Arc<Backend>) -> Result<Reflected, ReflectionError> {
    ask_over(ViaBackend(backend), MetadataMap::new()).await
}

/// Asks whatever server `service` reaches (a backend, a client's channel) for the descriptors of every service it
/// serves, sending `metadata` with the question: v1 first, v1alpha when v1 is not served.
pub async fn ask_over<S>(service: S, metadata: MetadataMap) -> Result<Reflected, ReflectionError>
where
    S: GrpcService<Body> + Clone + Send + 'static,
    S::Error: Into<StdError>,
    S::Future: Send,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<StdError> + Send,
{
    let conversation = async {
        match ask_v1(service.clone(), metadata.clone()).await {
            Err(ReflectionError::Unimplemented) => {
                ask_v1alpha(service, metadata).await.map(|files| Reflected {
                    version: "v1alpha",
                    files,
                })
            }
            other => other.map(|files| Reflected {
                version: "v1",
                files,
            }),
        }
    };
    tokio::time::timeout(REFLECTION_TIMEOUT, conversation)
        .await
        .unwrap_or(Err(ReflectionError::Timeout))
}

/// `backend`'s methods by reflection, and the protocol version that gave them; an error says why there are none.
pub async fn methods_of(backend: Arc<Backend>) -> Result<(&'static str, MethodIndex), String> {
    let reflected = ask(backend).await.map_err(|e| e.to_string())?;
    let pool =
        pool_of(reflected.files).map_err(|e| format!("its descriptors do not resolve: {e}"))?;
    Ok((reflected.version, MethodIndex::of_pool(&pool)))
}

fn status_error(status: tonic::Status) -> ReflectionError {
    match status.code() {
        tonic::Code::Unimplemented => ReflectionError::Unimplemented,
        code => ReflectionError::Status(format!("{code:?}: {}", status.message())),
    }
}

/// Decodes the files of one answer and notes the imports not yet had.
fn take_files(
    encoded: Vec<Vec<u8>>,
    files: &mut HashMap<String, Vec<u8>>,
    wanted: &mut Vec<String>,
    asked: &mut HashSet<String>,
) -> Result<(), ReflectionError> {
    use prost::Message;
    for bytes in encoded {
        let file = FileDescriptorProto::decode(bytes.as_slice())
            .map_err(|e| ReflectionError::Answer(format!("an undecodable file descriptor: {e}")))?;
        for dependency in &file.dependency {
            if !files.contains_key(dependency) && asked.insert(dependency.clone()) {
                wanted.push(dependency.clone());
            }
        }
        asked.insert(file.name().to_owned());
        files.insert(file.name().to_owned(), bytes);
    }
    Ok(())
}

/// One reflection conversation in version `$($pb)::+` of the protocol: list the services, ask for the file of each
/// (one the server cannot describe is skipped), then for every import not sent along.
macro_rules! conversation {
    ($name:ident, $($pb:ident)::+) => {
        async fn $name<S>(service: S, metadata: MetadataMap) -> Result<Vec<Vec<u8>>, ReflectionError>
        where
            S: GrpcService<Body> + Send,
            S::Error: Into<StdError>,
            S::Future: Send,
            S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
            <S::ResponseBody as http_body::Body>::Error: Into<StdError> + Send,
        {
            use $($pb)::+::ServerReflectionRequest;
            use $($pb)::+::server_reflection_client::ServerReflectionClient;
            use $($pb)::+::server_reflection_request::MessageRequest;
            use $($pb)::+::server_reflection_response::MessageResponse;

            let mut client = ServerReflectionClient::new(service);
            let (outbox, requests) = tokio::sync::mpsc::channel(1);
            let ask = |request| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            };
            outbox
                .send(ask(MessageRequest::ListServices(String::new())))
                .await
                .map_err(|_| ReflectionError::Answer("nothing: the conversation closed".into()))?;
            let question = tonic::Request::from_parts(
                metadata,
                Default::default(),
                tokio_stream::wrappers::ReceiverStream::new(requests),
            );
            let mut answers = client
                .server_reflection_info(question)
                .await
                .map_err(status_error)?
                .into_inner();
            let mut next = async || {
                match answers.message().await {
                    Ok(Some(answer)) => Ok(answer.message_response),
                    Ok(None) => Err(ReflectionError::Answer("nothing: the stream ended".into())),
                    Err(status) => Err(status_error(status)),
                }
            };
            let services = match next().await? {
                Some(MessageResponse::ListServicesResponse(list)) => list.service,
                Some(MessageResponse::ErrorResponse(e)) => {
                    return Err(ReflectionError::Status(e.error_message));
                }
                _ => return Err(ReflectionError::Answer("something other than a service list".into())),
            };
            let mut files = HashMap::new();
            let mut asked = HashSet::new();
            // Every service's file, then every import not sent along. A service the server lists but cannot
            // describe is left out (the others still count); an import it cannot send is an error.
            let mut wanted: Vec<MessageRequest> = services
                .into_iter()
                .map(|s| MessageRequest::FileContainingSymbol(s.name))
                .collect();
            let mut imports = Vec::new();
            while let Some(request) = wanted.pop().or_else(|| imports.pop().map(MessageRequest::FileByFilename)) {
                let import = matches!(request, MessageRequest::FileByFilename(_));
                let what = format!("{request:?}");
                outbox.send(ask(request)).await.map_err(|_| {
                    ReflectionError::Answer("nothing: the conversation closed".into())
                })?;
                match next().await? {
                    Some(MessageResponse::FileDescriptorResponse(found)) => {
                        take_files(found.file_descriptor_proto, &mut files, &mut imports, &mut asked)?;
                    }
                    Some(MessageResponse::ErrorResponse(_)) if !import => {}
                    Some(MessageResponse::ErrorResponse(e)) => {
                        return Err(ReflectionError::Answer(format!("no file for {what}: {}", e.error_message)));
                    }
                    _ => return Err(ReflectionError::Answer(format!("something other than files for {what}"))),
                }
            }
            Ok(files.into_values().collect())
        }
    };
}

conversation!(ask_v1, tonic_reflection::pb::v1);
conversation!(ask_v1alpha, tonic_reflection::pb::v1alpha);

/// A backend as a tower service, so a generated gRPC client can call it.
#[derive(Debug, Clone)]
struct ViaBackend(Arc<Backend>);

impl tower::Service<http::Request<Body>> for ViaBackend {
    type Response = http::Response<Body>;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, GatewayError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(
            self.0
                .call_for_gateway(request, Deadline::after(REFLECTION_TIMEOUT)),
        )
    }
}
