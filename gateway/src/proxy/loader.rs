//! The cache's [`Loader`] for a gRPC call: send the one request message to the backend, collect its whole answer,
//! and decide whether and how long it may be stored.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::uri::PathAndQuery;
use strata_cache::{Entry, Fetched, LoadError, LoadMode, Loader};
use tonic::Code;
use tonic::body::Body;

use super::metadata::{self, PrivateMetadata, PrivateSink};
use crate::backend::{Backend, retry};
use crate::error::{GatewayError, code_for_http_status};
use crate::grpc::body::{self, ReadError, Shape};
use crate::grpc::compression;
use crate::grpc::deadline::Deadline;
use crate::grpc::frame::FrameError;
use crate::grpc::message_body::MessageBody;
use crate::metrics::ProxyStats;
use crate::route::CacheRule;
use crate::route::cache_control::CacheControl;
use crate::route::rate_limit::RateLimit;
use crate::route::storage::{Storage, is_backend_failure};

/// Fetches one unary answer from a backend on behalf of the cache.
#[derive(Debug)]
pub struct BackendLoader {
    /// Where to send the call.
    pub backend: Arc<Backend>,
    /// The route's caching rules.
    pub rule: Arc<CacheRule>,
    /// The method path.
    pub path: PathAndQuery,
    /// The client's request headers (prepared for the backend in [`Loader::load`]).
    pub headers: HeaderMap,
    /// The request message.
    pub message: Bytes,
    /// Largest answer to collect.
    pub max_response_bytes: u64,
    /// Where the private metadata of the answer goes, for this loader's own caller.
    pub private: PrivateSink,
    /// Counters of the data path.
    pub stats: Arc<ProxyStats>,
    /// The route's rate limit when it counts only calls that reach the backend.
    pub misses_limit: Option<Arc<RateLimit>>,
    /// `Some` when the method may stream (the gateway has no descriptor for it): how long to wait for the end of
    /// the answer after its first message before taking it for a stream.
    pub end_wait: Option<Duration>,
    /// Where a streaming answer goes, for this loader's own caller.
    pub stream: StreamSink,
}

/// Where a loader leaves a backend's streaming answer for its own caller: a method the gateway has no descriptor for
/// turned out to stream. The answer is that caller's alone; the others waiting for the key call for themselves.
pub type StreamSink = Arc<std::sync::Mutex<Option<http::Response<Body>>>>;

/// A method the gateway took for unary answered with a stream; the stream went to the caller whose request it was.
#[derive(Debug, thiserror::Error)]
#[error("the backend answered {path} with a stream: relayed to its caller, not cached")]
pub struct StreamingAnswer {
    /// The method.
    pub path: String,
}

impl Loader for BackendLoader {
    /// The backend's timeout: the fetch runs under it, retries included, and never under one caller's deadline (the
    /// callers waiting for it each stop at their own).
    fn time_limit(&self) -> Duration {
        self.backend.timeout
    }

    async fn load(self, mode: LoadMode) -> Result<Fetched, LoadError> {
        if let Some(limit) = &self.misses_limit {
            if let Err(refused) = limit.check(&self.headers) {
                self.stats.count_rate_limited();
                // This caller's own refusal: the others waiting for the same key fetch for themselves.
                return Err(LoadError::callers_own(refused));
            }
        }
        let budget = self.backend.timeout;
        let (entry, cache_control, private) = match self.fetch_with_retries(budget).await {
            Ok(Collected::Whole(answer)) => answer,
            Ok(Collected::Stream(response)) => {
                // A refresh in the background has no caller to give it to: dropping it cancels the call.
                if mode == LoadMode::Foreground {
                    *self.stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(response);
                }
                return Err(LoadError::callers_own(StreamingAnswer {
                    path: self.path.path().to_owned(),
                }));
            }
            // The channel's own deadline timer, or ours: the backend's time ran out.
            Err(GatewayError::BackendDeadline { .. }) => {
                return Err(LoadError::new(GatewayError::BackendTimeout {
                    backend: self.backend.name().to_owned(),
                    timeout: budget,
                }));
            }
            Err(err) => return Err(LoadError::new(err)),
        };
        let fetched = decide(&self.rule, entry, &cache_control, &private, &self.stats);
        if mode == LoadMode::Foreground {
            *self.private.lock().unwrap_or_else(PoisonError::into_inner) = Some(private);
        }
        Ok(fetched)
    }
}

impl BackendLoader {
    /// Fetches within `budget`, retrying per the backend's policy.
    async fn fetch_with_retries(&self, budget: Duration) -> Result<Collected, GatewayError> {
        retry::with_retries(
            self.backend.name(),
            self.backend.retry.as_ref(),
            budget,
            &self.stats,
            |collected: &Collected| match collected {
                Collected::Whole((entry, ..)) => Some(Code::from(entry.status_code)),
                // A stream is under way: it is the answer.
                Collected::Stream(_) => None,
            },
            |time_left| self.fetch_once(time_left),
        )
        .await
    }

