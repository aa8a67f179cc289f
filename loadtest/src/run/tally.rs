//! What a run counts: each worker keeps its own tally (no shared lock on the hot path); the tallies are merged at
//! the end.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use crate::load::new_histogram;

/// Most answers kept for the report's `details` (ghz's bound).
pub const MAX_DETAILS: usize = 1_000_000;

/// One answer, as the report's `details` lists it.
#[derive(Debug, Clone)]
pub struct Detail {
    /// When the call ended.
    pub timestamp: SystemTime,
    /// How long it took.
    pub latency: Duration,
    /// Its status, in ghz's spelling.
    pub status: &'static str,
    /// Its error, in ghz's spelling, or empty.
    pub error: String,
    /// Its `x-strata-cache` value, if it had one.
    pub cache: Option<&'static str>,
}

/// Counts of one call of a mix.
#[derive(Debug, Clone, Default)]
pub struct CallCounts {
    /// Answers.
    pub count: u64,
    /// Answers that were not OK.
    pub errors: u64,
}

/// Counts of a run (or of one worker's part of it).
#[derive(Debug)]
pub struct Tally {
    /// Answers counted.
    pub count: u64,
    /// Sum of their latencies.
    pub latency_sum: Duration,
    /// Latencies of OK answers (of every answer with `count-errors`), in microseconds, as ghz's figures count them.
    pub counted_latency_us: Histogram<u64>,
    /// Answers by status, in ghz's spelling (`OK`, `Unavailable`, …).
    pub by_status: BTreeMap<&'static str, u64>,
    /// Errors by message, in ghz's spelling (`rpc error: code = … desc = …`).
    pub by_error: BTreeMap<String, u64>,
    /// OK answers by `x-strata-cache` (`none` when the answer had no such header).
    pub by_cache: BTreeMap<String, u64>,
    /// Counts per call of the mix, by call name.
    pub by_call: BTreeMap<String, CallCounts>,
    /// Every answer, when asked for (at most [`MAX_DETAILS`] per tally).
    pub details: Vec<Detail>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            count: 0,
            latency_sum: Duration::ZERO,
            counted_latency_us: new_histogram(),
            by_status: BTreeMap::new(),
            by_error: BTreeMap::new(),
            by_cache: BTreeMap::new(),
            by_call: BTreeMap::new(),
            details: Vec::new(),
        }
    }
}

/// One answer's outcome.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// Which call of the mix.
    pub call: &'a str,
    /// Its status code.
    pub code: tonic::Code,
    /// Its status message, for errors.
    pub message: &'a str,
    /// The `x-strata-cache` value, if any.
    pub cache: Option<&'static str>,
    /// How long it took.
    pub latency: Duration,
}

impl Tally {
    /// Counts one answer; keeps its detail when `details` is on; `count_errors` puts a failed answer's latency in
    /// the figures too.
    pub fn record(&mut self, outcome: Outcome<'_>, details: bool, count_errors: bool) {
        self.count += 1;
        self.latency_sum += outcome.latency;
        let status = go_code_name(outcome.code);
        *self.by_status.entry(status).or_default() += 1;
        let call = match self.by_call.get_mut(outcome.call) {
            Some(call) => call,
            None => self.by_call.entry(outcome.call.to_owned()).or_default(),
        };
        call.count += 1;
        let ok = outcome.code == tonic::Code::Ok;
        if ok || count_errors {
            let micros = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX);
            self.counted_latency_us.saturating_record(micros.max(1));
        }
        let error = if ok {
            let level = outcome.cache.unwrap_or("none");
            match self.by_cache.get_mut(level) {
                Some(n) => *n += 1,
                None => {
                    self.by_cache.insert(level.to_owned(), 1);
                }
            }
            String::new()
        } else {
            call.errors += 1;
            let error = format!("rpc error: code = {status} desc = {}", outcome.message);
            *self.by_error.entry(error.clone()).or_default() += 1;
            error
        };
        if details && self.details.len() < MAX_DETAILS {
            self.details.push(Detail {
                timestamp: SystemTime::now(),
                latency: outcome.latency,
                status,
                error,
                cache: outcome.cache,
            });
        }
    }

    /// Adds another worker's tally.
    pub fn absorb(&mut self, other: Tally) {
        self.count += other.count;
        self.latency_sum += other.latency_sum;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.counted_latency_us.add(&other.counted_latency_us);
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_error {
            *self.by_error.entry(k).or_default() += v;
        }
        for (k, v) in other.by_cache {
            *self.by_cache.entry(k).or_default() += v;
        }
        for (k, v) in other.by_call {
            let call = self.by_call.entry(k).or_default();
            call.count += v.count;
            call.errors += v.errors;
        }
        let room = MAX_DETAILS.saturating_sub(self.details.len());
        self.details.extend(other.details.into_iter().take(room));
    }

    /// Answers that were not OK.
    pub fn errors(&self) -> u64 {
        self.count - self.by_status.get("OK").copied().unwrap_or(0)
    }
}

/// A status code as Go's grpc spells it (what ghz reports).
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
