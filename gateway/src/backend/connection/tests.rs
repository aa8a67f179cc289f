//! Tests of the backend connection: writes per call, flow control both ways, pings and reconnects.

use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;

use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;
use crate::test_io::CountedWrites;

/// A server that reads each request whole and answers its length in `x-received`, then `size` bytes of body and
/// trailers.
fn serve(io: tokio::io::DuplexStream, size: usize) {
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| async move {
        let received = request
            .into_body()
            .collect()
            .await
            .map_or(0, |c| c.to_bytes().len());
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = [
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7; size]))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut response = http::Response::new(StreamBody::new(futures::stream::iter(frames)));
        response
            .headers_mut()
            .insert("x-received", http::HeaderValue::from(received));
        Ok::<_, Infallible>(response)
    });
    tokio::spawn(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service),
    );
}

/// A gRPC request body: one empty message.
fn empty_message() -> Body {
    Body::new(Full::new(Bytes::from_static(b"\0\0\0\0\x00")))
}

fn unary_request(body: Body) -> http::Request<Body> {
    http::Request::post("/demo.v1.Catalog/GetItem")
        .header("content-type", "application/grpc")
        .body(body)
        .expect("request")
}

/// How [`writes_for_a_call`] sends its calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// This connection, the body whole when the call is handed over.
    Ours,
    /// This connection, the body's message arriving after the call was handed over but before its first poll — as
    /// a client's DATA does, read after the gateway dispatched its HEADERS.
    OursBodyLate,
    /// hyper's client.
    Hyper,
}

/// The client's writes for the second of two calls with a 13-byte body (the first settles the settings).
async fn writes_for_a_call(sender: Sender) -> usize {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    serve(server_io, 545);
    let writes = Arc::new(AtomicUsize::new(0));
    let (reads, writes_half) = tokio::io::split(client_io);
    let counted = tokio::io::join(reads, CountedWrites::new(writes_half, writes.clone()));
    let authority = http::uri::Authority::from_static("backend:50052");
    let message = Bytes::from_static(b"\0\0\0\0\x08\n\x06item-1");
    let body = || Body::new(Full::new(message.clone()));
    let mut before = 0;
    if sender != Sender::Hyper {
        let (h2_sender, connection) = handshake(OneWrite(counted)).await.expect("handshake");
        tokio::spawn(connection);
        for _ in 0..2 {
            before = writes.load(Ordering::Relaxed);
            let ready = h2_sender.clone().ready().await.expect("ready");
            let (late_message, request) = if sender == Sender::OursBodyLate {
                let (message, frames) = futures::channel::mpsc::unbounded();
                (
                    Some(message),
                    unary_request(Body::new(StreamBody::new(frames))),
                )
            } else {
                (None, unary_request(body()))
            };
            let (head, body) = head_for(&authority, request).expect("head");
            let sent = send_on(ready, head, body).expect("sent");
            if let Some(late_message) = late_message {
                let _ = late_message
                    .unbounded_send(Ok::<_, tonic::Status>(Frame::data(message.clone())));
            }
            let response = sent.await.expect("answer");
            assert_eq!(response.headers()["x-received"], "13");
            let _ = response.into_body().collect().await.expect("body");
        }
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(counted))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        for _ in 0..2 {
            before = writes.load(Ordering::Relaxed);
            let mut request = unary_request(body());
            *request.uri_mut() = "http://backend:50052/demo.v1.Catalog/GetItem"
                .parse()
                .expect("uri");
            let response = sender.send_request(request).await.expect("answer");
            let _ = response.into_body().collect().await.expect("body");
        }
    }
    writes.load(Ordering::Relaxed) - before
}

#[tokio::test]
async fn a_unary_request_leaves_in_one_write() {
    assert_eq!(writes_for_a_call(Sender::Ours).await, 1);
    // What it is for: hyper's client sends the body in a write after the HEADERS.
    assert_eq!(writes_for_a_call(Sender::Hyper).await, 2);
}

#[tokio::test]
async fn a_body_that_came_after_the_hand_over_leaves_with_the_head() {
    assert_eq!(writes_for_a_call(Sender::OursBodyLate).await, 1);
}

