//! The workers of `strata-load run`: each takes the next request number, waits until it is due (when the run is
//! paced), picks a call by weight and a key by the distribution, sends it, and counts the answer.
//!
//! Open loop without a dispatcher: request n's due time is a function of n, so a worker that comes back late from
//! a stalled call takes numbers whose time has passed, sends them at once, and counts their latency from when they
//! were due. A stall therefore shows up as latency, not as fewer requests.
//!
//! A worker keeps one call in flight (ghz's model), or many with `async`; either way it owns its calls' futures and
//! its own tally, so no answer crosses a task to be counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::{Rng, SeedableRng};
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::codec::RawCodec;
use super::debug_log::DebugLog;
use super::plan::{DurationStop, KeySpace, Pacing, StreamShape};
use super::progress::Live;
use super::requests::{CallTemplate, Fill, Kind};
use super::tally::{Outcome, Tally};
use super::workers::Workers;

/// Calls one `async` worker keeps in flight at most (a bound on memory, far above what a server answers).
const ASYNC_IN_FLIGHT: usize = 10_000;

/// What ends the calls in flight when the run stops early (duration reached, Ctrl-C).
#[derive(Debug)]
pub struct Closing {
    /// Set when the run stops; calls in flight are then cancelled unless `duration-stop` is `wait`.
    pub signal: tokio::sync::watch::Sender<bool>,
    /// What becomes of them.
    pub mode: DurationStop,
}

/// What the workers share.
#[derive(Debug)]
pub struct Work {
    /// The calls, with their weights.
    pub calls: Vec<CallTemplate>,
    /// Keys, if the run has a key space.
    pub keys: Option<KeySpace>,
    /// How requests are spaced.
    pub pacing: Pacing,
    /// How many workers run over time.
    pub workers: Workers,
    /// Many calls in flight per worker (`async`).
    pub asynchronous: bool,
    /// Stop after this many requests.
    pub total: Option<u64>,
    /// Stop sending at this instant.
    pub until: Option<Instant>,
    /// Deadline of each call.
    pub timeout: Option<Duration>,
    /// How streaming calls are shaped.
    pub streams: StreamShape,
    /// Answers left out of the tally.
    pub skip_first: u64,
    /// Keep every answer.
    pub details: bool,
    /// Non-OK answers count in the latency figures.
    pub count_errors: bool,
    /// The run's start: due times count from here.
    pub started: Instant,
    /// Set to stop sending (Ctrl-C, or the duration reached).
    pub stop: AtomicBool,
    /// Ends the calls in flight.
    pub closing: Closing,
    /// Next request number.
    pub next: AtomicU64,
    /// Answers so far (for `skipFirst`).
    pub answered: AtomicU64,
    /// The progress line's counters.
    pub live: Arc<Live>,
    /// Where `--debug` writes, if asked.
    pub debug: Option<DebugLog>,
}

impl Work {
    fn pick_call(&self, rng: &mut impl Rng) -> usize {
        if self.calls.len() == 1 {
            return 0;
        }
        let total: u64 = self.calls.iter().map(|c| u64::from(c.weight)).sum();
        let mut ticket = rng.random_range(0..total.max(1));
        for (i, call) in self.calls.iter().enumerate() {
            let weight = u64::from(call.weight);
            if ticket < weight {
                return i;
            }
            ticket -= weight;
        }
        0
    }

    /// Whether no request is left to send.
    pub fn exhausted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self
                .total
                .is_some_and(|total| self.next.load(Ordering::Relaxed) >= total)
            || self.until.is_some_and(|until| Instant::now() >= until)
    }
}

/// One request taken by a worker: its number and when it is due.
struct Ticket {
    number: u64,
    due: Option<Instant>,
    open_loop: bool,
}

/// The outcome of one call, for the tally.
struct Answered {
    call: usize,
    latency: Duration,
    answer: Result<Option<&'static str>, tonic::Status>,
}

type InFlight = Pin<Box<dyn Future<Output = Option<Answered>> + Send>>;

