//! Hostile clients, speaking HTTP/2 frame by frame so that nothing a well-behaved client library would enforce gets
//! in the way: 10 000 streams opened at once on one connection, metadata far past the header-list limit, a request
//! body that stops arriving, a compressed flag without a negotiated encoding. Each gets a clear status or a closed
//! stream, the gateway stays bounded, and other clients are served meanwhile. (Malformed frames: `limits.rs`.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, config, config_for, start};
use crate::support::raw;
use crate::{get, key};

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame size");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1), for string lengths.
fn hpack_len(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(u8::try_from(n).expect("small"));
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push(u8::try_from(n % 128).expect("7 bits") | 0x80);
        n /= 128;
    }
    out.push(u8::try_from(n).expect("7 bits"));
}

/// A header block of literal fields without indexing or Huffman coding.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_len(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_len(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn request_headers(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/testing.v1.Lookup/Get"),
        (":authority", "gateway"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    fields.extend_from_slice(extra);
    header_block(&fields)
}

/// HEADERS (split into CONTINUATION frames of at most 16 KiB) for `stream`.
fn headers_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let flags =
            if last { END_HEADERS } else { 0 } | if i == 0 && end_stream { END_STREAM } else { 0 };
        out.extend(frame(
            if i == 0 { HEADERS } else { CONTINUATION },
            flags,
            stream,
            chunk,
        ));
    }
    out
}

/// The framed request message of a `Get` for `k`.
fn get_body(k: &str) -> Vec<u8> {
    raw::framed(&key(k))
}

/// A connection that has said hello: preface, settings, and a large receive window.
async fn open(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 1 GiB, so answers never wait for window updates.
    hello.extend(frame(SETTINGS, 0, 0, &[0x00, 0x04, 0x40, 0x00, 0x00, 0x00]));
    hello.extend(frame(WINDOW_UPDATE, 0, 0, &0x4000_0000u32.to_be_bytes()));
    tcp.write_all(&hello).await.expect("hello");
    tcp
}

/// What the server did with each stream, read until every one of `streams` is settled, the connection closes, or
/// `within` passes.
#[derive(Debug, Default)]
struct Outcome {
    answered: HashMap<u32, usize>,
    reset: HashMap<u32, u32>,
    goaway_last_stream: Option<u32>,
    closed: bool,
}

impl Outcome {
    fn settled(&self, stream: u32) -> bool {
        self.answered.contains_key(&stream)
            || self.reset.contains_key(&stream)
            || self.goaway_last_stream.is_some_and(|last| stream > last)
    }
}

async fn read_outcome(tcp: &mut TcpStream, streams: &[u32], within: Duration) -> Outcome {
    let until = Instant::now() + within;
    let mut outcome = Outcome::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while Instant::now() < until && !streams.iter().all(|s| outcome.settled(*s)) {
        let read = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            tcp.read(&mut chunk),
        )
        .await;
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                outcome.closed = true;
                break;
            }
            Ok(Ok(n)) => n,
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                HEADERS => *outcome.answered.entry(stream).or_default() += 1,
                RST_STREAM => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    outcome.reset.insert(stream, code);
                }
                GOAWAY => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    outcome.goaway_last_stream = Some(last);
                }
                SETTINGS if flags & 0x1 == 0 => {
                    let _ = tcp.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
                }
                _ => {}
            }
        }
    }
    outcome
}