    /// One attempt: the request to an endpoint, and its whole answer.
    async fn fetch_once(&self, time_left: Duration) -> Result<Collected, GatewayError> {
        let mut request =
            http::Request::new(Body::new(MessageBody::new(self.message.clone(), None)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from(self.path.clone());
        *request.headers_mut() = metadata::for_backend(self.headers.clone());
        let response = self
            .backend
            .call(request, Deadline::after(time_left))
            .await?;
        collect_answer(
            &self.backend,
            response,
            self.max_response_bytes,
            &self.rule,
            self.end_wait,
        )
        .await
    }
}

/// What the backend answered: the answer as it may be shared, its `cache-control`, and the caller's private part.
type BackendAnswer = (Entry, CacheControl, PrivateMetadata);

/// A backend's answer as the loader read it.
#[derive(Debug)]
enum Collected {
    /// A whole unary answer.
    Whole(BackendAnswer),
    /// The first part of a streaming answer, and the rest as it comes.
    Stream(http::Response<Body>),
}

/// Reads the backend's whole answer, or, when the method may stream (`end_wait`), as much as shows it is a stream.
/// A broken answer is an error.
async fn collect_answer(
    backend: &Backend,
    response: http::Response<Body>,
    max_response_bytes: u64,
    rule: &CacheRule,
    end_wait: Option<Duration>,
) -> Result<Collected, GatewayError> {
    let protocol = |reason: String| GatewayError::BackendProtocol {
        backend: backend.name().to_owned(),
        reason,
    };
    let is_private = |name: &str| rule.storage.is_private(name);
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        let code = code_for_http_status(parts.status);
        let entry = status_only(code, format!("backend answered HTTP {}", parts.status));
        let answer = (entry, CacheControl::default(), PrivateMetadata::default());
        return Ok(Collected::Whole(answer));
    }
    // Trailers-Only: the status came with the headers and there is no body.
    if let Some(code) = parts.headers.get(crate::grpc::code::STATUS_HEADER) {
        let code =
            parse_code(code.as_bytes()).ok_or_else(|| protocol("invalid grpc-status".into()))?;
        if code == Code::Ok {
            // A unary OK answer carries its message: without one it is broken, not an empty answer to store.
            return Err(protocol("unary answer with 0 messages".into()));
        }
        let mut entry = status_only(code, header_text(&parts.headers, "grpc-message"));
        let (shared, private) = metadata::replayable(&parts.headers, is_private);
        entry.headers = shared;
        let private = PrivateMetadata {
            headers: private,
            trailers: Vec::new(),
        };
        let answer = (entry, CacheControl::from_headers(&parts.headers), private);
        return Ok(Collected::Whole(answer));
    }

    let read = match end_wait {
        None => body::read_unary_body(body, max_response_bytes).await,
        Some(wait) => match body::read_unary_or_stream(body, max_response_bytes, wait).await {
            Ok(Shape::Unary(unary)) => Ok(unary),
            Ok(Shape::Stream(replay)) => {
                let response = http::Response::from_parts(parts, Body::new(replay));
                return Ok(Collected::Stream(response));
            }
            Err(err) => Err(err),
        },
    };
    let answer = read.map_err(|err| match err {
        ReadError::Stream(reason) => GatewayError::BackendUnavailable {
            backend: backend.name().to_owned(),
            reason,
        },
        ReadError::Frame(FrameError::TooLarge { .. }) | ReadError::TooLarge { .. } => protocol(
            format!("answer exceeds max_response_bytes ({max_response_bytes})"),
        ),
        other => protocol(other.to_string()),
    })?;
    let trailers = answer.trailers.unwrap_or_default();
    let code = trailers
        .get(crate::grpc::code::STATUS_HEADER)
        .ok_or_else(|| protocol("answer ended without grpc-status".into()))
        .and_then(|c| {
            parse_code(c.as_bytes()).ok_or_else(|| protocol("invalid grpc-status".into()))
        })?;

    let mut entry = status_only(code, header_text(&trailers, "grpc-message"));
    let (shared_headers, private_headers) = metadata::replayable(&parts.headers, is_private);
    let (shared_trailers, private_trailers) = metadata::replayable(&trailers, is_private);
    entry.headers = shared_headers;
    entry.trailers = shared_trailers;
    let private = PrivateMetadata {
        headers: private_headers,
        trailers: private_trailers,
    };
    if code == Code::Ok {
        let message = answer
            .message
            .ok_or_else(|| protocol("unary answer with 0 messages".into()))?;
        entry.message = if message.compressed {
            // Asked for no encoding, the backend used one anyway: stored decoded, replayed uncompressed.
            let encoding = parts.headers.get("grpc-encoding").map(|v| v.as_bytes());
            compression::decode(encoding, &message.bytes, max_response_bytes)
                .map_err(|err| protocol(err.to_string()))?
        } else {
            message.bytes
        };
    }
    let cache_control = CacheControl::from_metadata(&parts.headers, Some(&trailers));
    Ok(Collected::Whole((entry, cache_control, private)))
}

/// Applies the route's storage rules, the backend's `cache-control`, and whether it sets a cookie, to an answer.
fn decide(
    rule: &CacheRule,
    entry: Entry,
    cache_control: &CacheControl,
    private: &PrivateMetadata,
    stats: &ProxyStats,
) -> Fetched {
    let code = Code::from(entry.status_code);
    if is_backend_failure(code) {
        return Fetched::failure(entry);
    }
    if private.sets_cookie() {
        // A personal answer (a session, say): relayed to its caller, never stored.
        return Fetched::relay(entry);
    }
    match rule
        .storage
        .decide(code, entry.message.len(), cache_control)
    {
        Storage::Store(lifetime) => Fetched::store(entry, lifetime),
        Storage::Relay => Fetched::relay(entry),
        Storage::TooLarge => {
            stats.count_too_large();
            Fetched::relay(entry)
        }
    }
}

fn status_only(code: Code, message: String) -> Entry {
    Entry::unstamped(Bytes::new(), code as i32, message)
}

fn parse_code(value: &[u8]) -> Option<Code> {
    std::str::from_utf8(value)
        .ok()?
        .parse::<i32>()
        .ok()
        .map(Code::from)
}

/// A header's value as sent (for `grpc-message`: still percent-encoded, replayed as is).
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