/// One worker: sends until the run's total, duration or schedule ends (or the concurrency schedule retires it),
/// then returns what it counted.
pub async fn worker(work: Arc<Work>, grpc: Grpc<Channel>, index: u64) -> Tally {
    let seed = work.keys.as_ref().map_or(0x5eed, |k| k.seed);
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let worker_id: Arc<str> = Arc::from(format!("g0c{index}"));
    let mut tally = Tally::default();
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    loop {
        if in_flight.len() >= ASYNC_IN_FLIGHT {
            if let Some(Some(answered)) = in_flight.next().await {
                count(&work, &mut tally, answered);
            }
            continue;
        }
        let Some(ticket) = take(&work, index) else {
            break;
        };
        match ticket.due {
            Some(due) if !in_flight.is_empty() => {
                // Wait for the due time, counting the answers that arrive meanwhile.
                let wait = wait_until(due);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                            if let Some(answered) = done {
                                count(&work, &mut tally, answered);
                            }
                        }
                    }
                }
            }
            Some(due) => wait_until(due).await,
            None => {}
        }
        let call = work.pick_call(&mut rng);
        let key = work
            .keys
            .as_ref()
            .map(|k| k.distribution.sample(&mut rng).to_string());
        let answer = exchange(
            work.clone(),
            grpc.clone(),
            call,
            ticket,
            key,
            worker_id.clone(),
        );
        if work.asynchronous {
            in_flight.push(Box::pin(answer));
        } else if let Some(answered) = answer.await {
            // One call at a time (ghz's worker): awaited here, with no set of boxed futures.
            count(&work, &mut tally, answered);
        }
    }
    while let Some(done) = in_flight.next().await {
        if let Some(answered) = done {
            count(&work, &mut tally, answered);
        }
    }
    tally
}

/// The next request for worker `index`, or none when the run (or this worker's part of it) is over.
fn take(work: &Work, index: u64) -> Option<Ticket> {
    if work.stop.load(Ordering::Relaxed) {
        return None;
    }
    if matches!(work.workers, Workers::Scheduled { .. })
        && work.workers.at(work.started.elapsed()) as u64 <= index
    {
        return None;
    }
    let number = work.next.fetch_add(1, Ordering::Relaxed);
    if work.total.is_some_and(|total| number >= total) {
        return None;
    }
    let (due, open_loop) = match &work.pacing {
        Pacing::AsFastAsAnswered => (None, false),
        Pacing::Scheduled {
            schedule,
            open_loop,
        } => (Some(work.started + schedule.due(number)?), *open_loop),
    };
    let deadline_passed = match due {
        Some(due) => work.until.is_some_and(|until| due >= until),
        None => work.until.is_some_and(|until| Instant::now() >= until),
    };
    (!deadline_passed).then_some(Ticket {
        number,
        due,
        open_loop,
    })
}

/// Sends one request and waits for its answer, unless the run closes first; `None` when the answer is to be left
/// out (`duration-stop: ignore`).
async fn exchange(
    work: Arc<Work>,
    mut grpc: Grpc<Channel>,
    call: usize,
    ticket: Ticket,
    key: Option<String>,
    worker_id: Arc<str>,
) -> Option<Answered> {
    let request = CallRequest {
        work: work.clone(),
        call,
        number: ticket.number,
        key,
        worker_id,
    };
    let sent = Instant::now();
    let answer = {
        let send = send(&mut grpc, &request);
        tokio::pin!(send);
        if work.closing.mode == DurationStop::Wait {
            send.await
        } else {
            let mut closing = work.closing.signal.subscribe();
            tokio::select! {
                answer = &mut send => answer,
                _ = closing.wait_for(|closed| *closed) => {
                    if work.closing.mode == DurationStop::Ignore {
                        return None;
                    }
                    // As grpc-go reports a call cut by closing its connection.
                    Err(tonic::Status::cancelled("grpc: the client connection is closing"))
                }
            }
        }
    };
    let latency = match (ticket.due, ticket.open_loop) {
        (Some(due), true) => due.elapsed(),
        _ => sent.elapsed(),
    };
    if let Some(log) = &work.debug {
        log.call(
            &request.worker_id,
            ticket.number,
            &work.calls[call].name,
            latency,
            &answer,
        );
    }
    Some(Answered {
        call,
        latency,
        answer,
    })
}

