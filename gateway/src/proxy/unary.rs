//! The cached path for a unary call: one bounded request message → key → [`strata_cache::Tiered::get`] → replay.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use http::request::Parts;
use tonic::body::Body;

use super::loader::{BackendLoader, StreamSink};
use super::metadata::PrivateSink;
use super::{Proxy, cache_key, passthrough, replay};
use crate::error::GatewayError;
use crate::grpc::body::{self, Shape};
use crate::grpc::deadline::Deadline;
use crate::grpc::frame::{self, Message};
use crate::grpc::message_count::OnSecondMessage;
use crate::grpc::{CACHE_STATUS, CacheResult};
use crate::route::rate_limit::RateLimit;
use crate::route::{CacheRule, Route};
use crate::schema::canonical::CanonicalKey;

/// How long a request's first message, or its end after that message (or the end of a backend's answer after its
/// first message), may take, on a method the gateway has no descriptor for, before the call is taken for a stream and
/// carried through as one. A unary client sends its message and half-closes at once (and a unary backend sends its
/// status with its answer), so only a peer or a gateway stalled this long carries a unary call uncached; a
/// bidirectional client waiting for an answer before it sends waits this long, until its method is seen to stream.
pub const END_WAIT: Duration = Duration::from_millis(500);

/// What the gateway knows of a call's method when it reaches the cached path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// A descriptor says the method is unary: a second message is an error.
    Known,
    /// No descriptor: the call may turn out to stream, and is then carried through intact, uncached.
    Presumed,
}

/// Answers a call on a cached route, its messages encoded with `codec`, its key built from its canonical form when
/// `canonical` is given; says where the answer came from, for the metrics.
#[allow(clippy::too_many_arguments)]
pub(super) async fn answer(
    proxy: &Proxy,
    route: &Route,
    rule: &Arc<CacheRule>,
    request: http::Request<Body>,
    codec: &cache_key::Codec,
    deadline: Deadline,
    unary: Unary,
    canonical: Option<&CanonicalKey>,
) -> (http::Response<Body>, Option<CacheResult>) {
    let limit = proxy.options.max_request_bytes;
    let (parts, message) = match read_request(route, request, limit, unary).await {
        Ok(Request::Unary(parts, message)) => (parts, message),
        Ok(Request::Stream(request)) => {
            // Boxed, like every path an L1 hit does not take: it keeps the hit's future small.
            return (
                Box::pin(carry_stream(proxy, route, request, deadline)).await,
                None,
            );
        }
        Err(refused) => return (refused, None),
    };

    // Compressed bytes depend on the client's encoder, so they make no stable key; a call carrying credentials the
    // key does not vary on must not share answers with other callers. Both go to the backend without the cache.
    if message.compressed || rule.must_bypass(&parts.headers) {
        // Boxed, like every path an L1 hit does not take: it keeps the hit's future small.
        let bypassed = Box::pin(bypass(proxy, route, parts, message, deadline));
        return (bypassed.await, Some(CacheResult::Bypass));
    }

    // On a route with key rules, a request of a known type is keyed by its canonical form; one that does not decode
    // as its type is the backend's to judge, uncached.
    let canonical = match (canonical, codec) {
        (Some(canonical), cache_key::Codec::Proto) => match canonical.of_bytes(&message.bytes) {
            Ok(form) => Some(form),
            Err(_) => {
                let bypassed = Box::pin(bypass(proxy, route, parts, message, deadline));
                return (bypassed.await, Some(CacheResult::Bypass));
            }
        },
        _ => None,
    };
    let request = match &canonical {
        Some(form) => cache_key::RequestForm::Canonical(form),
        None => cache_key::RequestForm::Bytes(&message.bytes),
    };
    let key = cache_key::key_for(
        &proxy.cache,
        &proxy.options.namespace,
        route.matcher(),
        parts.uri.path(),
        &rule.vary,
        &parts.headers,
        codec,
        request,
    )
    .await;

    let private = PrivateSink::default();
    let stream = StreamSink::default();
    let loader = BackendLoader {
        backend: route.backend.clone(),
        rule: rule.clone(),
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers: parts.headers,
        message: message.bytes,
        max_response_bytes: proxy.options.max_response_bytes,
        private: private.clone(),
        stats: proxy.stats.clone(),
        misses_limit: misses_limit(route).cloned(),
        end_wait: (unary == Unary::Presumed).then_some(END_WAIT),
        stream: stream.clone(),
    };
    match proxy.cache.get(key, &rule.policy, loader).await {
        Ok(lookup) => {
            // Only the caller whose own request fetched the answer sees its private metadata (e.g. set-cookie).
            let private = private
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let source = CacheResult::from(lookup.source);
            // A replayed answer says how long it has been stored; one fetched for this caller is as the backend sent.
            let age = (lookup.source != strata_cache::Source::Miss)
                .then(|| replay::age(&lookup.entry, proxy.cache.clock().now()))
                .flatten();
            let response = replay::response(
                &lookup.entry,
                proxy.cache_status(source),
                private.as_ref(),
                age,
            );
            (response, Some(source))
        }
        Err(err) => {
            // The backend answered this caller's own request with a stream: it is relayed, and the method is known
            // to stream from now on.
            let streamed = stream.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(response) = streamed {
                proxy.streams_seen.learn(parts.uri.path());
                return (response, None);
            }
            (
                GatewayError::from(&err).to_response(proxy.cache_status(CacheResult::Miss)),
                Some(CacheResult::Miss),
            )
        }
    }
}

