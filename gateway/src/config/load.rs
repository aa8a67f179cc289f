//! Reading the config: the YAML file, then `STRATA_` environment overrides, then validation.

use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};

use super::Config;
use super::raw::{RawConfig, TOP_LEVEL_KEYS};

/// One mistake in the config, at a field path such as `routes[0].cache.ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: the field path.
    pub path: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist or cannot be read.
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    /// The file is not YAML of the expected shape (the first such problem; fix it to see the others).
    #[error("config is malformed: {0}")]
    Malformed(String),
    /// The file parses, but fields have invalid values: every one is listed.
    #[error("config has {} error(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<FieldError>),
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads `path`, applies `STRATA_…` environment overrides (`__` between levels, e.g.
    /// `STRATA_CACHE__L2__URL`), and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if let Err(err) = std::fs::metadata(path) {
            return Err(ConfigError::Unreadable {
                path: path.display().to_string(),
                reason: err.to_string(),
            });
        }
        let figment = Figment::new().merge(Yaml::file_exact(path)).merge(
            Env::prefixed("STRATA_")
                // Only variables naming a config key: Kubernetes injects STRATA_SERVICE_HOST, STRATA_PORT…
                // for a Service named `strata`, and those must not be read as (unknown) config keys.
                .filter(|key| {
                    let first = key.as_str().split("__").next().unwrap_or_default();
                    TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
                })
                .split("__"),
        );
        Self::from_figment(figment)
    }

    /// Parses and validates YAML text (no environment overrides). For tests and embedding.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Yaml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError::Malformed(malformed(e)))?;
        super::validate::validate(raw).map_err(ConfigError::Invalid)
    }
}

/// Figment's errors, one per line, with the field path first.
fn malformed(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let kind = e.kind.to_string();
            if path.is_empty() {
                kind
            } else {
                format!("{path}: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
