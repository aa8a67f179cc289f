//! Hostile (or broken) backends on a cached route: two messages on a unary call, trailers without a `grpc-status`,
//! no trailers at all, a Trailers-Only OK with no message. The client gets a clear status, and nothing is cached: the next call asks the backend again.
//! (Answers larger than `max_entry_bytes`: `caching::answers_over_max_entry_bytes_are_relayed_not_stored`.)

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::key;
use crate::support::gateway::{TestGateway, config};
use crate::support::raw;

/// How the backend misbehaves.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    TwoMessages,
    TrailersWithoutStatus,
    NoTrailers,
    /// Trailers-Only (the status in the headers, no body) with `grpc-status: 0`: an OK unary answer with no message.
    TrailersOnlyOk,
    /// Compresses its answer with gzip although the gateway accepted no encoding (decodable: cached decoded).
    GzipUnasked,
    /// Compresses its answer with an encoding the gateway does not decode.
    ZstdUnasked,
}

/// An HTTP/2 server answering every call with `misbehaviour`; counts the calls of the test service (not the gateway's
/// reflection, which it answers as brokenly).
async fn broken_backend(misbehaviour: Misbehaviour) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let calls = counted.clone();
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                if request.uri().path().starts_with("/testing.v1.") {
                    calls.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    let _ = request.into_body().collect().await;
                    let message = Bytes::from(raw::framed(&key("from-a-broken-backend")));
                    let mut ok = http::HeaderMap::new();
                    ok.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let mut no_status = http::HeaderMap::new();
                    no_status.insert("x-something", http::HeaderValue::from_static("else"));
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = match misbehaviour {
                        Misbehaviour::TwoMessages => vec![
                            Ok(Frame::data(message.clone())),
                            Ok(Frame::data(message)),
                            Ok(Frame::trailers(ok)),
                        ],
                        Misbehaviour::TrailersWithoutStatus => {
                            vec![Ok(Frame::data(message)), Ok(Frame::trailers(no_status))]
                        }
                        Misbehaviour::NoTrailers => vec![Ok(Frame::data(message))],
                        Misbehaviour::TrailersOnlyOk => Vec::new(),
                        Misbehaviour::GzipUnasked | Misbehaviour::ZstdUnasked => {
                            vec![
                                Ok(Frame::data(gzipped(&message[5..]))),
                                Ok(Frame::trailers(ok)),
                            ]
                        }
                    };
                    let mut response =
                        http::Response::builder().header("content-type", "application/grpc");
                    match misbehaviour {
                        Misbehaviour::GzipUnasked => {
                            response = response.header("grpc-encoding", "gzip")
                        }
                        Misbehaviour::ZstdUnasked => {
                            response = response.header("grpc-encoding", "zstd")
                        }
                        _ => {}
                    }
                    if let Misbehaviour::TrailersOnlyOk = misbehaviour {
                        response = response.header("grpc-status", "0");
                    }
                    response.body(StreamBody::new(futures::stream::iter(frames)))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, calls)
}

/// `message` gzipped, framed with the compressed flag set.
fn gzipped(message: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(message).expect("in memory");
    let compressed = encoder.finish().expect("in memory");
    let mut framed = vec![1];
    framed.extend_from_slice(
        &u32::try_from(compressed.len())
            .expect("small")
            .to_be_bytes(),
    );
    framed.extend_from_slice(&compressed);
    Bytes::from(framed)
}

#[tokio::test]
async fn an_answer_gzipped_unasked_is_stored_and_replayed_decoded() {
    let (url, calls) = broken_backend(Misbehaviour::GzipUnasked).await;
    let gateway = TestGateway::start(&config(&url, "", "")).await;
    let mut client = gateway.client().await;
    for expected in ["miss", "l1"] {
        let answer = crate::get(&mut client, key("k"), None)
            .await
            .expect("the decoded answer");
        assert_eq!(answer.cache, expected);
        assert_eq!(answer.reply.key, "from-a-broken-backend");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the second call was a hit");
    gateway.stop().await;
}

#[tokio::test]
async fn broken_answers_fail_cleanly_and_are_never_cached() {
    for misbehaviour in [
        Misbehaviour::TwoMessages,
        Misbehaviour::TrailersWithoutStatus,
        Misbehaviour::NoTrailers,
        Misbehaviour::TrailersOnlyOk,
        Misbehaviour::ZstdUnasked,
    ] {
        let (url, calls) = broken_backend(misbehaviour).await;
        // With a descriptor, `Get` is known to be unary: a second message is a broken answer, not a stream.
        let descriptors = crate::support::descriptors_from_file();
        let gateway = TestGateway::start(&config(&url, "", &descriptors)).await;
        let body = raw::framed(&key("k"));
        for attempt in 1..=2 {
            let answer = raw::call(gateway.addr, "/testing.v1.Lookup/Get", &[], body.clone()).await;
            assert!(
                answer.grpc_status != "0" && answer.grpc_status != "<none>",
                "{misbehaviour:?}: a broken answer must not pass as OK: {answer:?}"
            );
            assert!(
                !answer.grpc_message.is_empty(),
                "{misbehaviour:?}: says why: {answer:?}"
            );
            assert_eq!(
                calls.load(Ordering::SeqCst),
                attempt,
                "{misbehaviour:?}: nothing was cached, the backend is asked again"
            );
        }
        gateway.stop().await;
    }
}

/// Without a descriptor, under a cached wildcard route, a second answer message means the method streams: both are
/// relayed as they came, status and all, and nothing is cached.
#[tokio::test]
async fn without_a_descriptor_a_second_answer_message_is_relayed_as_a_stream() {
    let (url, calls) = broken_backend(Misbehaviour::TwoMessages).await;
    let yaml = crate::method_kinds::wildcard_config(&url, "descriptors: { reflection: false }");
    let gateway = TestGateway::start(&yaml).await;
    let body = raw::framed(&key("k"));
    for attempt in 1..=2 {
        let answer = raw::call(gateway.addr, "/testing.v1.Lookup/Get", &[], body.clone()).await;
        assert_eq!(answer.grpc_status, "0");
        assert_eq!(answer.cache, "<none>", "carried through, not looked up");
        let one = raw::framed(&key("from-a-broken-backend"));
        assert_eq!(answer.message.len() + 5, 2 * one.len(), "both messages");
        assert_eq!(calls.load(Ordering::SeqCst), attempt);
    }
    gateway.stop().await;
}
