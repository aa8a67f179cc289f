//! The data listener: every accepted connection, after its TLS handshake when TLS is on, served over HTTP/2 by the
//! data stack until shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::accept::{self, Activity, Limits};
use super::http2::Http2;
use super::local_streams::LocalStreams;
use super::stack::DataService;
use crate::one_write::OneWrite;
use crate::tls::ServerTls;

/// The longest a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// The longest a plaintext client may take to send its first byte after connecting, and any client the rest of its
/// HTTP/2 preface.
const PREFACE_WITHIN: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` (with `tls` when given) until `shutdown` completes, then drains within `limits`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<&ServerTls>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    service: DataService,
) {
    match tls {
        None => {
            accept::serve(listener, shutdown, limits, |stream, activity| {
                let service = service.clone();
                async move {
                    // A client that connects and sends nothing must not hold a task (or the shutdown) forever.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(PREFACE_WITHIN, stream.peek(&mut first)).await {
                        Ok(Ok(1..)) => http2(OneWrite(stream), service, activity).await,
                        _ => None,
                    }
                }
            })
            .await;
        }
        Some(tls) => {
            accept::serve(listener, shutdown, limits, |stream, activity| {
                let (acceptor, service) = (tls.acceptor(), service.clone());
                async move {
                    // A client that never finishes its handshake must not hold a task (or the shutdown) forever.
                    match tokio::time::timeout(TLS_HANDSHAKE_WITHIN, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => http2(OneWrite(stream), service, activity).await,
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "TLS handshake failed");
                            None
                        }
                        Err(_) => None,
                    }
                }
            })
            .await;
        }
    }
}

/// One connection served over HTTP/2 once its client's preface has come (within [`PREFACE_WITHIN`]), its calls run
/// in its own task (see [`LocalStreams`]).
async fn http2<IO>(
    io: IO,
    service: DataService,
    activity: Activity,
) -> Option<LocalStreams<Http2<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(PREFACE_WITHIN, Http2::handshake(io, service, activity)).await {
        Ok(Ok(connection)) => Some(LocalStreams::new(connection)),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "HTTP/2 handshake failed");
            None
        }
        Err(_) => None,
    }
}
