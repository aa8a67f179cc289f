//! The data listener: every accepted connection, after its TLS handshake when TLS is on, served over HTTP/2 by the
//! data stack until shutdown.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::accept::{self, Limits, MarksCalls};
use super::stack::DataService;
use crate::one_write::OneWrite;
use crate::tls::ServerTls;

/// The longest a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// The longest a plaintext client may take to send its first byte (the HTTP/2 preface) after connecting.
const PREFACE_WITHIN: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` (with `tls` when given) until `shutdown` completes, then drains within `limits`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<&ServerTls>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    service: DataService,
) {
    let mut h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    h2.timer(hyper_util::rt::TokioTimer::new());
    match tls {
        None => {
            accept::serve(listener, shutdown, limits, |stream, activity| {
                let (h2, service) = (h2.clone(), MarksCalls::new(service.clone(), activity));
                async move {
                    // A client that connects and sends nothing must not hold a task (or the shutdown) forever.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(PREFACE_WITHIN, stream.peek(&mut first)).await {
                        Ok(Ok(1..)) => {
                            Some(h2.serve_connection(TokioIo::new(OneWrite(stream)), service))
                        }
                        _ => None,
                    }
                }
            })
            .await;
        }
        Some(tls) => {
            accept::serve(listener, shutdown, limits, |stream, activity| {
                let (acceptor, h2, service) = (
                    tls.acceptor(),
                    h2.clone(),
                    MarksCalls::new(service.clone(), activity),
                );
                async move {
                    // A client that never finishes its handshake must not hold a task (or the shutdown) forever.
                    match tokio::time::timeout(TLS_HANDSHAKE_WITHIN, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            Some(h2.serve_connection(TokioIo::new(OneWrite(stream)), service))
                        }
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
