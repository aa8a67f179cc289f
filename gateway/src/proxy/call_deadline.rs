//! A call's deadline, enforced by the proxy with as few timers as the call needs.
//!
//! - A call the proxy works on — looked up in the cache, or read whole to be retried — is bounded as a whole by one
//!   timer: when it fires first, the call is answered DEADLINE_EXCEEDED, whatever it was waiting for.
//! - A call forwarded as it came has no timer here: the backend connection's bounds its answer's headers (a
//!   forwarded call waits on nothing else), so one timer serves it.
//! - A deadline the gateway set (`default_timeout`, or `max_timeout` clamping or bounding the client's) also bounds a
//!   streamed answer to its end ([`stream_deadline`]): the client's own timer will not fire first.
//! - A backend that was told the time left and gave up at the deadline with CANCELLED (tonic servers do) answered for
//!   the deadline: the client reads DEADLINE_EXCEEDED.

use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use tokio::time::Instant;
use tonic::body::Body;

use super::{Outcome, stream_deadline};
use crate::error::GatewayError;
use crate::grpc::deadline::Deadline;

/// A call's deadline as the proxy enforces it.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallDeadline {
    /// The deadline the backend is called under: the client's, or one the gateway set.
    pub deadline: Deadline,
    /// Whether the gateway set it (so it, not the client, ends a streamed answer).
    pub set_by_gateway: bool,
}

impl CallDeadline {
    /// The deadline of a call to `backend_deadline`'s backend whose client asked for `client`.
    pub fn new(client: Deadline, backend_deadline: Deadline) -> Self {
        Self {
            deadline: backend_deadline,
            set_by_gateway: backend_deadline.at() != client.at(),
        }
    }

    /// `call` — all the proxy does for a call it works on — answered DEADLINE_EXCEEDED if the deadline passes first.
    pub fn bound_whole<'a>(
        self,
        call: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>,
    ) -> impl Future<Output = Outcome> + Send + 'a {
        match self.deadline.at() {
            None => Either::Right(call),
            Some(at) => {
                Either::Left(tokio::time::timeout_at(at, call).map(
                    move |answered| match answered {
                        Ok(answer) => self.settle(answer, at),
                        Err(_) => (self.exceeded(), None),
                    },
                ))
            }
        }
    }

    /// A forwarded call's answer, settled against the deadline once its headers arrived (the backend connection
    /// bounded the wait for them).
    pub fn settled(self, response: http::Response<Body>) -> Outcome {
        match self.deadline.at() {
            Some(at) => self.settle((response, None), at),
            None => (response, None),
        }
    }

    /// An answer that arrived in time, for a deadline passing `at`: a CANCELLED given up at the deadline is the
    /// deadline's; a streamed answer under a deadline the gateway set ends by it.
    fn settle(self, (response, cache): Outcome, at: Instant) -> Outcome {
        if Instant::now() >= at && is_cancelled(&response) {
            return (self.exceeded(), cache);
        }
        match cache {
            None if self.set_by_gateway => {
                (stream_deadline::bound(response, at, self.requested()), None)
            }
            _ => (response, cache),
        }
    }

    /// The answer of a call whose deadline passed.
    fn exceeded(self) -> http::Response<Body> {
        GatewayError::Deadline(self.requested()).to_response(None)
    }

    /// The timeout the deadline stands for, for the answer's message.
    fn requested(self) -> Duration {
        self.deadline.requested().unwrap_or_default()
    }
}

/// Whether an answer is a Trailers-Only CANCELLED.
fn is_cancelled(response: &http::Response<Body>) -> bool {
    crate::grpc::code::status_in(response.headers()) == Some(tonic::Code::Cancelled as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::code::status_in;

    const TIMEOUT: Duration = Duration::from_millis(100);

    /// A deadline the client asked for, enforced as the client's.
    fn clients() -> CallDeadline {
        let client = Deadline::after(TIMEOUT);
        CallDeadline::new(client, client)
    }

    /// A deadline the gateway gave a call whose client sent none.
    fn gateways() -> CallDeadline {
        CallDeadline::new(Deadline::default(), Deadline::after(TIMEOUT))
    }

    fn assert_code(response: &http::Response<Body>, code: tonic::Code) {
        assert_eq!(status_in(response.headers()), Some(code as i32));
    }

    fn answered(code: tonic::Code) -> http::Response<Body> {
        tonic::Status::new(code, "backend").into_http()
    }

    /// An answer whose body streams until its sender goes.
    fn streamed() -> (http::Response<Body>, tokio::sync::mpsc::Sender<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let frames = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|_| None::<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>)
        });
        let body = Body::new(http_body_util::StreamBody::new(frames));
        (http::Response::new(body), tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_outlives_its_deadline_is_answered_deadline_exceeded() {
        let (response, cache) = clients()
            .bound_whole(Box::pin(std::future::pending()))
            .await;
        assert_code(&response, tonic::Code::DeadlineExceeded);
        assert!(cache.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_ready_at_the_deadline_is_still_the_answer() {
        let call = clients().bound_whole(Box::pin(async {
            tokio::time::sleep(TIMEOUT).await;
            (answered(tonic::Code::NotFound), None)
        }));
        let (response, _) = call.await;
        assert_code(&response, tonic::Code::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_a_deadline_waits_for_its_answer() {
        let none = CallDeadline::new(Deadline::default(), Deadline::default());
        let (response, _) = none
            .bound_whole(Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                (answered(tonic::Code::NotFound), None)
            }))
            .await;
        assert_code(&response, tonic::Code::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_gave_up_at_the_deadline_answers_deadline_exceeded() {
        for deadline in [clients(), gateways()] {
            let forwarded = async {
                tokio::time::sleep(TIMEOUT).await;
                answered(tonic::Code::Cancelled)
            };
            let (response, _) = deadline.settled(forwarded.await);
            assert_code(&response, tonic::Code::DeadlineExceeded);
        }
        // Before the deadline, CANCELLED is the backend's own answer.
        let (response, _) = clients().settled(answered(tonic::Code::Cancelled));
        assert_code(&response, tonic::Code::Cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_deadline_the_gateway_set_ends_a_streamed_answer() {
        use http_body_util::BodyExt;
        let (response, _sender) = streamed();
        let (response, _) = gateways().settled(response);
        let trailers = response
            .into_body()
            .collect()
            .await
            .expect("ends with trailers")
            .trailers()
            .cloned()
            .expect("trailers");
        assert_eq!(
            status_in(&trailers),
            Some(tonic::Code::DeadlineExceeded as i32)
        );

        // The client's own deadline is the client's to enforce on the stream: the answer streams on past it.
        let (response, sender) = streamed();
        let (response, _) = clients().settled(response);
        let mut body = response.into_body();
        tokio::time::sleep(TIMEOUT * 2).await;
        let pending = futures::poll!(std::pin::pin!(body.frame()));
        assert!(pending.is_pending(), "the stream is still open");
        drop(sender);
        assert!(body.frame().await.is_none(), "ended by the backend");
    }
}
