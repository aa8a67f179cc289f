//! The test backend: `testing.v1.Lookup`, with per-call behaviour chosen by the request and counters the tests read.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

pub use strata_cache::testing::PortHold;

use super::pb::lookup_server::{Lookup, LookupServer};
use super::pb::{GetReply, GetRequest, SearchRequest};

/// Which reflection services a test backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    /// None: the gateway learns nothing from it.
    Off,
    /// `grpc.reflection.v1` and `v1alpha`, as tonic serves them.
    V1AndV1alpha,
    /// Only `v1alpha`, as grpcio did by default until recently.
    V1alphaOnly,
}

/// What the backend saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Calls of each method.
    pub get: AtomicU64,
    pub watch: AtomicU64,
    pub collect: AtomicU64,
    pub chat: AtomicU64,
    pub search: AtomicU64,
    pub peek: AtomicU64,
    /// The `grpc-timeout` of the most recent call that had one.
    pub last_grpc_timeout: Mutex<Option<String>>,
    /// Added to the delay of every `Get` (to make one backend of several slow).
    pub base_delay_ms: AtomicU64,
    /// The `traceparent` of the most recent `Get`.
    pub last_traceparent: Mutex<Option<String>>,
    /// Calls of `Get` per key.
    pub per_key: Mutex<std::collections::HashMap<String, u32>>,
    /// Keys `Get` now answers NOT_FOUND for (the item was deleted).
    pub gone: Mutex<std::collections::HashSet<String>>,
}

/// The tenant (`x-tenant-id`) every `Get` refuses with PERMISSION_DENIED.
pub const DENIED_TENANT: &str = "intruder";