fn count(work: &Work, tally: &mut Tally, answered: Answered) {
    work.live.record(answered.latency, answered.answer.is_ok());
    if work.answered.fetch_add(1, Ordering::Relaxed) < work.skip_first {
        return;
    }
    let (code, message, cache) = match &answered.answer {
        Ok(cache) => (tonic::Code::Ok, "", *cache),
        Err(status) => (status.code(), status.message(), None),
    };
    tally.record(
        Outcome {
            call: &work.calls[answered.call].name,
            code,
            message,
            cache,
            latency: answered.latency,
        },
        work.details,
        work.count_errors,
    );
}

/// Waits until `due`, to well under a millisecond. tokio's timer rounds up to the next millisecond tick and the
/// runtime may park a little longer, so a plain sleep wakes up to ~1 ms late — which an open-loop run would count
/// as latency (it starts at the due time). So: sleep until 2 ms before, then yield to the runtime until due. The
/// price is a busy client CPU at high rates; the figures are worth it.
async fn wait_until(due: Instant) {
    const TIMER_SLACK: Duration = Duration::from_millis(2);
    if let Some(early) = due.checked_sub(TIMER_SLACK)
        && early > Instant::now()
    {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// Sends one request and reads the whole answer (or as much as the stream settings ask); `Ok` carries the
/// `x-strata-cache` value.
async fn send(
    grpc: &mut Grpc<Channel>,
    request: &CallRequest,
) -> Result<Option<&'static str>, tonic::Status> {
    let (streams, timeout) = (request.work.streams, request.work.timeout);
    let call = request.call();
    let fill = request.fill();
    let exchange = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let metadata = call
            .metadata(fill)
            .map_err(tonic::Status::invalid_argument)?;
        let path = call.path.clone();
        let (header, mut stream) = match call.kind {
            Kind::Unary => {
                let message = first(call.messages(fill))?;
                let answer = grpc
                    .unary(with_parts(message, metadata, timeout), path, RawCodec)
                    .await?;
                return Ok(cache_header(answer.metadata()));
            }
            Kind::ServerStreaming => {
                let message = first(call.messages(fill))?;
                let answer = grpc
                    .server_streaming(with_parts(message, metadata, timeout), path, RawCodec)
                    .await?;
                (cache_header(answer.metadata()), answer.into_inner())
            }
            Kind::ClientStreaming => {
                let outgoing = client_stream(call, request.clone(), streams)?;
                let answer = grpc
                    .client_streaming(with_parts(outgoing, metadata, timeout), path, RawCodec)
                    .await?;
                return Ok(cache_header(answer.metadata()));
            }
            Kind::Bidi => {
                let outgoing = client_stream(call, request.clone(), streams)?;
                let answer = grpc
                    .streaming(with_parts(outgoing, metadata, timeout), path, RawCodec)
                    .await?;
                (cache_header(answer.metadata()), answer.into_inner())
            }
        };
        // A server stream is read to its end, or until `stream-call-count` messages or `stream-call-duration`
        // (then cancelled: the answers asked for were had, so the call counts as OK).
        let read = async {
            let mut received = 0u64;
            while stream.message().await?.is_some() {
                received += 1;
                if call.kind == Kind::ServerStreaming
                    && streams.call_count.is_some_and(|n| received >= n)
                {
                    break;
                }
            }
            Ok::<_, tonic::Status>(())
        };
        match streams.call_duration {
            Some(limit) => {
                tokio::time::timeout(limit, read).await.unwrap_or(Ok(()))?;
            }
            None => read.await?,
        }
        Ok(header)
    };
    let answer = match timeout {
        // The deadline travels in grpc-timeout; this local bound holds even if the server ignores it.
        Some(timeout) => {
            match tokio::time::timeout(timeout + Duration::from_millis(50), exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(deadline_exceeded()),
            }
        }
        None => exchange.await,
    };
    answer.map_err(|status| {
        // tonic's channel enforces the request's grpc-timeout itself and calls its expiry `Cancelled`; grpc-go, so
        // ghz, calls it DeadlineExceeded — and Canceled is what a run's close reports.
        let expired = status.code() == tonic::Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string();
        if expired { deadline_exceeded() } else { status }
    })
}

