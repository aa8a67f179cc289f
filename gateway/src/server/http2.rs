//! A data connection served over HTTP/2 by h2 itself: its settings, and each stream that opens made a call of the
//! data stack, which [`LocalStreams`](super::local_streams::LocalStreams) runs in the connection's task.
//!
//! No HTTP server framework between h2 and the stack: the gateway speaks only HTTP/2, and the calls only need their
//! request (head and body as h2 received them) and a way to answer. A call's future is its stack's future and the
//! sending of its answer (see [`served_call`](super::served_call)); a client's reset cancels it.

use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::body::Body;
use tower::Service;

use super::accept::Activity;
use super::local_streams::{CallSource, NextCall};
use super::served_call::{self, Answered};
use super::stack::DataService;
use crate::h2_body::RecvBody;

/// What each connection tells its client, and holds it to. The values hyper's server used before h2 served the
/// connections directly: windows of 1 MiB (HTTP/2's 64 KiB default throttles a large message on a fast link), frames
/// of 16 KiB, metadata up to 16 KiB, 200 calls in flight at once, and up to 400 KiB of answer queued per call.
mod settings {
    pub const STREAM_WINDOW: u32 = 1024 * 1024;
    pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
    pub const MAX_FRAME_SIZE: u32 = 16 * 1024;
    pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
    pub const MAX_CONCURRENT_STREAMS: u32 = 200;
    pub const MAX_SEND_BUFFER_SIZE: usize = 400 * 1024;
    /// Streams the gateway itself may reset for errors before the connection is closed as abusive.
    pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
}

/// One HTTP/2 connection of the data listener: h2's connection, and the stack its calls go through.
pub struct Http2<IO> {
    connection: h2::server::Connection<IO, Bytes>,
    service: DataService,
    activity: Activity,
}

impl<IO> Http2<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Completes the HTTP/2 handshake on `io` (the server's SETTINGS out, the client's preface in); its calls go to
    /// `service`, each marked on `activity`.
    pub async fn handshake(
        io: IO,
        service: DataService,
        activity: Activity,
    ) -> Result<Self, h2::Error> {
        let connection = h2::server::Builder::new()
            .initial_window_size(settings::STREAM_WINDOW)
            .initial_connection_window_size(settings::CONNECTION_WINDOW)
            .max_frame_size(settings::MAX_FRAME_SIZE)
            .max_header_list_size(settings::MAX_HEADER_LIST_SIZE)
            .max_concurrent_streams(settings::MAX_CONCURRENT_STREAMS)
            .max_send_buffer_size(settings::MAX_SEND_BUFFER_SIZE)
            .max_local_error_reset_streams(Some(settings::MAX_LOCAL_ERROR_RESET_STREAMS))
            .handshake(io)
            .await?;
        Ok(Self {
            connection,
            service,
            activity,
        })
    }
}

impl<IO> CallSource for Http2<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Error = h2::Error;
    type Answered = Answered;

    fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<NextCall<Answered, h2::Error>> {
        loop {
            let (request, mut respond) = match ready!(self.connection.poll_accept(cx)) {
                Some(Ok(stream)) => stream,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            };
            self.activity.call_started();
            // No layer of the data stack holds calls back (load shedding refuses them instead), so it is always
            // ready; were it ever not, the client may send the call again.
            if !matches!(self.service.poll_ready(cx), Poll::Ready(Ok(()))) {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            }
            let call = self
                .service
                .call(request.map(|recv| Body::new(RecvBody::new(recv))));
            return Poll::Ready(Some(Ok(Box::pin(served_call::serve(call, respond)))));
        }
    }

    fn finish(&mut self) {
        self.connection.graceful_shutdown();
    }
}
