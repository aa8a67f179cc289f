//! A route's `match`: one method, every method of a service, or every call.

use serde::{Serialize, Serializer};

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

impl std::fmt::Display for Matcher {
    /// The `match` as written in the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(method) => f.write_str(method),
            Self::Service(prefix) => write!(f, "{prefix}*"),
            Self::Any => f.write_str("*"),
        }
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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

    #[test]
    fn prints_as_written() {
        for text in ["*", "/demo.v1.Catalog/*", "/demo.v1.Catalog/GetItem"] {
            assert_eq!(Matcher::parse(text).expect("valid").to_string(), text);
        }
    }
}
