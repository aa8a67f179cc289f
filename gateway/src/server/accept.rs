//! Accepting connections on a bound listener until shutdown, closing those on which no call starts for a while, and
//! at shutdown letting in-flight calls finish within a grace.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::when_woken::WhenWoken;

/// A served connection that can be asked to finish: it takes no new calls (HTTP/2 GOAWAY) and ends once the calls
/// in flight have.
pub trait Served: Future<Output = Result<(), Self::Error>> {
    /// Why the connection ended badly.
    type Error: std::fmt::Display;

    /// Takes no new calls; the connection ends when those in flight do.
    fn finish(self: Pin<&mut Self>);
}

impl<I, S, E, B> Served for hyper_util::server::conn::auto::Connection<'static, I, S, E>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn finish(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// When a call last started on a connection: the connection marks each call, its task reads it.
#[derive(Debug, Clone)]
pub struct Activity(Arc<ActivityInner>);

#[derive(Debug)]
struct ActivityInner {
    since: Instant,
    /// Milliseconds from `since` to the last call's start.
    last_call_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityInner {
            since: Instant::now(),
            last_call_ms: AtomicU64::new(0),
        }))
    }

    /// Notes that a call starts now.
    pub fn call_started(&self) {
        let ms = u64::try_from(self.0.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_call_ms.store(ms, Ordering::Relaxed);
    }

    /// When the last call started (or the connection was accepted, before any).
    fn last_call(&self) -> Instant {
        self.0.since + Duration::from_millis(self.0.last_call_ms.load(Ordering::Relaxed))
    }
}

/// How a listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// At shutdown, how long in-flight calls may take to finish.
    pub grace: Duration,
    /// A connection on which no call started for this long is asked to finish (`None`: never).
    pub idle: Option<Duration>,
}

/// Serves every connection accepted on `listener` until `shutdown` completes; then stops accepting, asks each
/// connection to finish its in-flight calls, and waits up to `limits.grace` for them. A connection on which no call
/// started for `limits.idle` is asked to finish meanwhile.
///
/// `connect` turns an accepted TCP stream into a connection to serve (after a TLS handshake, say), or `None` to drop
/// it; it runs in the connection's own task, so a slow handshake holds up no one else. Its [`Activity`] is the one
/// the connection marks its calls on.
pub async fn serve<F, Fut, C>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    connect: F,
) where
    F: Fn(TcpStream, Activity) -> Fut,
    Fut: Future<Output = Option<C>> + Send + 'static,
    C: Served + Send + 'static,
{
    // Each connection's task holds a receiver: shutdown sends `true`, then waits until every receiver is gone.
    let (stop, _) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small gRPC answers should leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let activity = Activity::new();
                    let connecting = connect(stream, activity.clone());
                    let stopped = stop.subscribe();
                    tokio::spawn(async move {
                        let Some(connection) = connecting.await else { return };
                        if let Err(err) = run(connection, activity, limits.idle, stopped).await {
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors and the like: log, breathe, keep serving the connections we have.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let grace = limits.grace;
    if tokio::time::timeout(grace, stop.closed()).await.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight calls still running after the shutdown grace; closing them"
        );
    }
}

/// Drives one connection to its end, asking it to finish at shutdown or once it has been idle for `idle`.
async fn run<C: Served>(
    connection: C,
    activity: Activity,
    idle: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), C::Error> {
    let mut connection = pin!(connection);
    // Polled only when shutdown or the idle timer woke the task, not on each of the connection's wakes (several
    // per call).
    let asked = pin!(asked_to_finish(&activity, idle, &mut stopped));
    let mut asked = WhenWoken::new(asked);
    let mut finishing = false;
    loop {
        tokio::select! {
            biased;
            ended = connection.as_mut() => return ended,
            () = &mut asked, if !finishing => {
                connection.as_mut().finish();
                finishing = true;
            }
        }
    }
}

/// Completes when a connection should finish: at shutdown, or once no call started on it for `idle`.
async fn asked_to_finish(
    activity: &Activity,
    idle: Option<Duration>,
    stopped: &mut watch::Receiver<bool>,
) {
    let idle_for = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let quiet_until = activity.last_call() + idle;
            if Instant::now() >= quiet_until {
                tracing::debug!(?idle, "closing an idle connection");
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };
    tokio::select! {
        // Shutdown sent `true`, or the listener is gone: either way, no new calls.
        _ = stopped.changed() => {}
        () = idle_for => {}
    }
}
