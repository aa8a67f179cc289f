//! `strata.admin.v1.CacheAdmin`: invalidation on every replica, behind a bearer token.

use http::{HeaderMap, HeaderName, HeaderValue};
use strata_proto::admin::v1::cache_admin_server::CacheAdmin;
use strata_proto::admin::v1::invalidate_request::Target;
use strata_proto::admin::v1::{EntryTarget, InvalidateReply, InvalidateRequest};
use tonic::{Request, Response, Status};

use crate::config::Matcher;
use crate::error::GatewayError;
use crate::proxy::LiveProxy;
use crate::proxy::cache_key;

/// The admin service over a running proxy.
#[derive(Debug)]
pub struct CacheAdminService {
    proxy: LiveProxy,
}

impl CacheAdminService {
    /// Admin over `proxy`, behind the `admin.token` of its config (none refuses every mutation; a reload that
    /// changes it applies at once).
    pub fn new(proxy: LiveProxy) -> Self {
        Self { proxy }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), GatewayError> {
        let proxy = self.proxy.load();
        let Some(expected) = proxy.admin_token() else {
            return Err(GatewayError::AdminDisabled);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(GatewayError::AdminUnauthenticated(
                "missing `authorization: Bearer <token>`",
            ))?;
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(GatewayError::AdminUnauthenticated("wrong token"))
        }
    }

    /// Invalidates every entry of `scopes` (what an invalidation of `what` must reach) on every replica.
    async fn invalidate_scopes(
        &self,
        what: &str,
        scopes: &[&str],
    ) -> Result<InvalidateReply, GatewayError> {
        let proxy = self.proxy.load_full();
        let mut generations = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let generation = proxy
                .cache()
                .invalidate_scope(scope)
                .await
                .map_err(|e| GatewayError::CacheUnavailable(e.to_string()))?;
            generations.push(generation);
        }
        let named: Vec<String> = scopes
            .iter()
            .zip(&generations)
            .map(|(scope, generation)| format!("{scope} generation {generation}"))
            .collect();
        // A wildcard route keeps no scope per method: invalidating one of its methods invalidates the whole route.
        let reach = if scopes == [what] {
            String::new()
        } else {
            format!(
                ", by invalidating its route's scopes: {}",
                scopes.join(", ")
            )
        };
        Ok(InvalidateReply {
            // The generation of the scope that was asked for, or of the route's that stands for it.
            generation: generations.first().copied().unwrap_or_default(),
            detail: format!(
                "every entry of {what} invalidated on every replica{reach} ({})",
                named.join("; ")
            ),
        })
    }

    async fn invalidate_entry(&self, target: EntryTarget) -> Result<InvalidateReply, GatewayError> {
        let proxy = self.proxy.load_full();
        let (route, rule) = proxy
            .router()
            .route(&target.method)
            .and_then(|route| Some((route, route.cache.clone()?)))
            .ok_or_else(|| GatewayError::NotCached(target.method.clone()))?;
        let mut headers = HeaderMap::new();
        for m in &target.vary {
            let name =
                HeaderName::from_bytes(m.name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    GatewayError::AdminInvalid(format!("`{}` is not a metadata name", m.name))
                })?;
            let value = HeaderValue::from_str(&m.value).map_err(|_| {
                GatewayError::AdminInvalid(format!(
                    "the value of `{}` is not valid metadata",
                    m.name
                ))
            })?;
            headers.append(name, value);
        }
        let cache = proxy.cache();
        let key = cache_key::key_for(
            cache,
            proxy.namespace(),
            route.matcher(),
            &target.method,
            &rule.vary,
            &headers,
            // The admin API names the request in protobuf, as `application/grpc` calls send it.
            &cache_key::Codec::Proto,
            cache_key::RequestForm::Bytes(&target.request),
        )
        .await;
        cache
            .invalidate_key(key)
            .await
            .map_err(|e| GatewayError::CacheUnavailable(e.to_string()))?;
        Ok(InvalidateReply {
            generation: 0,
            detail: format!(
                "the entry of {} for this request invalidated on every replica",
                target.method
            ),
        })
    }
}

#[tonic::async_trait]
impl CacheAdmin for CacheAdminService {
    async fn invalidate(
        &self,
        request: Request<InvalidateRequest>,
    ) -> Result<Response<InvalidateReply>, Status> {
        self.authorize(&request).map_err(|e| e.to_status())?;
        let reply = match request.into_inner().target {
            Some(Target::Method(method)) => match Matcher::parse(&method) {
                Ok(Matcher::Exact(_)) => {
                    let proxy = self.proxy.load_full();
                    let scope = cache_key::method_scope(proxy.router(), &method);
                    self.invalidate_scopes(&method, &[scope]).await
                }
                _ => Err(GatewayError::AdminInvalid(format!(
                    "method `{method}` must look like /pkg.Service/Method"
                ))),
            },
            Some(Target::Service(service)) => match Matcher::parse(&format!("{}*", service)) {
                Ok(Matcher::Service(_)) if service.ends_with('/') => {
                    let proxy = self.proxy.load_full();
                    let scopes = cache_key::service_scopes(proxy.router(), &service);
                    self.invalidate_scopes(&service, &scopes).await
                }
                _ => Err(GatewayError::AdminInvalid(format!(
                    "service `{service}` must look like /pkg.Service/"
                ))),
            },
            Some(Target::Entry(entry)) => self.invalidate_entry(entry).await,
            None => Err(GatewayError::AdminInvalid(
                "say what to invalidate: entry, method or service".into(),
            )),
        };
        match reply {
            Ok(reply) => {
                tracing::info!(detail = %reply.detail, "cache invalidated");
                Ok(Response::new(reply))
            }
            Err(err) => Err(err.to_status()),
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_secrets() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
    }
}
