//! A lean HTTP/2 connection to one plaintext endpoint: what the gateway forwards calls over.
//!
//! Why not tonic's `Channel` (hyper's client behind a buffer task): hyper sends a request's body from a task of its
//! own, which may start only after the connection task has written the HEADERS, so a unary call reaches the backend
//! in two writes — two TCP segments, two wake-ups of the backend — after passing through three tasks. Here the
//! body's first frames are queued right behind the HEADERS (h2 holds them until the stream opens) and leave with
//! them in one write; only a body that is not complete yet is pumped by a task, under flow control.
//!
//! The connection is made by the first call, and again by the first call after it closed. An HTTP/2 ping every
//! `keepalive_interval` closes it when one goes unanswered for `keepalive_timeout`, so a backend gone silent is
//! noticed between calls too. The `grpc-timeout` a request carries bounds the wait for the response's headers, as
//! in gRPC clients.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http_body::Body as _;
use tokio::net::TcpStream;
use tonic::body::Body;

use super::stream_body::send_body;
use crate::grpc::deadline::Deadline;
use crate::h2_body::RecvBody;
use crate::one_write::OneWrite;
use crate::when_woken::WhenWoken;

/// HTTP/2 flow-control windows offered to the backend, per stream and per connection: room for large answers
/// without a round trip per 64 KiB (hyper's client defaults, which this connection replaces).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// The most response metadata (headers or trailers) a backend may send: a hostile or broken backend cannot make the
/// gateway buffer more (hyper's client default).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// The most request data queued per stream before the body waits for the backend to read (hyper's client default).
const MAX_SEND_BUFFER_BYTES: usize = 1024 * 1024;

/// How an endpoint is reached and its connection kept alive.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The longest a TCP connect may take.
    pub connect_timeout: Duration,
    /// How often the connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// Why a call over a [`Connection`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The TCP connection could not be made.
    #[error("connect to {authority} failed: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    /// The TCP connection was not made within `connect_timeout`.
    #[error("connect to {authority} timed out after {after:?}")]
    ConnectTimeout { authority: String, after: Duration },
    /// Another call's connect attempt failed while this call waited for it.
    #[error("{0} (an attempt made for another call, just now)")]
    ConnectFailedMeanwhile(String),
    /// The HTTP/2 connection or stream failed.
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
    /// No response headers before the call's deadline.
    #[error("no answer within the call's deadline of {0:?}")]
    DeadlineExpired(Duration),
    /// The request cannot be sent to this endpoint.
    #[error("request not sendable: {0}")]
    Request(String),
}

impl CallError {
    /// What the calling client is told: the kind of failure, never the endpoint's address (that goes to the log).
    pub fn for_client(&self) -> String {
        match self {
            Self::Connect { source, .. } => format!("connect failed: {}", source.kind()),
            Self::ConnectTimeout { after, .. } => format!("connect timed out after {after:?}"),
            Self::Request(_) => "request not sendable to the endpoint".into(),
            // Their text names no address (the meanwhile-failure carries the client's text of the original).
            Self::ConnectFailedMeanwhile(_) | Self::Http2(_) | Self::DeadlineExpired(_) => {
                self.to_string()
            }
        }
    }
}

/// A lazily made HTTP/2 connection to one endpoint; its clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("authority", &self.shared.authority)
            .finish_non_exhaustive()
    }
}

