//! Fuzzing on stable (proptest) of what a client, a backend or an operator hands the gateway as text or bytes: the
//! gRPC frame reader on the cached path, the config parser, the `cache-control` parser. Each property must hold for
//! any input — an error is fine, a panic is not. `STRATA_FUZZ_CASES` sets the cases per property (default 5000, a
//! few seconds each; raise it for a long run). A failure proptest finds is saved under `proptest-regressions/` and
//! replayed first on every later run.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::config::Config;
use crate::grpc::frame::{Decoder, FrameError, HEADER_LEN, Message};
use crate::route::cache_control::CacheControl;

fn cases() -> u32 {
    std::env::var("STRATA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// Feeds `wire` to a decoder in chunks cut at `cuts`, collecting messages until the end or the first error.
fn decode_in_chunks(wire: &[u8], cuts: &[Index], limit: u64) -> Result<Vec<Message>, FrameError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    let mut decoder = Decoder::new(limit);
    let mut messages = Vec::new();
    for pair in points.windows(2) {
        decoder.push(Bytes::copy_from_slice(&wire[pair[0]..pair[1]]));
        while let Some(message) = decoder.next_message()? {
            messages.push(message);
        }
    }
    decoder.finish()?;
    Ok(messages)
}

fn framed(messages: &[(bool, Vec<u8>)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (compressed, body) in messages {
        wire.push(u8::from(*compressed));
        wire.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        wire.extend_from_slice(body);
    }
    wire
}

/// A valid config, for mutating.
const CONFIG: &str = "listen: 127.0.0.1:50051\nadmin: { listen: 127.0.0.1:9901 }\ncache:\n  namespace: fuzz\n  \
    l1: { max_bytes: 64MiB }\n  l2: { url: \"redis://127.0.0.1:6379\", timeout: 25ms }\n  lease: { ttl: 10s, wait: 2s }\n\
    backends:\n  b: { endpoints: [\"http://127.0.0.1:1\"], timeout: 2s, retry: { attempts: 2, on: [UNAVAILABLE] } }\n\
    routes:\n  - match: /a.B/C\n    backend: b\n    cache: { ttl: 30s, vary: [x-tenant-id], stale_if_error: 1m }\n  \
    - match: \"*\"\n    backend: b\n    rate_limit: { rps: 10, burst: 20 }\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// However a valid stream of messages is cut into chunks, the same messages come out.
    #[test]
    fn frames_read_the_same_however_they_are_chunked(
        messages in vec((any::<bool>(), vec(any::<u8>(), 0..64)), 0..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let wire = framed(&messages);
        let read = decode_in_chunks(&wire, &cuts, 64).expect("a valid stream");
        let expected: Vec<Message> = messages
            .into_iter()
            .map(|(compressed, body)| Message { compressed, bytes: Bytes::from(body) })
            .collect();
        prop_assert_eq!(read, expected);
    }

    /// Any bytes: messages or a clean error; a message over the limit is refused, never returned.
    #[test]
    fn any_bytes_frame_or_fail_cleanly(
        wire in vec(any::<u8>(), 0..200),
        cuts in vec(any::<Index>(), 0..8),
        limit in 0u64..80,
    ) {
        if let Ok(messages) = decode_in_chunks(&wire, &cuts, limit) {
            let total: usize = messages.iter().map(|m| HEADER_LEN + m.bytes.len()).sum();
            prop_assert_eq!(total, wire.len());
            prop_assert!(messages.iter().all(|m| m.bytes.len() as u64 <= limit));
        }
    }

    /// Any text as a config file: a config or a list of errors.
    #[test]
    fn any_text_parses_as_config_or_fails_cleanly(text in "(?s).{0,400}") {
        let _ = Config::from_yaml(&text);
    }

    /// A valid config with bytes changed, removed or repeated: a config or a list of errors.
    #[test]
    fn damaged_configs_parse_or_fail_cleanly(
        edits in vec((any::<Index>(), 0u8..3, proptest::char::range(' ', '~')), 1..6),
    ) {
        let mut text: Vec<char> = CONFIG.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(text.len());
            match kind {
                0 => text[i] = c,
                1 => { text.remove(i); }
                _ => text.insert(i, c),
            }
        }
        let text: String = text.into_iter().collect();
        let _ = Config::from_yaml(&text);
    }

    /// Any `cache-control` values from a backend: directives or nothing, and numbers read as they were written.
    #[test]
    fn any_cache_control_parses(values in vec("[ -~]{0,60}", 0..4), seconds in any::<u64>()) {
        let mut headers = http::HeaderMap::new();
        for value in &values {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                headers.append(http::header::CACHE_CONTROL, value);
            }
        }
        let _ = CacheControl::from_headers(&headers);
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_str(&format!("public, max-age={seconds}")).expect("ascii"),
        );
        prop_assert_eq!(
            CacheControl::from_headers(&headers).max_age,
            Some(std::time::Duration::from_secs(seconds))
        );
    }
}
