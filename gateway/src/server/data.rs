//! The data listener: every accepted connection, after its TLS handshake when TLS is on, served over HTTP/2 by the
//! data stack until shutdown.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::accept::{self, Limits, MarksCalls};
use super::local_streams::{LocalStreams, StreamQueue};
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
    match tls {
        None => {
            accept::serve(listener, shutdown, limits, |stream, activity| {
                let service = MarksCalls::new(service.clone(), activity);
                async move {
                    // A client that connects and sends nothing must not hold a task (or the shutdown) forever.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(PREFACE_WITHIN, stream.peek(&mut first)).await {
                        Ok(Ok(1..)) => Some(http2(TokioIo::new(OneWrite(stream)), service)),
                        _ => None,
                    }
                }
            })
            .await;
        }
        Some(tls) => {
            accept::serve(listener, shutdown, limits, |stream, activity| {
                let (acceptor, service) =
                    (tls.acceptor(), MarksCalls::new(service.clone(), activity));
                async move {
                    // A client that never finishes its handshake must not hold a task (or the shutdown) forever.
                    match tokio::time::timeout(TLS_HANDSHAKE_WITHIN, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => Some(http2(TokioIo::new(OneWrite(stream)), service)),
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

/// One connection served over HTTP/2, its calls run in its own task (see [`LocalStreams`]).
fn http2<I>(
    io: I,
    service: MarksCalls<DataService>,
) -> LocalStreams<hyper::server::conn::http2::Connection<I, MarksCalls<DataService>, StreamQueue>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let calls = StreamQueue::default();
    let mut h2 = hyper::server::conn::http2::Builder::new(calls.clone());
    h2.timer(hyper_util::rt::TokioTimer::new());
    LocalStreams::new(h2.serve_connection(io, service), calls)
}
