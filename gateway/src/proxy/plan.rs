//! What the cached path does with each method it has a descriptor for, worked out once per schema (and config)
//! rather than per call: carry it through untouched (it streams, or a `from_proto` route does not cache it), or look
//! it up under the route's cache rule or the method's own, its key built from the request bytes or from the
//! request's canonical form.

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::MethodDescriptor;

use crate::config::Matcher;
use crate::route::CacheRule;
use crate::schema::canonical::CanonicalKey;
use crate::schema::policy::{Problem, ProtoPolicy, merged};
use crate::schema::{MethodKind, Schema};

/// What the cached path does with one method.
#[derive(Debug)]
pub struct MethodPlan {
    /// The index of the route serving it.
    pub route: usize,
    /// Its kind, per its descriptor.
    pub kind: MethodKind,
    /// `Some`: looked up in the cache under this rule. `None`: carried through untouched.
    pub rule: Option<Arc<CacheRule>>,
    /// `Some`: the key is built from the request's canonical form.
    pub key: Option<Arc<CanonicalKey>>,
    /// Why its cache rules could not be applied as configured, if they could not.
    pub problem: Option<Problem>,
}

/// What planning needs of a route.
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    /// Its `match`.
    pub matcher: &'a Matcher,
    /// Its backend's name.
    pub backend: &'a str,
    /// Its cache rule, on a cached route.
    pub cache: Option<&'a Arc<CacheRule>>,
}

/// The plans of every method with a descriptor whose route caches, by path.
#[derive(Debug, Default)]
pub struct Plans {
    by_path: HashMap<String, MethodPlan>,
}

impl Plans {
    /// The plan of the method at `path`, if it has a descriptor and its route caches.
    pub fn get(&self, path: &str) -> Option<&MethodPlan> {
        self.by_path.get(path)
    }

    /// Every plan, in path order.
    pub fn sorted(&self) -> Vec<(&String, &MethodPlan)> {
        let mut all: Vec<_> = self.by_path.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Plans every method in `schema` whose route (the first of `routes` matching its path) caches.
    pub fn new(routes: &[RouteView<'_>], schema: &Schema) -> Self {
        let mut by_path = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            let Some(rule) = route.cache else { continue };
            for (path, method) in schema.methods_for(route.backend) {
                let first = routes.iter().position(|r| r.matcher.matches(path));
                if first == Some(index) {
                    by_path.insert(path.clone(), plan(index, rule, method));
                }
            }
        }
        Self { by_path }
    }
}

/// The plan of `method`, served by route `route` with cache rule `rule`.
fn plan(route: usize, rule: &Arc<CacheRule>, method: &MethodDescriptor) -> MethodPlan {
    let kind = MethodKind::of(method);
    let mut plan = MethodPlan {
        route,
        kind,
        rule: None,
        key: None,
        problem: None,
    };
    if kind != MethodKind::Unary {
        return plan;
    }
    let own = if rule.config.from_proto {
        let proto = ProtoPolicy::of(method);
        if !proto.caches() {
            return plan;
        }
        match merged(&rule.config, &proto) {
            Ok(config) => Arc::new(CacheRule::new(
                config,
                rule.storage.private_metadata.clone(),
            )),
            Err(problem) => {
                plan.problem = Some(problem);
                return plan;
            }
        }
    } else {
        rule.clone()
    };
    if own.config.key.decode() {
        let rules = &own.config.key;
        match CanonicalKey::new(
            &method.input(),
            &rules.key_fields,
            &rules.ignore_fields,
            rules.keep_unknown_fields,
        ) {
            Ok(key) => plan.key = Some(Arc::new(key)),
            // Keyed by the request bytes instead: every field counts, so no answer is shared wrongly; only the hit
            // ratio suffers.
            Err(reason) => {
                plan.problem = Some(Problem {
                    reason: format!("{reason}; keyed by the request bytes until that is fixed"),
                    is_error: true,
                });
            }
        }
    }
    plan.rule = Some(own);
    plan
}
