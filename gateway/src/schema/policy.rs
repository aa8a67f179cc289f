//! The cache policy a method's proto declares — Strata's option (`strata/cache/v1/options.proto`) or
//! `idempotency_level = NO_SIDE_EFFECTS` — and how it combines with a `from_proto` route's own values.

use prost_reflect::{MethodDescriptor, Value};
use strata_proto::cache::v1::CachePolicy;

use crate::config::{RouteCacheConfig, field_path_ok, units};

/// `google.protobuf.MethodOptions.IdempotencyLevel.NO_SIDE_EFFECTS`.
const NO_SIDE_EFFECTS: i32 = 1;

/// Cache rules that do not fit a method's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub reason: String,
    /// Whether the config (or the proto) is in error, rather than leaving the method uncached on purpose.
    pub is_error: bool,
}

/// What a method's proto says about caching it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProtoPolicy {
    /// Strata's cache option, when the method carries it.
    pub option: Option<CachePolicy>,
    /// Whether it declares `idempotency_level = NO_SIDE_EFFECTS`.
    pub no_side_effects: bool,
}

impl ProtoPolicy {
    /// What `method`'s options declare.
    pub fn of(method: &MethodDescriptor) -> Self {
        let options = method.options();
        let option = method
            .parent_pool()
            .get_extension_by_name(strata_proto::CACHE_OPTION)
            .filter(|extension| options.has_extension(extension))
            .and_then(
                |extension| match options.get_extension(&extension).as_ref() {
                    Value::Message(policy) => policy.transcode_to::<CachePolicy>().ok(),
                    _ => None,
                },
            );
        let no_side_effects = options
            .get_field_by_name("idempotency_level")
            .is_some_and(|level| level.as_enum_number() == Some(NO_SIDE_EFFECTS));
        Self {
            option,
            no_side_effects,
        }
    }

    /// Whether a `from_proto` route caches the method.
    pub fn caches(&self) -> bool {
        self.option.is_some() || self.no_side_effects
    }
}

/// The cache config a `from_proto` route gives a method whose proto declares `proto`: the option's values, except
/// where the route sets its own; the route's values where the option is silent. A problem says what is missing or
/// invalid, for `strata check` and the log; the method is then not cached.
pub fn merged(route: &RouteCacheConfig, proto: &ProtoPolicy) -> Result<RouteCacheConfig, Problem> {
    let invalid = |reason: String| Problem {
        reason: format!("its cache option is invalid: {reason}"),
        is_error: true,
    };
    let Some(option) = &proto.option else {
        return if route.explicit.ttl {
            Ok(route.clone())
        } else {
            Err(Problem {
                reason: "declares NO_SIDE_EFFECTS without a cache option, and the route sets no `ttl`: not cached"
                    .into(),
                is_error: false,
            })
        };
    };
    merge_option(route, option).map_err(invalid)
}

fn merge_option(
    route: &RouteCacheConfig,
    option: &CachePolicy,
) -> Result<RouteCacheConfig, String> {
    let mut merged = route.clone();
    let duration = |name: &str, text: &str| {
        units::parse_duration(text).map_err(|e| format!("`{name}`: `{text}`: {e}"))
    };
    let take = |explicit: bool, name: &str, text: &str, into: &mut std::time::Duration| {
        if !explicit && !text.is_empty() {
            *into = duration(name, text)?;
        }
        Ok::<(), String>(())
    };
    take(route.explicit.ttl, "ttl", &option.ttl, &mut merged.ttl)?;
    take(
        route.explicit.negative_ttl,
        "negative_ttl",
        &option.negative_ttl,
        &mut merged.negative_ttl,
    )?;
    take(
        route.explicit.stale_while_revalidate,
        "stale_while_revalidate",
        &option.stale_while_revalidate,
        &mut merged.stale_while_revalidate,
    )?;
    take(
        route.explicit.stale_if_error,
        "stale_if_error",
        &option.stale_if_error,
        &mut merged.stale_if_error,
    )?;
    if merged.ttl.is_zero() {
        return Err("no `ttl` (set it in the option, or on the route)".into());
    }
    // Unless the route sets it, the cap on what a backend's cache-control may ask for is the method's own lifetime,
    // as `max_ttl` defaults to `ttl` on any route.
    if !route.explicit.max_ttl {
        merged.max_ttl = merged.ttl;
    }
    if !route.explicit.vary && !option.vary.is_empty() {
        merged.vary = Vec::with_capacity(option.vary.len());
        for name in &option.vary {
            let header = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("option `vary`: `{name}` is not a metadata name"))?;
            merged.vary.push(header);
        }
    }
    if !route.explicit.key_fields {
        if !option.key_fields.is_empty() && !option.ignore_fields.is_empty() {
            return Err("give either `key_fields` or `ignore_fields`, not both".into());
        }
        for path in option.key_fields.iter().chain(&option.ignore_fields) {
            field_path_ok(path)?;
        }
        merged.key.key_fields.clone_from(&option.key_fields);
        merged.key.ignore_fields.clone_from(&option.ignore_fields);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::testing;

    fn method(name: &str) -> MethodDescriptor {
        testing::pool()
            .get_service_by_name("testing.v1.Lookup")
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .expect("a method of the test service")
    }

    #[test]
    fn reads_the_option_and_the_idempotency_level() {
        let search = ProtoPolicy::of(&method("Search"));
        let option = search.option.clone().expect("Search carries the option");
        assert_eq!(option.ttl, "30s");
        assert_eq!(option.ignore_fields, ["request_id"]);
        assert!(search.caches());
        let peek = ProtoPolicy::of(&method("Peek"));
        assert_eq!((peek.option.is_some(), peek.no_side_effects), (false, true));
        assert!(!ProtoPolicy::of(&method("Get")).caches());
    }
}
