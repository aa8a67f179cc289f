//! Turning a cached answer back into a gRPC response: the stored message, status, headers and trailers.

use http::{HeaderMap, HeaderValue};
use strata_cache::{Entry, UnixMs};
use tonic::body::Body;

use super::metadata::{self, PrivateMetadata};
use crate::grpc::code;
use crate::grpc::message_body::MessageBody;
use crate::grpc::{CACHE_STATUS, CacheResult};
use crate::route::cache_control::CacheControl;

/// The `age` a stored answer is replayed with, `now`, when its `cache-control` carries a lifetime (`max-age`,
/// `s-maxage`): the seconds it has been stored, plus the `age` it came with. A cache downstream then counts its
/// lifetime from when the backend answered, not from when it received the replay.
pub fn age(entry: &Entry, now: UnixMs) -> Option<HeaderValue> {
    let has_lifetime = entry
        .headers
        .iter()
        .any(|m| m.name == "cache-control" && CacheControl::sets_lifetime(&m.value));
    if !has_lifetime {
        return None;
    }
    let came_with = entry
        .headers
        .iter()
        .find(|m| m.name == "age")
        .and_then(|m| {
            std::str::from_utf8(&m.value)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let stored_for = now.saturating_sub(entry.created) / 1000;
    Some(HeaderValue::from(came_with.saturating_add(stored_for)))
}

/// The response for a cached (or just fetched) answer, with `x-strata-cache: <cache_status>` when given, the
/// metadata only this caller may see when its own request fetched the answer, and `age` when given (see [`age`]).
///
/// An OK answer is its message then trailers; any other status is a Trailers-Only response, as gRPC servers send.
pub fn response(
    entry: &Entry,
    cache_status: Option<CacheResult>,
    private: Option<&PrivateMetadata>,
    age: Option<HeaderValue>,
) -> http::Response<Body> {
    let mut headers = HeaderMap::with_capacity(entry.headers.len() + 4);
    metadata::append(&mut headers, &entry.headers);
    if let Some(age) = age {
        headers.insert(http::header::AGE, age);
    }
    let (private_headers, private_trailers) =
        private.map_or((&[][..], &[][..]), |p| (&p.headers[..], &p.trailers[..]));
    metadata::append(&mut headers, private_headers);
    if !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
    }
    if let Some(result) = cache_status {
        headers.insert(CACHE_STATUS, HeaderValue::from_static(result.as_str()));
    }

    let body = if entry.status_code == 0 {
        let mut trailers = HeaderMap::with_capacity(entry.trailers.len() + 2);
        put_status(&mut trailers, entry);
        metadata::append(&mut trailers, &entry.trailers);
        metadata::append(&mut trailers, private_trailers);
        Body::new(MessageBody::new(entry.message.clone(), Some(trailers)))
    } else {
        put_status(&mut headers, entry);
        metadata::append(&mut headers, &entry.trailers);
        metadata::append(&mut headers, private_trailers);
        Body::empty()
    };
    let mut response = http::Response::new(body);
    *response.headers_mut() = headers;
    response
}

fn put_status(target: &mut HeaderMap, entry: &Entry) {
    target.insert(code::STATUS_HEADER, code::status_value(entry.status_code));
    if !entry.status_message.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&entry.status_message) {
            target.insert(code::MESSAGE_HEADER, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;

    fn entry(code: i32) -> Entry {
        let message = if code == 0 { "" } else { "not%20here" };
        let mut entry = Entry::unstamped(Bytes::from_static(b"msg"), code, message.into());
        entry.headers = vec![strata_cache::Metadata {
            name: "x-h".into(),
            value: Bytes::from_static(b"1"),
        }];
        entry.trailers = vec![strata_cache::Metadata {
            name: "x-t".into(),
            value: Bytes::from_static(b"2"),
        }];
        entry
    }

    #[tokio::test]
    async fn ok_answer_is_message_then_trailers() {
        let resp = response(&entry(0), Some(CacheResult::L1), None, None);
        assert_eq!(resp.headers()["x-strata-cache"], "l1");
        assert_eq!(resp.headers()["x-h"], "1");
        let collected = resp.into_body().collect().await.expect("infallible");
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-t"], "2");
        assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x03msg");
    }

    #[test]
    fn a_replay_with_a_lifetime_says_its_age() {
        let mut stored = entry(0);
        stored.created = 10_000;
        assert_eq!(age(&stored, 20_000), None, "no lifetime, no age");
        stored.headers.push(strata_cache::Metadata {
            name: "cache-control".into(),
            value: Bytes::from_static(b"public, Max-Age=60"),
        });
        assert_eq!(age(&stored, 20_500), Some(HeaderValue::from(10)));
        stored.headers.push(strata_cache::Metadata {
            name: "age".into(),
            value: Bytes::from_static(b"7"),
        });
        assert_eq!(
            age(&stored, 20_500),
            Some(HeaderValue::from(17)),
            "plus the age it came with"
        );
        let resp = response(&stored, None, None, age(&stored, 20_500));
        assert_eq!(
            resp.headers().get_all("age").iter().collect::<Vec<_>>(),
            ["17"],
            "replaces the stored age"
        );
    }

    #[tokio::test]
    async fn error_answer_is_trailers_only() {
        let resp = response(&entry(5), None, None, None);
        assert_eq!(resp.headers()["grpc-status"], "5");
        assert_eq!(resp.headers()["grpc-message"], "not%20here");
        assert_eq!(resp.headers()["x-t"], "2");
        assert!(resp.headers().get("x-strata-cache").is_none());
        assert!(http_body::Body::is_end_stream(&resp.into_body()));
    }
}
