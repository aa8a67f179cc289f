//! Accepting connections on a bound listener until shutdown, then letting in-flight calls finish within a grace.

use std::future::Future;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use tokio::net::{TcpListener, TcpStream};

/// Serves every connection accepted on `listener` until `shutdown` completes; then stops accepting, asks each
/// connection to finish its in-flight calls, and waits up to `grace` for them.
///
/// `connect` turns an accepted TCP stream into a connection to serve (after a TLS handshake, say), or `None` to drop
/// it; it runs in the connection's own task, so a slow handshake holds up no one else.
pub async fn serve<F, Fut, C>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    connect: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Option<C>> + Send + 'static,
    C: GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small gRPC answers should leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let connecting = connect(stream);
                    tokio::spawn(async move {
                        let Some(connection) = connecting.await else { return };
                        if let Err(err) = watcher.watch(connection).await {
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
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight calls still running after the shutdown grace; closing them"
        );
    }
}
