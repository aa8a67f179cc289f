//! The sample lookup service, `demo.v1.Catalog`: items `item-0` … `item-<size-1>`, a configurable latency and error
//! rate, NOT_FOUND for unknown ids, and call counters (`demo.v1.CatalogStats`) the demo and tests read.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use rand::Rng;
use strata_proto::demo::v1::catalog_server::{Catalog, CatalogServer};
use strata_proto::demo::v1::catalog_stats_server::{CatalogStats, CatalogStatsServer};
use strata_proto::demo::v1::{
    GetItemRequest, GetStatsRequest, Item, ListItemsRequest, PutItemsReply, Stats,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// How the sample backend behaves.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Number of items; ids `item-0` … `item-<size-1>` exist, others are NOT_FOUND.
    pub size: u64,
    /// Time each `GetItem` takes (a database lookup, say).
    pub latency: Duration,
    /// Fraction of `GetItem` calls answered UNAVAILABLE (0.0–1.0).
    pub error_rate: f64,
    /// Bytes of payload per item.
    pub payload_bytes: usize,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            size: 100_000,
            latency: Duration::from_millis(2),
            error_rate: 0.0,
            payload_bytes: 512,
        }
    }
}

/// Call counters of the sample backend, and the two knobs tests turn while it runs.
#[derive(Debug, Default)]
pub struct Counters {
    get_item: AtomicU64,
    list_items: AtomicU64,
    put_items: AtomicU64,
    lookup_items: AtomicU64,
    /// Until when lookups stall, in milliseconds since `epoch` (0: not frozen).
    frozen_until_ms: AtomicU64,
    epoch: std::sync::OnceLock<tokio::time::Instant>,
    /// `GetItem` calls per id, when recording (off by default: it takes a lock per call).
    ids_seen: Option<Mutex<HashMap<String, u64>>>,
}

impl Counters {
    /// Counters that also count `GetItem` calls per id (see [`Counters::ids_seen`]).
    #[cfg(test)]
    pub fn recording_ids() -> Self {
        Self {
            ids_seen: Some(Mutex::default()),
            ..Self::default()
        }
    }

