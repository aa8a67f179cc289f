//! `strata.admin.v1.CacheAdmin`: invalidation on every replica, behind a bearer token.

use http::{HeaderMap, HeaderName, HeaderValue};
use strata_proto::admin::v1::cache_admin_server::CacheAdmin;
use strata_proto::admin::v1::invalidate_request::Target;
use strata_proto::admin::v1::{EntryTarget, InvalidateReply, InvalidateRequest};
use tonic::{Request, Response, Status};

use crate::config::Matcher;
use crate::error::GatewayError;
use prost::Message as _;
use prost_reflect::DynamicMessage;

use crate::proxy::cache_key;
use crate::proxy::{LiveProxy, Proxy};
use crate::route::Route;
use crate::schema::canonical::CanonicalKey;

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
        let route = proxy
            .router()
            .route(&target.method)
            .filter(|route| route.cache.is_some())
            .ok_or_else(|| GatewayError::NotCached(target.method.clone()))?;
        let plans = proxy.plans();
        let plan = plans.get(&target.method);
        // The method's own rule on a `from_proto` route (its `vary` among it), else the route's.
        let rule = match plan {
            Some(plan) => plan
                .rule
                .clone()
                .ok_or_else(|| GatewayError::NotCached(target.method.clone()))?,
            None => route
                .cache
                .clone()
                .ok_or_else(|| GatewayError::NotCached(target.method.clone()))?,
        };
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
        let canonical = plan.and_then(|plan| plan.key.as_deref());
        let request = request_form(&proxy, route, &target, canonical)?;
        let form = match &request {
            KeyedRequest::Bytes(bytes) => cache_key::RequestForm::Bytes(bytes),
            KeyedRequest::Canonical(form) => cache_key::RequestForm::Canonical(form),
        };
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
            form,
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

/// The request of an entry target as its key is built: its bytes, or its canonical form where the method's key is.
enum KeyedRequest {
    Bytes(Vec<u8>),
    Canonical(Vec<u8>),
}

/// The request `target` names — as bytes, or as JSON decoded with the method's descriptor — in the form the method's
/// keys are built from (`canonical`, when its route has key rules).
fn request_form(
    proxy: &Proxy,
    route: &Route,
    target: &EntryTarget,
    canonical: Option<&CanonicalKey>,
) -> Result<KeyedRequest, GatewayError> {
    if target.request_json.is_empty() {
        return Ok(match canonical {
            Some(key) => KeyedRequest::Canonical(
                key.of_bytes(&target.request)
                    .map_err(|e| GatewayError::AdminInvalid(e.to_string()))?,
            ),
            None => KeyedRequest::Bytes(target.request.to_vec()),
        });
    }
    if !target.request.is_empty() {
        return Err(GatewayError::AdminInvalid(
            "give the request as `request` (bytes) or `request_json`, not both".into(),
        ));
    }
    let schema = proxy.schema().load();
    let method = schema
        .method(&target.method, route.backend.name())
        .ok_or_else(|| {
            GatewayError::NotCached(format!(
                "{}: the gateway has no descriptor for it, so `request_json` cannot be read; give `request` as bytes",
                target.method
            ))
        })?;
    let mut json = serde_json::Deserializer::from_str(&target.request_json);
    let message = DynamicMessage::deserialize(method.input(), &mut json).map_err(|e| {
        GatewayError::AdminInvalid(format!(
            "`request_json` is not a {}: {e}",
            method.input().full_name()
        ))
    })?;
    Ok(match canonical {
        Some(key) => KeyedRequest::Canonical(key.of_message(&message)),
        None => KeyedRequest::Bytes(message.encode_to_vec()),
    })
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
