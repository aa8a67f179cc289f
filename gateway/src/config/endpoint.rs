//! A backend's endpoint as configured: a fixed URL, or a DNS name resolved to one endpoint per address.

use serde::{Serialize, Serializer};

/// A configured endpoint, parsed once by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://host:port` or `https://host:port`.
    Static(String),
    /// `dns:///name:port`.
    Dns {
        /// The name to resolve.
        name: String,
        /// The port every resolved address is called on.
        port: u16,
    },
}

impl Target {
    /// Parses an endpoint, explaining what is wrong if it is neither form.
    pub fn parse(endpoint: &str) -> Result<Self, String> {
        if let Some(rest) = endpoint.strip_prefix("dns:///") {
            return rest
                .rsplit_once(':')
                .and_then(|(name, port)| {
                    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
                    (!name.is_empty()).then(|| Self::Dns {
                        name: name.to_owned(),
                        port,
                    })
                })
                .ok_or_else(|| {
                    format!(
                        "`{endpoint}`: write `dns:///name:port`, e.g. `dns:///catalog.shop.svc.cluster.local:50051`"
                    )
                });
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|err| format!("`{endpoint}` is not a URL: {err}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "`{endpoint}` must start with http://, https:// or dns:///"
            ));
        }
        if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
            return Err(format!(
                "`{endpoint}` needs a host and a port, e.g. `http://127.0.0.1:50052`"
            ));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!("`{endpoint}` must not have a path"));
        }
        Ok(Self::Static(endpoint.to_owned()))
    }

    /// Whether the endpoint is a plaintext URL (`http://`).
    pub fn is_plaintext(&self) -> bool {
        matches!(self, Self::Static(url) if url.starts_with("http://"))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(url) => f.write_str(url),
            Self::Dns { name, port } => write!(f, "dns:///{name}:{port}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_prints_them_back() {
        let dns = Target::parse("dns:///svc.ns.svc.cluster.local:50051").expect("valid");
        assert_eq!(
            dns,
            Target::Dns {
                name: "svc.ns.svc.cluster.local".into(),
                port: 50051
            }
        );
        assert_eq!(dns.to_string(), "dns:///svc.ns.svc.cluster.local:50051");
        let url = Target::parse("http://1.2.3.4:5").expect("valid");
        assert_eq!(url, Target::Static("http://1.2.3.4:5".into()));
        assert!(url.is_plaintext());
        for bad in [
            "dns:///svc",
            "dns:///:80",
            "dns:///svc:0",
            "ftp://h:1",
            "http://h",
            "http://h:1/path",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
