//! The client's deadline, enforced: read from `grpc-timeout` once, handed to the rest of the stack in the request's
//! extensions ([`Deadline`]), and enforced around everything the gateway does for the call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tonic::body::Body;

use crate::error::GatewayError;
use crate::grpc::deadline::Deadline;

/// Adds [`DeadlineService`] to a stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

/// Puts the call's [`Deadline`] in the request's extensions and answers DEADLINE_EXCEEDED itself when it passes.
///
/// For a unary call the deadline bounds everything (reading the request, waiting for a flight, calling the
/// backend). For a streaming call it bounds getting the response headers; after that the backend, which receives the
/// time left as its own `grpc-timeout`, bounds the rest.
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for DeadlineService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let deadline = Deadline::from_headers(request.headers());
        // No deadline is what an absent extension means: inserting one would cost three allocations per call.
        if deadline.at().is_some() {
            request.extensions_mut().insert(deadline);
        }
        let call = self.inner.call(request);
        match deadline.at() {
            Some(at) => DeadlineFuture::Bounded {
                call,
                expiry: Box::pin(tokio::time::sleep_until(at)),
                requested: deadline.requested().unwrap_or_default(),
            },
            None => DeadlineFuture::Unbounded(call),
        }
    }
}

/// A call under [`DeadlineService`]: a named future rather than a boxed one, so that a call without a deadline costs
/// no allocation here.
pub enum DeadlineFuture<F> {
    /// The client set no deadline: the call as it is.
    Unbounded(F),
    /// The call, answered with DEADLINE_EXCEEDED if `expiry` comes first.
    Bounded {
        call: F,
        expiry: Pin<Box<tokio::time::Sleep>>,
        /// The timeout the client asked for, for the answer's message.
        requested: Duration,
    },
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Unbounded(call) => Pin::new(call).poll(cx),
            Self::Bounded {
                call,
                expiry,
                requested,
            } => {
                // The call first: an answer ready at the deadline is still the answer.
                if let Poll::Ready(answer) = Pin::new(call).poll(cx) {
                    return Poll::Ready(answer);
                }
                ready!(expiry.as_mut().poll(cx));
                Poll::Ready(Ok(GatewayError::Deadline(*requested).to_response(None)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn request(timeout: &'static str) -> http::Request<Body> {
        http::Request::post("/demo.v1.Catalog/GetItem")
            .header("grpc-timeout", timeout)
            .body(Body::empty())
            .expect("request")
    }

    fn answered(code: &'static str) -> http::Response<Body> {
        let mut response = http::Response::new(Body::empty());
        response
            .headers_mut()
            .insert("x-answered-by", http::HeaderValue::from_static(code));
        response
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_outlives_its_deadline_is_answered_deadline_exceeded() {
        let never = tower::service_fn(|_| std::future::pending::<Result<_, Infallible>>());
        let mut service = DeadlineLayer.layer(never);
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request("100m"))
            .await
            .expect("infallible");
        assert_eq!(
            crate::grpc::code::status_in(response.headers()),
            Some(tonic::Code::DeadlineExceeded as i32)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_ready_at_the_deadline_is_still_the_answer() {
        let at_once = tower::service_fn(|_| std::future::ready(Ok(answered("backend"))));
        let mut service = DeadlineLayer.layer(at_once);
        let call = service.ready().await.expect("ready").call(request("100m"));
        // Both are ready when the call is first polled.
        tokio::time::advance(Duration::from_millis(200)).await;
        let response = call.await.expect("infallible");
        assert_eq!(response.headers()["x-answered-by"], "backend");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_a_deadline_waits_for_its_answer() {
        let later = tower::service_fn(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, Infallible>(answered("backend"))
            })
        });
        let mut service = DeadlineLayer.layer(later);
        let no_deadline = http::Request::post("/demo.v1.Catalog/GetItem")
            .body(Body::empty())
            .expect("request");
        let call = service.ready().await.expect("ready").call(no_deadline);
        assert!(matches!(call, DeadlineFuture::Unbounded(_)));
        let response = call.await.expect("infallible");
        assert_eq!(response.headers()["x-answered-by"], "backend");
    }
}
