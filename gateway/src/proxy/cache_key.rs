//! The cache key of a call: the namespace, the method, the generations of its invalidation scopes (so that a method,
//! a service or a route can be invalidated without a scan), the route's `vary` values, and the request message bytes.
//!
//! Scopes are named by the config, never by a client: a wildcard route keeps one scope for every method it serves,
//! so a client sending ever new method names grows no per-method state (each known scope is held in memory, and
//! re-read from Redis after a reconnect).

use http::{HeaderMap, HeaderName};
use strata_cache::{Key, KeyBuilder, Tiered};

use crate::config::Matcher;
use crate::route::Router;

/// The scope `*` routes keep for every call they cache (no method or service path looks like it).
const CATCH_ALL_SCOPE: &str = "*";

/// The two scopes of the calls a route matching with `matcher` caches: on an exact route, its service
/// (`/pkg.Service/`) and its method; on a `/pkg.Service/*` route, the service (twice); on `*`, the scope `*` (twice).
pub fn scopes(matcher: &Matcher) -> [&str; 2] {
    match matcher {
        Matcher::Exact(method) => [service_of(method), method],
        Matcher::Service(service) => [service, service],
        Matcher::Any => [CATCH_ALL_SCOPE; 2],
    }
}

/// The service part of a method path (`/pkg.Service/` of `/pkg.Service/Method`).
fn service_of(method: &str) -> &str {
    let service_end = method
        .get(1..)
        .and_then(|rest| rest.find('/'))
        .map_or(method.len(), |i| i + 2);
    &method[..service_end]
}

/// The scope whose bump invalidates every cached answer of `method`: the method's own on an exact route; on a
/// wildcard route, the route's (it keeps no scope per method, so the whole route goes); the method's own where no
/// cached route serves it (nothing to invalidate, but the bump is recorded).
pub fn method_scope<'a>(router: &'a Router, method: &'a str) -> &'a str {
    match router.route(method).filter(|route| route.cache.is_some()) {
        Some(route) => scopes(route.matcher())[1],
        None => method,
    }
}

/// The scopes whose bumps invalidate every cached answer of `service` (`/pkg.Service/`): the service's, and `*` when
/// a cached catch-all route may serve some of its methods.
pub fn service_scopes<'a>(router: &Router, service: &'a str) -> Vec<&'a str> {
    let mut scopes = vec![service];
    if router
        .routes()
        .any(|route| route.cache.is_some() && *route.matcher() == Matcher::Any)
    {
        scopes.push(CATCH_ALL_SCOPE);
    }
    scopes
}

/// How a call's messages are encoded, per its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Protobuf: `application/grpc` and `application/grpc+proto`. Its keys carry no encoding field, as before
    /// codecs were keyed, so an upgrade finds what the running replicas stored.
    Proto,
    /// Another codec, by the subtype of `application/grpc+<subtype>` (`json`, say).
    Other(String),
}

/// How the request is written into the key.
#[derive(Debug, Clone, Copy)]
pub enum RequestForm<'a> {
    /// The message bytes as the client sent them.
    Bytes(&'a [u8]),
    /// The decoded request's canonical form (see [`crate::schema::canonical`]).
    Canonical(&'a [u8]),
}

/// The encoding name that marks a canonical form in a key: `/` is in no codec name (see `cacheable_codec`), so no
/// client's bytes can be taken for a canonical form.
const CANONICAL: &str = "canonical/v1";

/// The key of a call to `path` (on a route matching with `matcher`) with `headers` and a request encoded with
/// `codec`, on a route varying on `vary`.
#[allow(clippy::too_many_arguments)]
pub async fn key_for(
    cache: &Tiered,
    namespace: &str,
    matcher: &Matcher,
    path: &str,
    vary: &[HeaderName],
    headers: &HeaderMap,
    codec: &Codec,
    request: RequestForm<'_>,
) -> Key {
    let scopes = scopes(matcher);
    let generations = cache.generations(&scopes).await;
    let mut key = KeyBuilder::new(namespace, path);
    for (scope, generation) in scopes.iter().zip(generations) {
        key = key.generation(scope, generation);
    }
    if let Codec::Other(name) = codec {
        key = key.encoding(name);
    }
    let message = match request {
        RequestForm::Bytes(bytes) => bytes,
        RequestForm::Canonical(form) => {
            key = key.encoding(CANONICAL);
            form
        }
    };
    for name in vary {
        key = key.vary(
            name.as_str(),
            headers.get_all(name).iter().map(|v| v.as_bytes()),
        );
    }
    key.finish(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_named_by_the_route_not_the_client() {
        let method = "/demo.v1.Catalog/GetItem";
        let exact = Matcher::parse(method).expect("valid");
        assert_eq!(scopes(&exact), ["/demo.v1.Catalog/", method]);
        let service = Matcher::parse("/demo.v1.Catalog/*").expect("valid");
        assert_eq!(scopes(&service), ["/demo.v1.Catalog/"; 2]);
        assert_eq!(scopes(&Matcher::Any), ["*"; 2]);
        assert_eq!(service_of("/odd"), "/odd");
        assert_eq!(service_of(""), "");
    }
}
