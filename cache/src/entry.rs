//! A cached answer and its versioned encoding (`strata.cache.v1.Entry`), the same bytes in L1 accounting and in L2.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use strata_proto::cache::v1 as pb;

use crate::clock::UnixMs;
use crate::error::DecodeError;

/// How long a fetched answer may be used, from the moment it is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Served as fresh for this long.
    pub fresh: Duration,
    /// Then served stale for this long while one background refresh runs.
    pub stale_while_revalidate: Duration,
    /// After `fresh`, served for this long instead of a backend failure.
    pub stale_if_error: Duration,
}

impl Lifetime {
    /// Fresh for `ttl`, no stale serving.
    pub fn fresh_for(ttl: Duration) -> Self {
        Self {
            fresh: ttl,
            ..Self::default()
        }
    }
}

/// What an entry may be used for at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Serve it.
    Fresh,
    /// Serve it stale, and refresh it in the background.
    Revalidate,
    /// Serve it only if fetching a new answer fails.
    ErrorFallback,
    /// Do not serve it.
    Expired,
}

/// The encoding version this build writes and reads.
pub const ENTRY_VERSION: u32 = 1;

/// A metadata pair replayed with a cached answer.
pub use pb::Metadata;

/// One cached answer: the response message, its status, the metadata to replay, and its lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The response message bytes (no frame header, uncompressed).
    pub message: Bytes,
    /// The answer's status code (the caller's meaning; for gRPC, the `grpc-status` code).
    pub status_code: i32,
    /// The answer's status message.
    pub status_message: String,
    /// Response headers to replay.
    pub headers: Vec<Metadata>,
    /// Response trailers to replay.
    pub trailers: Vec<Metadata>,
    /// When the answer was fetched.
    pub created: UnixMs,
    /// Until when the answer may be served as fresh.
    pub fresh_until: UnixMs,
    /// Until when the answer may be served stale while one background refresh fetches a new one.
    pub revalidate_until: UnixMs,
    /// Until when the answer may be served stale instead of a backend failure.
    pub stale_if_error_until: UnixMs,
    /// Until when the answer may be kept at all (the latest of the times above); L1 evicts and L2 expires it then.
    pub stale_until: UnixMs,
    /// How long the loader took to fetch it.
    pub fetch_time: Duration,
}

impl Entry {
    /// An answer as a loader fetched it: no metadata yet, and no times (the cache stamps those when it stores it).
    pub fn unstamped(message: Bytes, status_code: i32, status_message: String) -> Self {
        Self {
            message,
            status_code,
            status_message,
            headers: Vec::new(),
            trailers: Vec::new(),
            created: 0,
            fresh_until: 0,
            revalidate_until: 0,
            stale_if_error_until: 0,
            stale_until: 0,
            fetch_time: Duration::ZERO,
        }
    }

    /// Sets every time from `now` and the answer's lifetime.
    pub fn stamp(&mut self, now: UnixMs, lifetime: &Lifetime) {
        let after =
            |d: Duration| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.created = now;
        self.fresh_until = after(lifetime.fresh);
        self.revalidate_until = after(
            lifetime
                .fresh
                .saturating_add(lifetime.stale_while_revalidate),
        );
        self.stale_if_error_until = after(lifetime.fresh.saturating_add(lifetime.stale_if_error));
        self.stale_until = self.revalidate_until.max(self.stale_if_error_until);
    }

    /// What the entry may be used for at `now`.
    pub fn state(&self, now: UnixMs) -> EntryState {
        if now < self.fresh_until {
            EntryState::Fresh
        } else if now < self.revalidate_until {
            EntryState::Revalidate
        } else if now < self.stale_if_error_until {
            EntryState::ErrorFallback
        } else {
            EntryState::Expired
        }
    }

    /// Whether the answer may still be served as fresh at `now`.
    pub fn is_fresh(&self, now: UnixMs) -> bool {
        self.state(now) == EntryState::Fresh
    }

    /// How long the entry should still be kept, from `now` (zero once past `stale_until`).
    pub fn remaining_life(&self, now: UnixMs) -> Duration {
        Duration::from_millis(self.stale_until.saturating_sub(now))
    }

    /// The number of bytes the entry occupies, as weighed by L1 (its encoded size, a close proxy for its heap size).
    pub fn weight(&self) -> u32 {
        u32::try_from(self.to_proto().encoded_len()).unwrap_or(u32::MAX)
    }

    /// Encodes the entry for L2.
    pub fn encode(&self) -> Bytes {
        Bytes::from(self.to_proto().encode_to_vec())
    }

