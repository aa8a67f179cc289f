//! `strata check`'s report on methods: which methods of which routes are unary, streaming or unknown, and the cache
//! policy each cached one gets — from the descriptor files and, when on, each backend's reflection (asked briefly:
//! a backend that is not up is reported, not an error).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Resolver};
use crate::config::{Config, Matcher, RouteCacheConfig, units};
use crate::proxy::plan::{MethodPlan, Plans, RouteView};
use crate::route::CacheRule;
use crate::schema::reflection;
use crate::schema::{MethodIndex, Schema, index_files};

/// How long `strata check` waits for all the backends' reflection together.
const ASK_WITHIN: Duration = Duration::from_secs(3);

/// The report on methods, and the errors in it (cache rules that do not fit a method's descriptor).
#[derive(Debug, Default)]
pub struct MethodsReport {
    /// What `strata check` prints: YAML comment lines.
    pub text: String,
    /// Each error, with the field path it concerns.
    pub errors: Vec<String>,
}

/// Describes the methods `config` routes, as far as descriptors tell.
pub async fn describe_methods(config: &Config) -> MethodsReport {
    let mut report = MethodsReport::default();
    let mut sources = Vec::new();
    let files = if config.descriptors.files.is_empty() {
        MethodIndex::default()
    } else {
        let index = index_files(&config.descriptors.files).unwrap_or_else(|err| {
            report.errors.push(format!("descriptors.files: {err}"));
            MethodIndex::default()
        });
        sources.push(format!("files: {} methods", index.len()));
        index
    };
    let mut reflected = HashMap::new();
    if config.descriptors.reflection {
        let asked = config.backends.iter().map(|(name, backend)| async move {
            let answer = match Backend::start(name, backend, &Resolver::System, None) {
                Err(err) => Err(err.to_string()),
                Ok(backend) => tokio::time::timeout(ASK_WITHIN, reflection::methods_of(backend))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {ASK_WITHIN:?}"))),
            };
            (name.clone(), answer)
        });
        for (name, answer) in futures::future::join_all(asked).await {
            match answer {
                Ok((version, index)) => {
                    sources.push(format!(
                        "{name}: {} methods by reflection {version}",
                        index.len()
                    ));
                    reflected.insert(name, index);
                }
                Err(err) => sources.push(format!("{name}: none by reflection ({err})")),
            }
        }
    }
    let schema = Schema { files, reflected };

    let rules: Vec<Option<Arc<CacheRule>>> = config
        .routes
        .iter()
        .map(|r| {
            r.cache
                .clone()
                .map(|c| Arc::new(CacheRule::new(c, config.cache.private_metadata.clone())))
        })
        .collect();
    let views: Vec<RouteView<'_>> = config
        .routes
        .iter()
        .zip(&rules)
        .map(|(r, rule)| RouteView {
            matcher: &r.matcher,
            backend: &r.backend,
            cache: rule.as_ref(),
        })
        .collect();
    let plans = Plans::new(&views, &schema);

    let text = &mut report.text;
    let _ = writeln!(
        text,
        "# methods, by cached route (descriptors: {})",
        if sources.is_empty() {
            "none".to_owned()
        } else {
            sources.join("; ")
        }
    );
    for (index, route) in config.routes.iter().enumerate() {
        let Some(cache) = &route.cache else { continue };
        let _ = writeln!(
            text,
            "# routes[{index}] {} -> {}",
            route.matcher, route.backend
        );
        let mine: Vec<(&String, &MethodPlan)> = plans
            .sorted()
            .into_iter()
            .filter(|(_, plan)| plan.route == index)
            .collect();
        let width = mine.iter().map(|(path, _)| path.len()).max().unwrap_or(0);
        for (path, plan) in &mine {
            let _ = writeln!(
                text,
                "#   {path:width$}  {:16}  {}",
                plan.kind.as_str(),
                what_happens(plan)
            );
            if let Some(problem) = plan.problem.as_ref().filter(|p| p.is_error) {
                report
                    .errors
                    .push(format!("routes[{index}].cache: {path}: {}", problem.reason));
            }
        }
        let fate = match &route.matcher {
            Matcher::Exact(_) if !mine.is_empty() => None,
            _ if cache.from_proto => {
                Some("carried through (from_proto caches only what a descriptor declares)")
            }
            Matcher::Exact(_) => Some("cached as unary, as the route names it"),
            _ => Some("read as unary, carried through as a stream if they stream"),
        };
        if let Some(fate) = fate {
            let what = match &route.matcher {
                Matcher::Exact(path) => format!("{path}: no descriptor"),
                _ => "methods without a descriptor".to_owned(),
            };
            let _ = writeln!(text, "#   {what}: {fate}");
        }
    }
    report
}

/// What happens to a method's calls, in words.
fn what_happens(plan: &MethodPlan) -> String {
    let Some(rule) = &plan.rule else {
        return match &plan.problem {
            Some(problem) => format!("carried through: {}", problem.reason),
            None if plan.kind == crate::schema::MethodKind::Unary => {
                "carried through (declares no cache policy)".to_owned()
            }
            None => "carried through (streams)".to_owned(),
        };
    };
    let c: &RouteCacheConfig = &rule.config;
    let mut said = format!("cached: ttl {}", units::format_duration(c.ttl));
    for (name, value) in [
        ("stale_while_revalidate", c.stale_while_revalidate),
        ("stale_if_error", c.stale_if_error),
        ("negative_ttl", c.negative_ttl),
    ] {
        if !value.is_zero() {
            let _ = write!(said, ", {name} {}", units::format_duration(value));
        }
    }
    if !c.vary.is_empty() {
        let names: Vec<&str> = c.vary.iter().map(http::HeaderName::as_str).collect();
        let _ = write!(said, ", vary {}", names.join(" "));
    }
    let key = match (&plan.key, &plan.problem) {
        (Some(_), _) if !c.key.key_fields.is_empty() => {
            format!("key: only {}", c.key.key_fields.join(", "))
        }
        (Some(_), _) if !c.key.ignore_fields.is_empty() => {
            format!("key: all but {}", c.key.ignore_fields.join(", "))
        }
        (Some(_), _) => "key: canonical form".to_owned(),
        (None, Some(problem)) => format!("key: request bytes ({})", problem.reason),
        (None, None) => "key: request bytes".to_owned(),
    };
    format!("{said}; {key}")
}