    /// `GetItem` calls per id so far (empty unless made with [`Counters::recording_ids`]).
    #[cfg(test)]
    pub fn ids_seen(&self) -> HashMap<String, u64> {
        self.ids_seen
            .as_ref()
            .map(|ids| ids.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Makes every lookup that arrives in the next `duration` wait until it has passed (a stalled database).
    #[cfg(test)]
    pub fn freeze_for(&self, duration: Duration) {
        let epoch = *self.epoch.get_or_init(tokio::time::Instant::now);
        let until = epoch.elapsed() + duration;
        let until_ms = u64::try_from(until.as_millis()).unwrap_or(u64::MAX).max(1);
        self.frozen_until_ms.store(until_ms, Ordering::Relaxed);
    }

    async fn wait_while_frozen(&self) {
        let until_ms = self.frozen_until_ms.load(Ordering::Relaxed);
        if until_ms == 0 {
            return;
        }
        if let Some(epoch) = self.epoch.get() {
            tokio::time::sleep_until(*epoch + Duration::from_millis(until_ms)).await;
        }
    }

    fn saw(&self, id: &str) {
        if let Some(ids) = &self.ids_seen {
            *ids.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.to_owned())
                .or_default() += 1;
        }
    }

    /// The counters as the `CatalogStats` message.
    pub fn snapshot(&self) -> Stats {
        Stats {
            get_item_calls: self.get_item.load(Ordering::Relaxed),
            list_items_calls: self.list_items.load(Ordering::Relaxed),
            put_items_calls: self.put_items.load(Ordering::Relaxed),
            lookup_items_calls: self.lookup_items.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone)]
struct CatalogService {
    options: Arc<BackendOptions>,
    counters: Arc<Counters>,
}

impl CatalogService {
    fn item(&self, id: &str) -> Result<Item, Status> {
        let n: u64 = id
            .strip_prefix("item-")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n < self.options.size)
            .ok_or_else(|| Status::not_found(format!("no item with id {id:?}")))?;
        Ok(Item {
            id: id.to_owned(),
            name: format!("Item number {n}"),
            price_cents: i64::try_from(n % 100_000).unwrap_or(0) * 7 + 99,
            payload: bytes::Bytes::from(vec![b'x'; self.options.payload_bytes]),
        })
    }

    async fn lookup(&self, id: &str) -> Result<Item, Status> {
        self.counters.wait_while_frozen().await;
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        if self.options.error_rate > 0.0
            && rand::rng().random_bool(self.options.error_rate.clamp(0.0, 1.0))
        {
            return Err(Status::unavailable("sample backend: injected failure"));
        }
        self.item(id)
    }
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>>;

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn get_item(&self, request: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        self.counters.get_item.fetch_add(1, Ordering::Relaxed);
        let id = request.into_inner().id;
        self.counters.saw(&id);
        self.lookup(&id).await.map(Response::new)
    }

    type ListItemsStream = ItemStream;

    async fn list_items(
        &self,
        request: Request<ListItemsRequest>,
    ) -> Result<Response<ItemStream>, Status> {
        self.counters.list_items.fetch_add(1, Ordering::Relaxed);
        let req = request.into_inner();
        let limit = u64::from(req.limit.clamp(1, 1000));
        let items: Vec<_> = (0..self.options.size)
            .map(|n| format!("item-{n}"))
            .filter(|id| id.starts_with(&req.prefix))
            .take(usize::try_from(limit).unwrap_or(1000))
            .map(|id| self.item(&id))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn put_items(
        &self,
        request: Request<Streaming<Item>>,
    ) -> Result<Response<PutItemsReply>, Status> {
        self.counters.put_items.fetch_add(1, Ordering::Relaxed);
        let mut stream = request.into_inner();
        let mut count = 0;
        while let Some(item) = stream.next().await {
            item?;
            count += 1;
        }
        Ok(Response::new(PutItemsReply { count }))
    }

    type LookupItemsStream = ItemStream;

    async fn lookup_items(
        &self,
        request: Request<Streaming<GetItemRequest>>,
    ) -> Result<Response<ItemStream>, Status> {
        self.counters.lookup_items.fetch_add(1, Ordering::Relaxed);
        let service = self.clone();
        let replies = request.into_inner().then(move |req| {
            let service = service.clone();
            async move { service.lookup(&req?.id).await }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[derive(Debug)]
struct StatsService {
    counters: Arc<Counters>,
}

#[tonic::async_trait]
impl CatalogStats for StatsService {
    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<Stats>, Status> {
        Ok(Response::new(self.counters.snapshot()))
    }
}

/// Serves the sample backend on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    options: BackendOptions,
    counters: Arc<Counters>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let catalog = CatalogService {
        options: Arc::new(options),
        counters: counters.clone(),
    };
    // Without TCP_NODELAY, small answers wait for delayed ACKs (40 ms each on Linux).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Reflection (v1, and v1alpha for grpcurl 1.8), so `grpcurl list` works against the backend and through Strata.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            // The health protocol too: a gateway in front answers grpc.health.v1.Health itself, and clients
            // discovering services through it (grpcurl) find it described here.
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| anyhow::anyhow!("reflection: {e}"))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| anyhow::anyhow!("reflection: {e}"))?;
    tonic::transport::Server::builder()
        .add_service(CatalogServer::new(catalog))
        .add_service(CatalogStatsServer::new(StatsService { counters }))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// A sample backend running in this process (for the demo and the benchmarks).
#[derive(Debug)]
pub struct LocalBackend {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its call counters.
    pub counters: Arc<Counters>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl LocalBackend {
    /// Starts the sample backend on a random loopback port.
    pub async fn start(options: BackendOptions) -> anyhow::Result<Self> {
        Self::start_with(options, Counters::default()).await
    }

    /// Starts the sample backend on a random loopback port, counting into `counters`.
    pub async fn start_with(options: BackendOptions, counters: Counters) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(counters);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, options, counters.clone(), async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            counters,
            stop,
        })
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it.
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}
