//! The client's deadline, enforced: read from `grpc-timeout` once, handed to the rest of the stack in the request's
//! extensions ([`Deadline`]), and enforced around everything the gateway does for the call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

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
        Box::pin(async move {
            match deadline.at() {
                Some(at) => match tokio::time::timeout_at(at, call).await {
                    Ok(response) => response,
                    Err(_) => Ok(
                        GatewayError::Deadline(deadline.requested().unwrap_or_default())
                            .to_response(None),
                    ),
                },
                None => call.await,
            }
        })
    }
}