#[derive(Clone)]
struct Service {
    seen: Arc<Seen>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<GetReply, Status>> + Send>>;

fn note_timeout<T>(seen: &Seen, request: &Request<T>) -> String {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(t) = &timeout {
        *seen.last_grpc_timeout.lock().expect("lock") = Some(t.clone());
    }
    timeout.unwrap_or_default()
}

fn reply(req: &GetRequest, serial: u64, tenant: String, grpc_timeout: String) -> GetReply {
    GetReply {
        key: req.key.clone(),
        serial,
        tenant,
        grpc_timeout,
        payload: vec![b'p'; req.reply_bytes as usize],
    }
}

fn failure(code: i32) -> Status {
    let mut status = Status::new(
        tonic::Code::from(code),
        format!("backend failed on purpose with code {code}"),
    );
    status
        .metadata_mut()
        .insert("x-failure-detail", MetadataValue::from_static("on-purpose"));
    status
}

#[tonic::async_trait]
impl Lookup for Service {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let serial = self.seen.get.fetch_add(1, Ordering::SeqCst) + 1;
        let grpc_timeout = note_timeout(&self.seen, &request);
        if let Some(tp) = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            *self.seen.last_traceparent.lock().expect("lock") = Some(tp.to_owned());
        }
        let tenant = request
            .metadata()
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let req = request.into_inner();
        let delay = u64::from(req.delay_ms) + self.seen.base_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let nth = {
            let mut per_key = self.seen.per_key.lock().expect("lock");
            let n = per_key.entry(req.key.clone()).or_default();
            *n += 1;
            *n
        };
        if req.fail_code != 0 {
            return Err(failure(req.fail_code));
        }
        if tenant == DENIED_TENANT {
            return Err(Status::permission_denied("this tenant may not read it"));
        }
        if self.seen.gone.lock().expect("lock").contains(&req.key) {
            return Err(Status::not_found(format!("{} was deleted", req.key)));
        }
        if nth <= req.fail_first {
            return Err(failure(tonic::Code::Unavailable as i32));
        }
        let mut response = Response::new(reply(&req, serial, tenant, grpc_timeout));
        if !req.cache_control.is_empty() {
            let value = req.cache_control.parse().expect("ascii cache-control");
            response.metadata_mut().insert("cache-control", value);
        }
        if req.set_cookie {
            let value = format!("session={serial}").parse().expect("ascii cookie");
            response.metadata_mut().insert("set-cookie", value);
        }
        response.metadata_mut().insert(
            "x-backend-header",
            MetadataValue::from_static("from-backend"),
        );
        response.metadata_mut().insert_bin(
            "x-backend-bin",
            tonic::metadata::MetadataValue::from_bytes(&[0, 1, 255]),
        );
        Ok(response)
    }

    /// Answers with the query, the tenant of its filter and the labels, in a fixed order, and which call it was.
    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<GetReply>, Status> {
        let serial = self.seen.search.fetch_add(1, Ordering::SeqCst) + 1;
        let req = request.into_inner();
        let mut labels: Vec<_> = req.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let tenant = req.filter.map(|f| f.tenant_id).unwrap_or_default();
        Ok(Response::new(GetReply {
            key: format!("{}|{tenant}|{}", req.query, labels.join(",")),
            serial,
            ..Default::default()
        }))
    }

    /// Like `Get`, counted apart.
    async fn peek(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let serial = self.seen.peek.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(reply(
            &request.into_inner(),
            serial,
            String::new(),
            String::new(),
        )))
    }

    type WatchStream = ReplyStream;

    /// Three replies, then OK — or, with `fail_code`, that status carrying `x-failure-detail` in the trailers.
    async fn watch(&self, request: Request<GetRequest>) -> Result<Response<ReplyStream>, Status> {
        let serial = self.seen.watch.fetch_add(1, Ordering::SeqCst) + 1;
        let grpc_timeout = note_timeout(&self.seen, &request);
        let req = request.into_inner();
        tokio::time::sleep(Duration::from_millis(u64::from(req.delay_ms))).await;
        let mut items: Vec<Result<GetReply, Status>> = (0..3)
            .map(|i| {
                Ok(reply(
                    &req,
                    serial * 100 + i,
                    String::new(),
                    grpc_timeout.clone(),
                ))
            })
            .collect();
        if req.fail_code != 0 {
            items.push(Err(failure(req.fail_code)));
        }
        let mut response = Response::new(Box::pin(tokio_stream::iter(items)) as ReplyStream);
        response
            .metadata_mut()
            .insert("x-backend-header", MetadataValue::from_static("streaming"));
        Ok(response)
    }

    async fn collect(
        &self,
        request: Request<Streaming<GetRequest>>,
    ) -> Result<Response<GetReply>, Status> {
        let serial = self.seen.collect.fetch_add(1, Ordering::SeqCst) + 1;
        let mut stream = request.into_inner();
        let mut keys = Vec::new();
        while let Some(item) = stream.next().await {
            keys.push(item?.key);
        }
        Ok(Response::new(GetReply {
            key: keys.join(","),
            serial,
            ..Default::default()
        }))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<GetRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.seen.chat.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let outbound = async_stream_of(move |tx| async move {
            let mut n = 0;
            while let Some(item) = inbound.next().await {
                n += 1;
                let item = match item {
                    Ok(item) => item,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if tx
                    .send(Ok(reply(&item, n, String::new(), String::new())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(outbound))
    }
}

/// A stream fed by a task through a channel.
fn async_stream_of<F, Fut>(produce: F) -> ReplyStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<GetReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A running test backend.
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Seen>,
    /// Its `grpc.health.v1` status, settable by the test.
    pub health: tonic_health::server::HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    /// Starts the backend on a random loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve(listener).await
    }

    /// Starts the backend on `addr` (e.g. after [`TestBackend::stop`], to bring it back).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("rebind backend");
        Self::serve(listener).await
    }

    /// Starts the backend with TLS (`cert`/`key`), requiring client certificates signed by `client_ca`.
    pub async fn start_tls(cert: &str, key: &str, client_ca: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .client_ca_root(tonic::transport::Certificate::from_pem(client_ca));
        Self::serve_with(listener, Some(tls)).await
    }

    /// Starts the backend on a random loopback port, serving reflection as `reflection` says.
    pub async fn start_reflecting(reflection: Reflection) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve_as(listener, None, reflection).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Self {
        Self::serve_with(listener, None).await
    }

    async fn serve_with(
        listener: tokio::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        Self::serve_as(listener, tls, Reflection::Off).await
    }

    async fn serve_as(
        listener: tokio::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        reflection: Reflection,
    ) -> Self {
        let reflecting = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(super::TESTING_V1_DESCRIPTORS)
        };
        let (v1, v1alpha) = match reflection {
            Reflection::Off => (None, None),
            Reflection::V1AndV1alpha => (
                Some(reflecting().build_v1().expect("reflection v1")),
                Some(reflecting().build_v1alpha().expect("reflection v1alpha")),
            ),
            Reflection::V1alphaOnly => (
                None,
                Some(reflecting().build_v1alpha().expect("reflection v1alpha")),
            ),
        };
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = LookupServer::new(Service { seen: seen.clone() });
        let task = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).expect("test backend TLS");
            }
            let _ = builder
                .add_service(service)
                .add_service(health_service)
                .add_optional_service(v1)
                .add_optional_service(v1alpha)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Self {
            addr,
            seen,
            health,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The endpoint URL for the gateway config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `grpc-timeout` of the most recent call that carried one.
    pub fn last_grpc_timeout(&self) -> Option<String> {
        self.seen.last_grpc_timeout.lock().expect("lock").clone()
    }

    /// Makes every `Get` take `ms` longer.
    pub fn slow_down(&self, ms: u64) {
        self.seen.base_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Sets what its health service reports for the server as a whole.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }

    /// From now on, `Get` answers NOT_FOUND for `key`.
    pub fn forget(&self, key: &str) {
        self.seen.gone.lock().expect("lock").insert(key.to_owned());
    }

    /// Calls of `Get` so far.
    pub fn get_calls(&self) -> u64 {
        self.seen.get.load(Ordering::SeqCst)
    }

    /// Stops the backend and waits until its port and its connections are closed.
    ///
    /// tonic serves each connection in a task of its own, which outlives the server's: aborting the server at once
    /// left a connection the gateway had open serving new calls for a moment after `stop` returned (a flaky "backend
    /// down" test under a loaded suite). The server's task ends once its connections have closed (GOAWAY, then close
    /// when their calls are done), so it is awaited; a call still running after a second is left to finish on its own.
    pub async fn stop(mut self) -> PortHold {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        PortHold::on(self.addr)
    }

    /// Starts the backend again on the port `hold` kept for it.
    pub async fn restart(hold: PortHold) -> Self {
        let backend = Self::start_on(hold.addr()).await;
        drop(hold);
        backend
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
