//! `helloworld.Greeter` — the service of ghz's own test data (`greeter.proto`) — as a real gRPC server for the
//! ghz-compatibility tests: it answers all four of its methods, records what each request carried (names,
//! metadata, `:authority`, compression), serves reflection in `v1alpha` only (as grpcio did until recently), and can
//! speak TLS.
//!
//! A name `sleep:<ms>…` makes it wait that long before answering (to hold calls in flight).

#![allow(dead_code)] // each test uses part of it

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, NamedService};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// `helloworld.HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `helloworld.HelloReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// One call as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The method's name (`SayHello`, …).
    pub method: String,
    /// The names of every message the client sent.
    pub names: Vec<String>,
    /// Its metadata (lowercase names; binary values as their bytes, lossily as text).
    pub metadata: BTreeMap<String, String>,
    /// Its `:authority`.
    pub authority: String,
}

/// What the server has seen.
#[derive(Debug, Default)]
pub struct Record {
    /// Every call, in the order they ended.
    pub calls: Mutex<Vec<Seen>>,
    /// The metadata of every reflection conversation.
    pub reflection_metadata: Mutex<Vec<BTreeMap<String, String>>>,
    /// Calls being answered now.
    pub in_flight: AtomicUsize,
    /// The most calls ever answered at once.
    pub most_in_flight: AtomicUsize,
}

/// Counts a call in flight while it lives.
struct Answering(Arc<Record>);

impl Answering {
    fn new(record: &Arc<Record>) -> Self {
        let now = record.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        record.most_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(record.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running Greeter.
pub struct Greeter {
    /// Its address.
    pub addr: SocketAddr,
    /// What it has seen.
    pub record: Arc<Record>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Greeter {
    /// Starts a plaintext Greeter on a random loopback port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a Greeter speaking TLS with this certificate and key (PEM).
    pub async fn start_tls(cert: Vec<u8>, key: Vec<u8>) -> Self {
        Self::start_with(Some(Identity::from_pem(cert, key))).await
    }

    async fn start_with(identity: Option<Identity>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let record = Arc::new(Record::default());
        let descriptors = greeter_descriptors();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .build_v1alpha()
            .expect("reflection");
        let reflection_record = record.clone();
        let reflection = tonic::service::interceptor::InterceptedService::new(
            reflection,
            move |request: Request<()>| {
                reflection_record
                    .reflection_metadata
                    .lock()
                    .expect("lock")
                    .push(text_metadata(request.metadata()));
                Ok(request)
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut builder = Server::builder();
        if let Some(identity) = identity {
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("TLS");
        }
        let router = builder.add_service(reflection).add_service(Router {
            record: record.clone(),
        });
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            record,
            stop: Some(stop),
        }
    }

    /// Every call seen so far.
    pub fn calls(&self) -> Vec<Seen> {
        self.record.calls.lock().expect("lock").clone()
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// greeter.proto compiled here (protox), encoded, for the reflection service.
fn greeter_descriptors() -> &'static [u8] {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ghz-testdata");
    let mut compiler = protox::Compiler::new([dir]).expect("compiler");
    compiler.open_file("greeter.proto").expect("greeter.proto");
    Box::leak(compiler.encode_file_descriptor_set().into_boxed_slice())
}

fn text_metadata(metadata: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn maybe_sleep(name: &str) {
    if let Some(ms) = name
        .strip_prefix("sleep:")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Serves the four methods by path.
#[derive(Clone)]
struct Router {
    record: Arc<Record>,
}

impl NamedService for Router {
    const NAME: &'static str = "helloworld.Greeter";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Replies = Pin<Box<dyn futures::Stream<Item = Result<HelloReply, Status>> + Send>>;

impl tower::Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let record = self.record.clone();
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                request
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let _answering = Answering::new(&record);
            let seen = Seen {
                method: method.clone(),
                authority,
                ..Seen::default()
            };
            let mut grpc = Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default())
                .accept_compressed(CompressionEncoding::Gzip);
            let answer = match method.as_str() {
                "SayHello" => {
                    let handler = tower::service_fn(move |r: Request<HelloRequest>| {
                        let (record, seen) = (record.clone(), seen.clone());
                        async move {
                            let name = heard_one(&record, seen, r).await;
                            Ok::<_, Status>(Response::new(HelloReply {
                                message: format!("Hello {name}"),
                            }))
                        }
                    });
                    grpc.unary(handler, request).await
                }
                "SayHellos" => {
                    let handler = tower::service_fn(move |r: Request<HelloRequest>| {
                        let (record, seen) = (record.clone(), seen.clone());
                        async move {
                            let name = heard_one(&record, seen, r).await;
                            let replies: Replies =
                                Box::pin(futures::stream::iter((0..5).map(move |i| {
                                    Ok(HelloReply {
                                        message: format!("Hello {name} #{i}"),
                                    })
                                })));
                            Ok::<_, Status>(Response::new(replies))
                        }
                    });
                    grpc.server_streaming(handler, request).await
                }
                "SayHelloCS" => {
                    let handler = tower::service_fn(move |r: Request<Streaming<HelloRequest>>| {
                        let (record, seen) = (record.clone(), seen.clone());
                        async move {
                            let names = heard_stream(&record, seen, r).await?;
                            Ok::<_, Status>(Response::new(HelloReply {
                                message: format!("Hello {}", names.join(", ")),
                            }))
                        }
                    });
                    grpc.client_streaming(handler, request).await
                }
                "SayHelloBidi" => {
                    let handler = tower::service_fn(move |r: Request<Streaming<HelloRequest>>| {
                        let (record, seen) = (record.clone(), seen.clone());
                        async move {
                            let names = heard_stream(&record, seen, r).await?;
                            let replies: Replies =
                                Box::pin(futures::stream::iter(names.into_iter().map(|name| {
                                    Ok(HelloReply {
                                        message: format!("Hello {name}"),
                                    })
                                })));
                            Ok::<_, Status>(Response::new(replies))
                        }
                    });
                    grpc.streaming(handler, request).await
                }
                _ => {
                    Status::unimplemented(format!("helloworld.Greeter has no {method}")).into_http()
                }
            };
            Ok(answer)
        })
    }
}

/// Records a one-message request and waits as its name asks; returns the name.
async fn heard_one(record: &Record, mut seen: Seen, request: Request<HelloRequest>) -> String {
    seen.metadata = text_metadata(request.metadata());
    let name = request.into_inner().name;
    seen.names.push(name.clone());
    maybe_sleep(&name).await;
    record.calls.lock().expect("lock").push(seen);
    name
}

/// Records a streamed request, read to its end; returns its names.
async fn heard_stream(
    record: &Record,
    mut seen: Seen,
    request: Request<Streaming<HelloRequest>>,
) -> Result<Vec<String>, Status> {
    seen.metadata = text_metadata(request.metadata());
    let mut stream = request.into_inner();
    while let Some(message) = stream.message().await? {
        seen.names.push(message.name);
    }
    let names = seen.names.clone();
    record.calls.lock().expect("lock").push(seen);
    Ok(names)
}