/// A request read as far as the cached path needs.
enum Request {
    /// Its one message.
    Unary(Parts, Message),
    /// A stream: the client sent a second message, or did not end its request after the first.
    Stream(http::Request<Body>),
}

/// Reads the one request message of a call (at most `limit` bytes), or the answer refusing it. Bounded by the
/// call's deadline (`call_deadline`) and, for clients that send none, by the backend timeout: a client that never
/// finishes its request cannot hold the call open forever.
///
/// A presumed-unary call that turns out to stream is handed back whole, to be carried through as it came.
async fn read_request(
    route: &Route,
    request: http::Request<Body>,
    limit: u64,
    unary: Unary,
) -> Result<Request, http::Response<Body>> {
    let (parts, body) = request.into_parts();
    let timeout = route.backend.timeout;
    let read = match unary {
        Unary::Known => tokio::time::timeout(timeout, body::read_unary(body, limit))
            .await
            .map(|read| read.map(|message| Request::Unary(parts, message))),
        Unary::Presumed => {
            let read = body::read_unary_or_stream(body, limit, END_WAIT);
            tokio::time::timeout(timeout, read).await.map(|read| {
                read.map(|shape| match shape {
                    Shape::Unary(body::Unary {
                        message: Some(message),
                        ..
                    }) => Request::Unary(parts, message),
                    // No message at all is not a unary request: a client stream that sent nothing.
                    Shape::Unary(_) => {
                        Request::Stream(http::Request::from_parts(parts, Body::empty()))
                    }
                    Shape::Stream(replay) => {
                        Request::Stream(http::Request::from_parts(parts, Body::new(replay)))
                    }
                })
            })
        }
    };
    match read {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(err)) => Err(GatewayError::from_request_read(err, limit).to_response(None)),
        Err(_) => Err(GatewayError::RequestTimeout(timeout).to_response(None)),
    }
}

/// Carries a call that turned out to stream through to the backend as it came, uncached; subject to a limit on
/// misses like any call that reaches the backend.
async fn carry_stream(
    proxy: &Proxy,
    route: &Route,
    request: http::Request<Body>,
    deadline: Deadline,
) -> http::Response<Body> {
    if let Some(limit) = misses_limit(route) {
        if let Err(refused) = limit.check(request.headers()) {
            proxy.stats.count_rate_limited();
            return refused.to_response(None);
        }
    }
    let path = request.uri().path().to_owned();
    let response = passthrough::forward(&route.backend, request, deadline).await;
    // An answer of two messages or more shows the method streams: later calls are carried through at once.
    let streams_seen = proxy.streams_seen.clone();
    response.map(|body| {
        Body::new(OnSecondMessage::new(body, move || {
            streams_seen.learn(&path)
        }))
    })
}

/// Forwards the already-read request to the backend and relays the answer as it comes, uncached (`bypass`): counted,
/// and subject to a limit on misses like any call that reaches the backend.
async fn bypass(
    proxy: &Proxy,
    route: &Route,
    parts: Parts,
    message: Message,
    deadline: Deadline,
) -> http::Response<Body> {
    proxy.stats.count_bypass();
    if let Some(limit) = misses_limit(route) {
        if let Err(refused) = limit.check(&parts.headers) {
            proxy.stats.count_rate_limited();
            return refused.to_response(proxy.cache_status(CacheResult::Bypass));
        }
    }
    let prefix = frame::header_with_flag(message.compressed, message.bytes.len());
    let body = futures::stream::iter(
        [prefix, message.bytes]
            .map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b))),
    );
    let request =
        http::Request::from_parts(parts, Body::new(http_body_util::StreamBody::new(body)));
    let mut response = passthrough::forward(&route.backend, request, deadline).await;
    if let Some(result) = proxy.cache_status(CacheResult::Bypass) {
        response.headers_mut().insert(
            CACHE_STATUS,
            http::HeaderValue::from_static(result.as_str()),
        );
    }
    response
}

/// The route's rate limit when it counts only the calls that reach the backend.
fn misses_limit(route: &Route) -> Option<&Arc<RateLimit>> {
    route
        .rate_limit
        .as_ref()
        .filter(|l| l.apply_to == crate::config::ApplyTo::Misses)
}