/// A call past its deadline, as grpc-go (so ghz) reports it.
fn deadline_exceeded() -> tonic::Status {
    tonic::Status::deadline_exceeded("context deadline exceeded")
}

fn first(messages: Result<Vec<Bytes>, String>) -> Result<Bytes, tonic::Status> {
    messages
        .map_err(tonic::Status::invalid_argument)?
        .into_iter()
        .next()
        .ok_or_else(|| tonic::Status::invalid_argument("the data holds no message"))
}

/// One call's request: which call, its number, key and worker — owned, so a client stream can take it along and
/// render its messages as it sends them.
#[derive(Clone)]
struct CallRequest {
    work: Arc<Work>,
    call: usize,
    number: u64,
    key: Option<String>,
    worker_id: Arc<str>,
}

impl CallRequest {
    fn call(&self) -> &CallTemplate {
        &self.work.calls[self.call]
    }

    fn fill(&self) -> Fill<'_> {
        Fill {
            number: self.number,
            key: self.key.as_deref(),
            worker_id: &self.worker_id,
        }
    }
}

/// The messages a client stream sends: every data item once (or `stream-call-count` of them, items in turn),
/// `stream-interval` apart, until `stream-call-duration`. With `stream-dynamic-messages` each is rendered when it is
/// sent (fresh `.UUID`, `.Timestamp…`), as ghz does; a message that then fails to render ends the stream.
fn client_stream(
    call: &CallTemplate,
    request: CallRequest,
    shape: StreamShape,
) -> Result<futures::stream::BoxStream<'static, Bytes>, tonic::Status> {
    let count = shape
        .call_count
        .map_or(call.items(), |n| usize::try_from(n).unwrap_or(usize::MAX));
    let rendered = if shape.dynamic_messages {
        None
    } else {
        let items = call
            .messages(request.fill())
            .map_err(tonic::Status::invalid_argument)?;
        if items.is_empty() {
            return Err(tonic::Status::invalid_argument("the data holds no message"));
        }
        Some(items)
    };
    let until = shape.call_duration.map(|d| Instant::now() + d);
    let interval = shape.interval;
    let stream = futures::stream::unfold(
        (0usize, rendered, request),
        move |(i, rendered, request)| async move {
            if i >= count {
                return None;
            }
            if let Some(pause) = interval.filter(|_| i > 0) {
                tokio::time::sleep(pause).await;
            }
            if until.is_some_and(|until| Instant::now() >= until) {
                return None;
            }
            let message = match &rendered {
                Some(items) => items[i % items.len()].clone(),
                None => request.call().stream_message(i, request.fill()).ok()?,
            };
            Some((message, (i + 1, rendered, request)))
        },
    );
    Ok(stream.boxed())
}

/// A request of `message` with `metadata` and the deadline.
fn with_parts<T>(
    message: T,
    metadata: tonic::metadata::MetadataMap,
    timeout: Option<Duration>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::from_parts(metadata, Default::default(), message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

/// The `x-strata-cache` value, from the set the gateway sends (anything else counts as `other`).
fn cache_header(metadata: &tonic::metadata::MetadataMap) -> Option<&'static str> {
    let value = metadata.get("x-strata-cache")?.to_str().unwrap_or("");
    Some(
        ["l1", "l2", "miss", "coalesced", "stale", "bypass"]
            .into_iter()
            .find(|known| *known == value)
            .unwrap_or("other"),
    )
}