    /// Decodes bytes read from L2. Any failure is reported, never a panic: the caller treats it as a miss.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let pb = pb::Entry::decode(bytes)?;
        if pb.version != ENTRY_VERSION {
            return Err(DecodeError::Version {
                found: pb.version,
                expected: ENTRY_VERSION,
            });
        }
        Ok(Self {
            message: pb.message,
            status_code: pb.status_code,
            status_message: pb.status_message,
            headers: pb.headers,
            trailers: pb.trailers,
            created: pb.created_unix_ms,
            fresh_until: pb.fresh_until_unix_ms,
            revalidate_until: pb.revalidate_until_unix_ms,
            stale_if_error_until: pb.stale_if_error_until_unix_ms,
            stale_until: pb
                .stale_until_unix_ms
                .max(pb.fresh_until_unix_ms)
                .max(pb.revalidate_until_unix_ms)
                .max(pb.stale_if_error_until_unix_ms),
            fetch_time: Duration::from_micros(pb.fetch_micros),
        })
    }

    fn to_proto(&self) -> pb::Entry {
        pb::Entry {
            version: ENTRY_VERSION,
            message: self.message.clone(),
            status_code: self.status_code,
            status_message: self.status_message.clone(),
            headers: self.headers.clone(),
            trailers: self.trailers.clone(),
            created_unix_ms: self.created,
            fresh_until_unix_ms: self.fresh_until,
            stale_until_unix_ms: self.stale_until,
            revalidate_until_unix_ms: self.revalidate_until,
            stale_if_error_until_unix_ms: self.stale_if_error_until,
            fetch_micros: u64::try_from(self.fetch_time.as_micros()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            message: Bytes::from_static(b"\x0a\x03abc"),
            status_code: 0,
            status_message: String::new(),
            headers: vec![Metadata {
                name: "x-h".into(),
                value: Bytes::from_static(b"v"),
            }],
            trailers: vec![Metadata {
                name: "x-t-bin".into(),
                value: Bytes::from_static(&[0, 255]),
            }],
            created: 1_000,
            fresh_until: 31_000,
            revalidate_until: 41_000,
            stale_if_error_until: 61_000,
            stale_until: 61_000,
            fetch_time: Duration::from_micros(1234),
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Entry::decode(e.encode()).expect("decodes"), e);
        assert!(e.weight() as usize >= e.message.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            &b"\xff\xff\xff\xff"[..],
            b"not an entry at all",
            b"\x0a\xff\xff\xff\xff\x0f",
        ] {
            assert!(
                Entry::decode(Bytes::copy_from_slice(junk)).is_err(),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut pb = sample().to_proto();
        pb.version = 2;
        let err = Entry::decode(Bytes::from(pb.encode_to_vec())).expect_err("version 2");
        assert!(matches!(
            err,
            DecodeError::Version {
                found: 2,
                expected: 1
            }
        ));
        // An empty buffer decodes as version 0: also rejected.
        assert!(Entry::decode(Bytes::new()).is_err());
    }

    #[test]
    fn freshness() {
        let e = sample();
        assert!(e.is_fresh(30_999));
        assert!(!e.is_fresh(31_000));
        assert_eq!(e.remaining_life(30_000), Duration::from_secs(31));
        assert_eq!(e.remaining_life(70_000), Duration::ZERO);
        assert_eq!(e.state(30_999), EntryState::Fresh);
        assert_eq!(e.state(31_000), EntryState::Revalidate);
        assert_eq!(e.state(41_000), EntryState::ErrorFallback);
        assert_eq!(e.state(61_000), EntryState::Expired);
    }

    #[test]
    fn stamping_sets_every_window() {
        let mut e = sample();
        e.stamp(
            100,
            &Lifetime {
                fresh: Duration::from_secs(1),
                stale_while_revalidate: Duration::from_secs(2),
                stale_if_error: Duration::from_secs(5),
            },
        );
        assert_eq!(
            (e.created, e.fresh_until, e.revalidate_until),
            (100, 1_100, 3_100)
        );
        assert_eq!((e.stale_if_error_until, e.stale_until), (6_100, 6_100));
        e.stamp(100, &Lifetime::fresh_for(Duration::from_secs(1)));
        assert_eq!(e.stale_until, 1_100);
        assert_eq!(e.state(1_100), EntryState::Expired);
    }
}

/// Fuzzing on stable (proptest): entries come back from Redis, which anything with access to it can write, so
/// decoding any bytes must fail cleanly — never panic — and every entry must survive its own encoding.
/// `STRATA_FUZZ_CASES` sets the cases per property (default 5000, a few seconds; raise it for a long run).
#[cfg(test)]
mod fuzz {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    fn cases() -> u32 {
        std::env::var("STRATA_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000)
    }

    fn metadata() -> impl Strategy<Value = Metadata> {
        ("[a-z0-9-]{1,16}", vec(any::<u8>(), 0..24)).prop_map(|(name, value)| Metadata {
            name,
            value: Bytes::from(value),
        })
    }

    prop_compose! {
        fn entry()(
            message in vec(any::<u8>(), 0..300),
            status_code in any::<i32>(),
            status_message in ".{0,24}",
            headers in vec(metadata(), 0..4),
            trailers in vec(metadata(), 0..4),
            times in any::<[u64; 4]>(),
            fetch_micros in any::<u64>(),
        ) -> Entry {
            let [created, fresh_until, revalidate_until, stale_if_error_until] = times;
            Entry {
                message: Bytes::from(message),
                status_code,
                status_message,
                headers,
                trailers,
                created,
                fresh_until,
                revalidate_until,
                stale_if_error_until,
                stale_until: fresh_until.max(revalidate_until).max(stale_if_error_until),
                fetch_time: Duration::from_micros(fetch_micros),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in vec(any::<u8>(), 0..600)) {
            let _ = Entry::decode(Bytes::from(bytes));
        }

        #[test]
        fn damaged_entries_decode_or_fail_cleanly(
            entry in entry(),
            flips in vec((any::<Index>(), 1..=255u8), 1..8),
            cut in any::<Index>(),
        ) {
            let mut bytes = entry.encode().to_vec();
            for (at, mask) in flips {
                let i = at.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= mask;
                }
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Ok(decoded) = Entry::decode(Bytes::from(bytes)) {
                // Whatever decodes is an entry the cache can use: its windows in order.
                prop_assert!(decoded.stale_until >= decoded.fresh_until);
                let _ = decoded.weight();
            }
        }

        #[test]
        fn entries_survive_their_encoding(entry in entry()) {
            prop_assert_eq!(Entry::decode(entry.encode()).expect("its own encoding decodes"), entry);
        }
    }
}
