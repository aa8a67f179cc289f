//! What the cached path does with each method it has a descriptor for, worked out once per schema (and config)
//! rather than per call: carry it through untouched (it streams, or a `from_proto` route does not cache it), or look
//! it up under the route's cache rule or the method's own, its key built from the request bytes or from the
//! request's canonical form.

use std::collections::HashMap;
use std::sync::Arc;

use crate::route::{CacheRule, Router};
use crate::schema::canonical::CanonicalKey;
use crate::schema::policy::{ProtoPolicy, merged};
use crate::schema::{MethodKind, Schema};

/// What the cached path does with one method.
#[derive(Debug)]
pub struct MethodPlan {
    /// Its kind, per its descriptor.
    pub kind: MethodKind,
    /// `Some`: looked up in the cache under this rule. `None`: carried through untouched.
    pub rule: Option<Arc<CacheRule>>,
    /// `Some`: the key is built from the request's canonical form.
    pub key: Option<Arc<CanonicalKey>>,
}

/// The plans of every method with a descriptor whose route caches, by path; and what could not be planned.
#[derive(Debug, Default)]
pub struct Plans {
    by_path: HashMap<String, MethodPlan>,
    /// Methods whose cache rules do not fit their descriptor, with the reason (logged, and shown by `strata check`).
    pub problems: Vec<(String, String)>,
}

impl Plans {
    /// The plan of the method at `path`, if it has a descriptor and its route caches.
    pub fn get(&self, path: &str) -> Option<&MethodPlan> {
        self.by_path.get(path)
    }

    /// Every plan, by path, in path order.
    pub fn sorted(&self) -> Vec<(&String, &MethodPlan)> {
        let mut all: Vec<_> = self.by_path.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Plans every method in `schema` whose route in `router` caches.
    pub fn new(router: &Router, schema: &Schema) -> Self {
        let mut plans = Self::default();
        for route in router.routes() {
            let Some(rule) = &route.cache else { continue };
            for (path, method) in schema.methods_for(route.backend.name()) {
                // Only the methods this route serves: the first route matching a path takes it.
                if !router
                    .route(path)
                    .is_some_and(|first| std::ptr::eq(first, route))
                {
                    continue;
                }
                let kind = MethodKind::of(method);
                let plan = if kind != MethodKind::Unary {
                    MethodPlan {
                        kind,
                        rule: None,
                        key: None,
                    }
                } else {
                    let own = if rule.config.from_proto {
                        let proto = ProtoPolicy::of(method);
                        if !proto.caches() {
                            None
                        } else {
                            match merged(&rule.config, &proto) {
                                Ok(config) => Some(Arc::new(CacheRule::new(
                                    config,
                                    rule.storage.private_metadata.clone(),
                                ))),
                                Err(reason) => {
                                    plans.problems.push((path.clone(), reason));
                                    None
                                }
                            }
                        }
                    } else {
                        Some(rule.clone())
                    };
                    let key = own
                        .as_ref()
                        .filter(|r| r.config.key.decode())
                        .and_then(|r| {
                            let rules = &r.config.key;
                            match CanonicalKey::new(
                                &method.input(),
                                &rules.key_fields,
                                &rules.ignore_fields,
                                rules.keep_unknown_fields,
                            ) {
                                Ok(key) => Some(Arc::new(key)),
                                Err(reason) => {
                                    // Keyed by the request bytes instead: every field counts, so no answer is shared
                                    // wrongly; only the hit ratio suffers.
                                    plans.problems.push((
                                        path.clone(),
                                        format!("{reason}; keyed by the request bytes"),
                                    ));
                                    None
                                }
                            }
                        });
                    MethodPlan {
                        kind,
                        rule: own,
                        key,
                    }
                };
                plans.by_path.insert(path.clone(), plan);
            }
        }
        plans
    }
}
