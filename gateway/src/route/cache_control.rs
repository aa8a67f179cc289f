//! The backend's say over caching: a `cache-control` header in its response metadata, as an HTTP cache reads it.

use std::time::Duration;

use http::HeaderMap;

/// The directives of a `cache-control` header that Strata obeys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`, `no-cache` or `private`: do not store the answer in a shared cache.
    pub no_store: bool,
    /// `s-maxage=N` (for shared caches, preferred) or else `max-age=N`: fresh for N seconds.
    pub max_age: Option<Duration>,
    /// `stale-while-revalidate=N`.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error=N`.
    pub stale_if_error: Option<Duration>,
    /// `must-revalidate` or `proxy-revalidate`: once stale, never served (no stale serving of any kind).
    pub must_revalidate: bool,
}

impl CacheControl {
    /// Reads every `cache-control` header in `headers` (directives are case-insensitive; unknown ones are ignored,
    /// and a malformed number makes that directive count as absent).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_metadata(headers, None)
    }

    /// Reads every `cache-control` in an answer's headers and, if given, its trailers: gRPC servers may send
    /// metadata in either, and a directive counts wherever it came.
    pub fn from_metadata(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Self {
        let mut cc = Self::default();
        let mut max_age = None;
        let mut s_maxage = None;
        let values = headers
            .get_all(http::header::CACHE_CONTROL)
            .into_iter()
            .chain(
                trailers
                    .into_iter()
                    .flat_map(|t| t.get_all(http::header::CACHE_CONTROL)),
            );
        for value in values {
            let Ok(text) = value.to_str() else { continue };
            for (name, arg) in directives(text) {
                let seconds = || {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs)
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" | "no-cache" | "private" => cc.no_store = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "max-age" => max_age = seconds().or(max_age),
                    "s-maxage" => s_maxage = seconds().or(s_maxage),
                    "stale-while-revalidate" => cc.stale_while_revalidate = seconds(),
                    "stale-if-error" => cc.stale_if_error = seconds(),
                    _ => {}
                }
            }
        }
        cc.max_age = s_maxage.or(max_age);
        cc
    }

    /// Whether one `cache-control` value gives the answer a lifetime (`max-age` or `s-maxage`). Allocates nothing:
    /// it is asked of stored answers as they are replayed.
    pub fn sets_lifetime(value: &[u8]) -> bool {
        std::str::from_utf8(value).is_ok_and(|text| {
            directives(text).any(|(name, _)| {
                name.eq_ignore_ascii_case("max-age") || name.eq_ignore_ascii_case("s-maxage")
            })
        })
    }
}

/// The directives of one `cache-control` value: each name, and its argument if it has one (quotes removed).
fn directives(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.split(',')
        .map(|directive| match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(http::header::CACHE_CONTROL, v.parse().expect("header"));
        }
        CacheControl::from_headers(&headers)
    }

    #[test]
    fn reads_the_directives() {
        assert_eq!(parse(&[]), CacheControl::default());
        let cc = parse(&[
            "public, max-age=2, stale-while-revalidate=30",
            "Stale-If-Error=600",
        ]);
        assert_eq!(cc.max_age, Some(Duration::from_secs(2)));
        assert_eq!(cc.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(cc.stale_if_error, Some(Duration::from_secs(600)));
        assert!(!cc.no_store);
        for never in ["no-store", "NO-CACHE", "private, max-age=60"] {
            assert!(parse(&[never]).no_store, "{never}");
        }
    }

    #[test]
    fn trailers_count_and_revalidation_is_read() {
        let mut trailers = HeaderMap::new();
        trailers.insert(
            http::header::CACHE_CONTROL,
            "no-store".parse().expect("header"),
        );
        assert!(CacheControl::from_metadata(&HeaderMap::new(), Some(&trailers)).no_store);
        assert!(parse(&["max-age=5, Must-Revalidate"]).must_revalidate);
        assert!(parse(&["proxy-revalidate"]).must_revalidate);
        assert!(!parse(&["max-age=5"]).must_revalidate);
        assert!(CacheControl::sets_lifetime(b"public, S-MaxAge=5"));
        assert!(!CacheControl::sets_lifetime(b"no-store, x-max-age-ish"));
    }

    #[test]
    fn shared_max_age_wins_and_garbage_is_ignored() {
        assert_eq!(
            parse(&["max-age=60, s-maxage=5"]).max_age,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse(&["max-age=\"7\""]).max_age,
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse(&["max-age=-1"]).max_age, None);
        assert_eq!(parse(&["max-age=soon, ,,="]).max_age, None);
    }
}