struct Shared {
    authority: http::uri::Authority,
    config: ConnectionConfig,
    /// The open connection's request handle, and which connection it is.
    open: Mutex<Option<(u64, SendRequest<Bytes>)>>,
    /// Connect attempts ended so far; a connection's id is the number of the attempt that made it.
    attempts: AtomicU64,
    /// How the last attempt failed, if it did.
    last_failure: Mutex<Option<String>>,
    /// Held while connecting, so that concurrent first calls make one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Connection {
    /// A connection to the `http://` endpoint `uri`, made on the first call.
    pub fn lazy(uri: &http::Uri, config: ConnectionConfig) -> Result<Self, String> {
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return Err(format!("`{uri}` is not an http:// URL"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{uri}` has no host"))?;
        Ok(Self {
            shared: Arc::new(Shared {
                authority,
                config,
                open: Mutex::new(None),
                attempts: AtomicU64::new(0),
                last_failure: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Sends `request` (its URI needs only a path) and waits for the response's headers, at most until `deadline`;
    /// the body streams after.
    ///
    /// Not an async fn: on an open connection that takes a new stream — nearly every call — the request is handed to
    /// h2 at once, and what the call's future holds across its waits is the wait for the answer's head alone: not
    /// the request, kept as an argument for the future's whole life, nor a wrapper the exchange is moved into when it
    /// starts (each a copy, and lines touched, on every call). Only a call that connects takes the longer way.
    pub fn send(
        &self,
        request: http::Request<Body>,
        deadline: Deadline,
    ) -> impl Future<Output = Result<http::Response<Body>, CallError>> + Send + use<> {
        use futures::FutureExt;
        use futures::future::Either;
        let (head, body) = match head_for(&self.shared.authority, request) {
            Ok(ready) => ready,
            Err(err) => return Either::Left(std::future::ready(Err(err))),
        };
        let exchange = match self.open_for_new_stream() {
            Some(sender) => match send_on(sender, head, body) {
                Ok(answer) => Either::Left(answer),
                Err(err) => return Either::Left(std::future::ready(Err(err))),
            },
            // Boxed: connecting is rare, and its future large.
            None => Either::Right(Box::pin(self.clone().exchange(head, body))),
        };
        Either::Right(match deadline.at().zip(deadline.requested()) {
            Some((at, requested)) => {
                Either::Left(tokio::time::timeout_at(at, exchange).map(move |answer| {
                    answer.unwrap_or_else(|_| Err(CallError::DeadlineExpired(requested)))
                }))
            }
            None => Either::Right(exchange),
        })
    }

    /// The open connection's request handle, if it can take a new stream now: no connection error, and stream ids
    /// left. (A fresh clone of the handle has no stream of its own waiting to open, so readiness needs no waker.)
    fn open_for_new_stream(&self) -> Option<SendRequest<Bytes>> {
        let (_, mut sender) = self.open()?;
        let mut cx = Context::from_waker(Waker::noop());
        matches!(sender.poll_ready(&mut cx), Poll::Ready(Ok(()))).then_some(sender)
    }

    /// Sends the call on the open connection (making one if there is none, or if it closed since its last call) and
    /// returns once the response's headers arrived.
    ///
    /// An async block, not an async fn: an async fn keeps its arguments in its state beside the locals it moves them
    /// into, so the request's head took twice its room in every call's future, and was copied at the first poll.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice"
    )]
    fn exchange(
        self,
        head: http::Request<()>,
        body: Body,
    ) -> impl Future<Output = Result<http::Response<Body>, CallError>> + Send + 'static {
        async move {
            // Connecting is boxed: its futures (TCP connect, the HTTP/2 handshake) are large, and every call's future
            // would otherwise carry them, moved and touched on each call, though only the first call connects.
            let (id, sender) = match self.open() {
                Some(open) => open,
                None => Box::pin(self.connect()).await?,
            };
            let sender = match sender.ready().await {
                Ok(sender) => sender,
                Err(err) => {
                    // The connection closed since its last call (the backend restarted, or closed it idle): nothing was
                    // sent yet, so a new connection may take the call.
                    tracing::debug!(connection = id, error = %err, "backend connection gone; reconnecting");
                    self.shared.forget(id);
                    let (_, sender) = Box::pin(self.connect()).await?;
                    sender.ready().await?
                }
            };
            send_on(sender, head, body)?.await
        }
    }

    /// The open connection's request handle, if there is one.
    fn open(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the connection, unless a concurrent call just did — or just failed to, in which case this call fails
    /// the same way rather than queue another attempt (calls to a backend that is down wait for one connect at most).
    async fn connect(&self) -> Result<(u64, SendRequest<Bytes>), CallError> {
        let shared = &self.shared;
        let attempts_before = shared.attempts.load(Ordering::Acquire);
        let _turn = shared.connecting.lock().await;
        if let Some(open) = self.open() {
            return Ok(open);
        }
        if shared.attempts.load(Ordering::Acquire) != attempts_before {
            // An attempt ended while this call waited; if it failed, so does this call. (If it succeeded, its
            // connection has closed already: this call makes a new one.)
            let failed = shared
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(reason) = failed {
                return Err(CallError::ConnectFailedMeanwhile(reason));
            }
        }
        let made = self.make().await;
        *shared
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            made.as_ref().err().map(CallError::for_client);
        // Counted once it ended, so that the calls which waited for it see that it did.
        shared.attempts.fetch_add(1, Ordering::AcqRel);
        made
    }

    /// One attempt: TCP, then the HTTP/2 handshake; the connection is driven by a task of its own.
    async fn make(&self) -> Result<(u64, SendRequest<Bytes>), CallError> {
        let shared = &self.shared;
        let authority = shared.authority.as_str().to_owned();
        let address = format!(
            "{}:{}",
            shared.authority.host(),
            shared.authority.port_u16().unwrap_or(80)
        );
        let tcp =
            match tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(address))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(source)) => return Err(CallError::Connect { authority, source }),
                Err(_) => {
                    return Err(CallError::ConnectTimeout {
                        authority,
                        after: shared.config.connect_timeout,
                    });
                }
            };
        // Small requests should leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = handshake(OneWrite(tcp)).await?;
        // The attempts before this one, plus this one.
        let id = shared.attempts.load(Ordering::Acquire) + 1;
        *shared.open.lock().unwrap_or_else(PoisonError::into_inner) = Some((id, sender.clone()));
        tokio::spawn(drive(
            connection,
            Arc::downgrade(&self.shared),
            id,
            shared.config.clone(),
        ));
        Ok((id, sender))
    }
}

/// The request's head under `authority` — its own path, as it came (validated, and shared rather than copied) — and
/// its body.
fn head_for(
    authority: &http::uri::Authority,
    request: http::Request<Body>,
) -> Result<(http::Request<()>, Body), CallError> {
    let (mut parts, body) = request.into_parts();
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = http::Uri::from_parts(uri).map_err(|e| CallError::Request(e.to_string()))?;
    parts.version = http::Version::HTTP_2;
    Ok((http::Request::from_parts(parts, ()), body))
}

/// Sends a call over a connection ready for a new stream: what it returns waits for the response's headers only, the
/// request's head handed to h2 already.
fn send_on(
    mut sender: SendRequest<Bytes>,
    head: http::Request<()>,
    body: Body,
) -> Result<Sent, CallError> {
    let end_of_stream = body.is_end_stream();
    let (response, stream) = sender.send_request(head, end_of_stream)?;
    Ok(Sent {
        body: (!end_of_stream).then_some((body, stream)),
        response,
    })
}

/// A call handed to h2: the wait for its answer's head and, until it is first polled, its request's body.
///
/// The body goes at the first poll, not with the head: a call is dispatched as soon as its client's HEADERS are read,
/// and its client's DATA, which usually came in the same read, is read only after that — so by its first poll a unary
/// request's body is whole, and is queued behind the head to leave in the same write.
struct Sent {
    body: Option<(Body, h2::SendStream<Bytes>)>,
    response: h2::client::ResponseFuture,
}

impl Future for Sent {
    type Output = Result<http::Response<Body>, CallError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some((body, stream)) = self.body.take() {
            send_body(body, stream);
        }
        let (parts, recv) =
            std::task::ready!(std::pin::Pin::new(&mut self.response).poll(cx))?.into_parts();
        Poll::Ready(Ok(http::Response::from_parts(
            parts,
            Body::new(RecvBody::new(recv)),
        )))
    }
}

/// The HTTP/2 handshake over `io`, with the gateway's windows.
async fn handshake<T>(
    io: T,
) -> Result<(SendRequest<Bytes>, h2::client::Connection<T, Bytes>), h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buffer_size(MAX_SEND_BUFFER_BYTES)
        .handshake(io)
        .await
}

impl Shared {
    /// Forgets connection `id` (closed or failing), so that the next call makes a new one.
    fn forget(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.as_ref().is_some_and(|(open_id, _)| *open_id == id) {
            *open = None;
        }
    }
}

/// Runs connection `id` until it closes, or until a ping goes unanswered; then lets the next call make a new one.
async fn drive<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    shared: std::sync::Weak<Shared>,
    id: u64,
    config: ConnectionConfig,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let pings = connection.ping_pong();
    // Polled only when its timer fired, not on each of the connection's wakes (several per call).
    let pinging = pin!(keep_alive(pings, &config));
    let mut pinging = WhenWoken::new(pinging);
    tokio::select! {
        biased;
        closed = &mut connection => {
            if let Err(err) = closed {
                tracing::debug!(connection = id, error = %err, "backend connection closed");
            }
        }
        () = &mut pinging => {
            tracing::warn!(
                connection = id,
                timeout = ?config.keepalive_timeout,
                "backend connection closed: a ping went unanswered"
            );
        }
    }
    if let Some(shared) = shared.upgrade() {
        shared.forget(id);
    }
    // Dropping the connection fails the calls still on it.
}

/// Pings every `keepalive_interval`; returns when a ping goes unanswered for `keepalive_timeout`.
async fn keep_alive(pings: Option<h2::PingPong>, config: &ConnectionConfig) {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(config.keepalive_interval).await;
        match tokio::time::timeout(config.keepalive_timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection is closing: its own future says how.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// A connection to `authority` that pings rarely (for tests; the test of pings sets its own).
#[cfg(test)]
pub(super) fn connection_to(
    authority: impl std::fmt::Display,
    connect_timeout: Duration,
) -> Connection {
    let config = ConnectionConfig {
        connect_timeout,
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
    };
    let uri = format!("http://{authority}").parse().expect("uri");
    Connection::lazy(&uri, config).expect("an http:// URL")
}

#[cfg(test)]
mod tests;
