//! The workers of `strata-load run`: each takes the next request number, waits until it is due (when the run is
//! paced), picks a call by weight and a key by the distribution, sends it, and counts the answer.
//!
//! Open loop without a dispatcher: request n's due time is a function of n, so a worker that comes back late from
//! a stalled call takes numbers whose time has passed, sends them at once, and counts their latency from when they
//! were due. A stall therefore shows up as latency, not as fewer requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::codec::RawCodec;
use super::plan::{KeySpace, Pacing};
use super::progress::Live;
use super::requests::{CallTemplate, Fill, Kind};
use super::tally::{Outcome, Tally};

/// What the workers share.
#[derive(Debug)]
pub struct Work {
    /// The calls, with cumulative weights for picking.
    pub calls: Vec<CallTemplate>,
    /// Keys, if the run has a key space.
    pub keys: Option<KeySpace>,
    /// How requests are spaced.
    pub pacing: Pacing,
    /// Stop after this many requests.
    pub total: Option<u64>,
    /// Stop sending at this instant.
    pub until: Option<Instant>,
    /// Deadline of each call.
    pub timeout: Duration,
    /// Answers left out of the tally.
    pub skip_first: u64,
    /// Keep every answer.
    pub details: bool,
    /// The run's start: due times count from here.
    pub started: Instant,
    /// Set to stop early (Ctrl-C).
    pub stop: AtomicBool,
    /// Next request number.
    pub next: AtomicU64,
    /// Answers so far (for `skipFirst`).
    pub answered: AtomicU64,
    /// The progress line's counters.
    pub live: Arc<Live>,
}

impl Work {
    fn pick_call(&self, rng: &mut impl Rng) -> &CallTemplate {
        if self.calls.len() == 1 {
            return &self.calls[0];
        }
        let total: u64 = self.calls.iter().map(|c| u64::from(c.weight)).sum();
        let mut ticket = rng.random_range(0..total.max(1));
        for call in &self.calls {
            let weight = u64::from(call.weight);
            if ticket < weight {
                return call;
            }
            ticket -= weight;
        }
        &self.calls[0]
    }
}

/// One worker: sends until the run's total, duration or schedule ends, then returns what it counted.
pub async fn worker(work: Arc<Work>, channel: Channel, index: u64) -> Tally {
    let seed = work.keys.as_ref().map_or(0x5eed, |k| k.seed);
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut grpc = Grpc::new(channel);
    let mut tally = Tally::default();
    loop {
        if work.stop.load(Ordering::Relaxed) {
            break;
        }
        let number = work.next.fetch_add(1, Ordering::Relaxed);
        if work.total.is_some_and(|total| number >= total) {
            break;
        }
        let (due, open_loop) = match &work.pacing {
            Pacing::AsFastAsAnswered => (None, false),
            Pacing::Scheduled {
                schedule,
                open_loop,
            } => match schedule.due(number) {
                Some(offset) => (Some(work.started + offset), *open_loop),
                None => break,
            },
        };
        if let Some(due) = due {
            if work.until.is_some_and(|until| due >= until) {
                break;
            }
            wait_until(due).await;
        } else if work.until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        let call = work.pick_call(&mut rng);
        let key = work
            .keys
            .as_ref()
            .map(|k| k.distribution.sample(&mut rng).to_string());
        let fill = Fill {
            number,
            key: key.as_deref(),
        };
        let sent = Instant::now();
        let answer = send(&mut grpc, call, fill, work.timeout).await;
        let latency = match (due, open_loop) {
            (Some(due), true) => due.elapsed(),
            _ => sent.elapsed(),
        };
        work.live.record(latency, answer.is_ok());
        if work.answered.fetch_add(1, Ordering::Relaxed) < work.skip_first {
            continue;
        }
        let (code, message, cache) = match &answer {
            Ok(cache) => (tonic::Code::Ok, "", *cache),
            Err(status) => (status.code(), status.message(), None),
        };
        tally.record(
            Outcome {
                call: &call.name,
                code,
                message,
                cache,
                latency,
            },
            work.details,
        );
    }
    tally
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

/// Sends one request and reads the whole answer; `Ok` carries the `x-strata-cache` value.
async fn send(
    grpc: &mut Grpc<Channel>,
    call: &CallTemplate,
    fill: Fill<'_>,
    timeout: Duration,
) -> Result<Option<&'static str>, tonic::Status> {
    let exchange = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let mut messages = call.messages(fill);
        let metadata = call.metadata(fill);
        let path = call.path.clone();
        let (header, mut stream) = match call.kind {
            Kind::Unary => {
                let request = request(messages.swap_remove(0), metadata, timeout);
                let answer = grpc.unary(request, path, RawCodec).await?;
                return Ok(cache_header(answer.metadata()));
            }
            Kind::ServerStreaming => {
                let request = request(messages.swap_remove(0), metadata, timeout);
                let answer = grpc.server_streaming(request, path, RawCodec).await?;
                (cache_header(answer.metadata()), answer.into_inner())
            }
            Kind::ClientStreaming => {
                let request = request(tokio_stream::iter(messages), metadata, timeout);
                let answer = grpc.client_streaming(request, path, RawCodec).await?;
                return Ok(cache_header(answer.metadata()));
            }
            Kind::Bidi => {
                let request = request(tokio_stream::iter(messages), metadata, timeout);
                let answer = grpc.streaming(request, path, RawCodec).await?;
                (cache_header(answer.metadata()), answer.into_inner())
            }
        };
        while stream.message().await?.is_some() {}
        Ok(header)
    };
    // The deadline travels in grpc-timeout; this local bound holds even if the server ignores it.
    match tokio::time::timeout(timeout + Duration::from_millis(50), exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "no answer within the timeout",
        )),
    }
}

fn request<T>(
    message: T,
    metadata: tonic::metadata::MetadataMap,
    timeout: Duration,
) -> tonic::Request<T> {
    let mut request = tonic::Request::from_parts(metadata, Default::default(), message);
    request.set_timeout(timeout);
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