/// Resident memory of this test process (gateway, backend and clients together), in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_on_one_connection_are_answered_or_refused_and_others_are_served() {
    let (backend, gateway) = start(&config_for).await;
    let rss_before = rss();
    let mut tcp = open(gateway.addr).await;
    let streams: Vec<u32> = (0..10_000).map(|i| 1 + 2 * i).collect();
    let mut burst = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        burst.extend(headers_frames(*stream, &request_headers(&[]), false));
        burst.extend(frame(
            DATA,
            END_STREAM,
            *stream,
            &get_body(&format!("s{}", i % 50)),
        ));
    }
    tcp.write_all(&burst).await.expect("the burst is sent");

    // Meanwhile, a well-behaved client is served.
    let mut client = gateway.client().await;
    let started = Instant::now();
    get(&mut client, key("bystander"), None)
        .await
        .expect("other clients are served during the burst");
    let bystander = started.elapsed();

    let outcome = read_outcome(&mut tcp, &streams, Duration::from_secs(30)).await;
    let unsettled = streams.iter().filter(|s| !outcome.settled(**s)).count();
    assert!(
        unsettled == 0 || outcome.closed,
        "{unsettled} streams neither answered nor refused, and the connection still open: {} answered, {} reset, \
         goaway {:?}",
        outcome.answered.len(),
        outcome.reset.len(),
        outcome.goaway_last_stream
    );
    // The server takes at most its stream limit (200) at once and refuses the rest (REFUSED_STREAM); a client that
    // keeps opening streams past the refusals is sent away (GOAWAY) — nothing is queued without bound.
    const REFUSED_STREAM: u32 = 0x7;
    assert!(
        outcome.answered.len() <= 200,
        "{} streams answered at once",
        outcome.answered.len()
    );
    assert!(
        outcome.reset.values().all(|code| *code == REFUSED_STREAM),
        "refusals are REFUSED_STREAM: {:?}",
        outcome
            .reset
            .values()
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        !outcome.reset.is_empty() || outcome.goaway_last_stream.is_some(),
        "refused somehow: {outcome:?}"
    );
    assert!(
        backend.get_calls() <= 50,
        "the cache still coalesces and answers: {}",
        backend.get_calls()
    );
    assert!(
        bystander < Duration::from_secs(5),
        "a bystander waited {bystander:?}"
    );
    get(&mut client, key("after"), None)
        .await
        .expect("and after it");
    // Memory stays bounded: nothing of the 10 000 requests is kept (the whole test process, so a loose bound; the
    // burst itself is ~1.5 MiB of frames).
    let grown = rss().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024 * 1024,
        "the process grew by {} MiB",
        grown >> 20
    );
    gateway.stop().await;
}

#[tokio::test]
async fn metadata_past_the_header_limit_closes_the_stream_not_the_gateway() {
    let (_backend, gateway) = start(&config_for).await;
    let mut tcp = open(gateway.addr).await;
    let huge = "x".repeat(1024 * 1024);
    let mut bytes = headers_frames(1, &request_headers(&[("x-huge", &huge)]), false);
    bytes.extend(frame(DATA, END_STREAM, 1, &get_body("a")));
    // The server may close the connection before reading it all: a failed write is one of the clean outcomes.
    let _ = tcp.write_all(&bytes).await;
    let outcome = read_outcome(&mut tcp, &[1], Duration::from_secs(10)).await;
    assert!(
        outcome.reset.contains_key(&1)
            || outcome.goaway_last_stream.is_some()
            || outcome.closed
            || outcome.answered.contains_key(&1),
        "the stream must be refused, closed or answered: {outcome:?}"
    );
    let mut client = gateway.client().await;
    get(&mut client, key("fine"), None)
        .await
        .expect("the gateway keeps serving");
    gateway.stop().await;
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_ends_at_the_backend_timeout() {
    let backend = TestBackend::start().await;
    let yaml = config(&backend.url(), "", "").replace("timeout: 5s", "timeout: 1s");
    let gateway = TestGateway::start(&yaml).await;
    let mut tcp = open(gateway.addr).await;
    let mut bytes = headers_frames(1, &request_headers(&[]), false);
    // Two bytes of a five-byte prefix, then silence (slow loris).
    bytes.extend(frame(DATA, 0, 1, &[0, 0]));
    tcp.write_all(&bytes).await.expect("sent");
    let started = Instant::now();
    let outcome = read_outcome(&mut tcp, &[1], Duration::from_secs(10)).await;
    assert!(
        outcome.answered.contains_key(&1) || outcome.reset.contains_key(&1),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    assert_eq!(backend.get_calls(), 0);
    gateway.stop().await;
}

#[tokio::test]
async fn a_compressed_flag_without_an_encoding_gets_an_error_status_and_is_never_cached() {
    let (backend, gateway) = start(&config_for).await;
    let mut body = key("zipped").encode_to_vec();
    let mut framed = vec![1];
    framed.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    framed.append(&mut body);
    for _ in 0..2 {
        let answer = raw::call(gateway.addr, "/testing.v1.Lookup/Get", &[], framed.clone()).await;
        assert!(
            answer.grpc_status != "0" && answer.grpc_status != "<none>",
            "{answer:?}"
        );
        assert!(!answer.grpc_message.is_empty(), "says why: {answer:?}");
    }
    // Not looked up, not stored: the backend judged each one (and refused it).
    assert_eq!(
        backend.get_calls(),
        0,
        "tonic refuses the message before the handler"
    );
    let mut client = gateway.client().await;
    assert_eq!(
        get(&mut client, key("zipped"), None)
            .await
            .expect("plain")
            .cache,
        "miss"
    );
    gateway.stop().await;
}