#[tokio::test]
async fn bodies_larger_than_the_windows_go_through_under_flow_control() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    // Answers of 5 MiB: beyond the stream window the client offers (2 MiB), as far as its connection window.
    serve(server_io, 5 << 20);
    let (sender, connection) = handshake(client_io).await.expect("handshake");
    tokio::spawn(connection);
    let authority = http::uri::Authority::from_static("backend:50052");
    // 5 MiB sent in 64 KiB pieces as a stream: beyond the eager bytes, and the server's 1 MiB window.
    let pieces = (0..80).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![1; 64 << 10]))));
    let body = Body::new(StreamBody::new(futures::stream::iter(pieces)));
    let ready = sender.ready().await.expect("ready");
    let (head, body) = head_for(&authority, unary_request(body)).expect("head");
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        send_on(ready, head, body).expect("sent"),
    )
    .await
    .expect("no stall")
    .expect("answer");
    assert_eq!(
        response.headers()["x-received"],
        (80 << 16).to_string().as_str()
    );
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("no stall")
        .expect("body");
    assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
    assert_eq!(collected.to_bytes().len(), 5 << 20);
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_pings_go_unanswered_is_closed_and_forgotten() {
    let config = ConnectionConfig {
        connect_timeout: Duration::from_secs(1),
        keepalive_interval: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(5),
    };
    let uri = "http://backend:50052".parse().expect("uri");
    let connection = Connection::lazy(&uri, config.clone()).expect("http URL");
    // A peer that takes every byte and never answers: a blackholed backend.
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let (sender, h2) = handshake(client_io).await.expect("handshake");
    *connection.shared.open.lock().expect("lock") = Some((1, sender));
    let driving = tokio::spawn(drive(h2, Arc::downgrade(&connection.shared), 1, config));
    tokio::time::timeout(Duration::from_secs(16), driving)
        .await
        .expect("closed after one interval and one timeout")
        .expect("no panic");
    assert!(
        connection.open().is_none(),
        "the next call makes a new connection"
    );
    drop(server_io);
}

#[tokio::test]
async fn after_the_backend_closed_the_connection_the_next_call_makes_a_new_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (server_io, relay) = tokio::io::duplex(1 << 16);
            serve(server_io, 10);
            // Relays the socket to the server; aborting it closes the connection as a restart would.
            let relaying = tokio::spawn(async move {
                let (mut tcp, mut relay) = (tcp, relay);
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut relay).await;
            });
            let _ = accepted_tx.send(relaying);
        }
    });
    let connection = connection_to(addr, Duration::from_secs(1));
    let first = connection
        .send(unary_request(empty_message()), Deadline::default())
        .await
        .expect("first call");
    assert_eq!(first.headers()["x-received"], "5");
    accepted.recv().await.expect("one connection").abort();
    // A call racing the close may fail, as with any client: nothing tells it the request was not processed.
    // Once the close is seen, the connection is forgotten and the next call makes a new one.
    for _ in 0..200 {
        if connection.open().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(connection.open().is_none(), "the close is noticed");

    let second = connection
        .send(unary_request(empty_message()), Deadline::default())
        .await;
    assert!(
        second.is_ok(),
        "the call after the close: {:?}",
        second.err()
    );
    assert!(accepted.recv().await.is_some(), "made on a new connection");
}

#[tokio::test]
async fn calls_waiting_for_a_connect_that_fails_share_its_failure() {
    // A listener whose accept queue is full and never drained: further connects hang, as to a host that is down.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(1).expect("listen");
    let mut queued = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            queued.push(tcp);
        }
    }
    let connection = connection_to(addr, Duration::from_millis(300));
    let calls =
        (0..10).map(|_| connection.send(unary_request(empty_message()), Deadline::default()));
    let results = futures::future::join_all(calls).await;
    let timed_out = results
        .iter()
        .filter(|r| matches!(r, Err(CallError::ConnectTimeout { .. })))
        .count();
    let shared = results
        .iter()
        .filter(|r| matches!(r, Err(CallError::ConnectFailedMeanwhile(_))))
        .count();
    assert_eq!(
        (timed_out, shared),
        (1, 9),
        "one attempt, its failure shared: {results:?}"
    );
    drop((listener, queued));
}
