//! The cache key of a call: the namespace, the method, the generations of its scopes (its service and its method,
//! so that either can be invalidated without a scan), the route's `vary` values, and the request message bytes.

use http::{HeaderMap, HeaderName};
use strata_cache::{Key, KeyBuilder, Tiered};

/// The scopes a call to `path` (`/pkg.Service/Method`) belongs to: its service (`/pkg.Service/`) and its method.
pub fn scopes(path: &str) -> [&str; 2] {
    let service_end = path
        .get(1..)
        .and_then(|rest| rest.find('/'))
        .map_or(path.len(), |i| i + 2);
    [&path[..service_end], path]
}

/// The key of a call to `path` with `headers` and `message`, on a route varying on `vary`.
pub async fn key_for(
    cache: &Tiered,
    namespace: &str,
    path: &str,
    vary: &[HeaderName],
    headers: &HeaderMap,
    message: &[u8],
) -> Key {
    let scopes = scopes(path);
    let generations = cache.generations(&scopes).await;
    let mut key = KeyBuilder::new(namespace, path);
    for (scope, generation) in scopes.iter().zip(generations) {
        key = key.generation(scope, generation);
    }
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
    fn a_method_belongs_to_its_service() {
        assert_eq!(
            scopes("/demo.v1.Catalog/GetItem"),
            ["/demo.v1.Catalog/", "/demo.v1.Catalog/GetItem"]
        );
        assert_eq!(scopes("/odd"), ["/odd", "/odd"]);
        assert_eq!(scopes(""), ["", ""]);
    }
}
