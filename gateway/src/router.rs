//! Routing: a call's path (`/pkg.Service/Method`) → the first route whose `match` fits.

use std::sync::Arc;

use http::HeaderName;
use strata_cache::Policy;

use crate::backend::{Backend, RetryPolicy};
use crate::metrics::RouteSeries;
use crate::proxy::rate_limit::RateLimit;
use crate::proxy::storage::StorageRules;

/// What a route's `match` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// One method: `/pkg.Service/Method`.
    Exact(String),
    /// Every method of a service: `/pkg.Service/*`, stored as the prefix `/pkg.Service/`.
    Service(String),
    /// Every call: `*`.
    Any,
}

impl Matcher {
    /// Parses a route's `match`, explaining what is wrong if it is not one of the three forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let hint = "write `/pkg.Service/Method`, `/pkg.Service/*` or `*`";
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` must start with `/`; {hint}"));
        };
        let Some((service, method)) = rest.split_once('/') else {
            return Err(format!("`{text}` has no method part; {hint}"));
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._".contains(c))
        };
        if !name_ok(service) {
            return Err(format!(
                "`{text}`: `{service}` is not a service name; {hint}"
            ));
        }
        if method == "*" {
            return Ok(Self::Service(format!("/{service}/")));
        }
        if !name_ok(method) || method.contains('.') {
            return Err(format!("`{text}`: `{method}` is not a method name; {hint}"));
        }
        Ok(Self::Exact(text.to_owned()))
    }

    /// Whether a call to `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Service(prefix) => {
                path.starts_with(prefix.as_str()) && !path[prefix.len()..].contains('/')
            }
            Self::Any => true,
        }
    }
}

/// How a cached route builds keys, stores answers and serves them.
#[derive(Debug)]
pub struct CacheRule {
    /// How lookups behave (early refresh).
    pub policy: Policy,
    /// Whether and how long answers are stored.
    pub storage: StorageRules,
    /// Request metadata whose values are part of the key.
    pub vary: Vec<HeaderName>,
    /// Cache calls carrying credentials even when the key does not vary on them.
    pub shared: bool,
}

/// Request metadata that identifies a caller: a call carrying it is not answered from a cache shared with others,
/// unless the route varies on it or is explicitly `shared`.
const CREDENTIALS: [http::HeaderName; 2] = [http::header::AUTHORIZATION, http::header::COOKIE];

impl CacheRule {
    /// Whether a call with `headers` must bypass the cache: it carries credentials the key does not vary on.
    pub fn must_bypass(&self, headers: &http::HeaderMap) -> bool {
        !self.shared
            && CREDENTIALS
                .iter()
                .any(|c| headers.contains_key(c) && !self.vary.contains(c))
    }
}

/// One route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// Its call metrics, looked up once; their route label is the route's `match` as configured, its name.
    pub series: Arc<RouteSeries>,
    matcher: Matcher,
    /// Where its calls go.
    pub backend: Arc<Backend>,
    /// `Some` for cached routes.
    pub cache: Option<Arc<CacheRule>>,
    /// `Some` for rate-limited routes.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// `Some` for passthrough routes whose calls are buffered and retried.
    pub retry: Option<RetryPolicy>,
}

impl Route {
    /// What its `match` accepts.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// A route from its parts.
    pub fn new(
        matcher: Matcher,
        backend: Arc<Backend>,
        cache: Option<Arc<CacheRule>>,
        rate_limit: Option<Arc<RateLimit>>,
        retry: Option<RetryPolicy>,
        series: Arc<RouteSeries>,
    ) -> Self {
        Self {
            series,
            matcher,
            backend,
            cache,
            rate_limit,
            retry,
        }
    }
}

/// The routes in configured order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router trying `routes` in order.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route matching `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(path))
    }

    /// Every route, in order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Matcher::parse("*"), Ok(Matcher::Any));
        assert_eq!(
            Matcher::parse("/demo.v1.Catalog/*"),
            Ok(Matcher::Service("/demo.v1.Catalog/".into()))
        );
        assert_eq!(
            Matcher::parse("/demo.v1.Catalog/GetItem"),
            Ok(Matcher::Exact("/demo.v1.Catalog/GetItem".into()))
        );
        for bad in [
            "",
            "GetItem",
            "/demo.v1.Catalog",
            "/demo.v1.Catalog/",
            "//GetItem",
            "/a b/C",
            "/a/b/c",
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_paths() {
        let exact = Matcher::parse("/demo.v1.Catalog/GetItem").expect("valid");
        assert!(exact.matches("/demo.v1.Catalog/GetItem"));
        assert!(!exact.matches("/demo.v1.Catalog/GetItems"));
        let service = Matcher::parse("/demo.v1.Catalog/*").expect("valid");
        assert!(service.matches("/demo.v1.Catalog/ListItems"));
        assert!(!service.matches("/demo.v1.CatalogX/ListItems"));
        assert!(!service.matches("/demo.v1.Catalog/a/b"));
        assert!(Matcher::Any.matches("/anything/At"));
    }
}
