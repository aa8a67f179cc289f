//! Validating `descriptors` (where the gateway learns the backends' methods) and a cached route's key rules and
//! `from_proto`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::errors::Errors;
use super::raw::RawDescriptors;

/// Default of `descriptors.refresh`, shared with docs/CONFIG.md.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Where the gateway learns what the backends' methods are: their kinds, request types and cache options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DescriptorsConfig {
    /// Ask each backend's reflection service (`grpc.reflection.v1`, then `v1alpha`).
    pub reflection: bool,
    /// Serialized `FileDescriptorSet`s (`buf build -o`, `protoc --descriptor_set_out`); they win over reflection.
    pub files: Vec<PathBuf>,
    /// How often reflection is asked again.
    #[serde(serialize_with = "super::duration")]
    pub refresh: Duration,
}

impl Default for DescriptorsConfig {
    fn default() -> Self {
        Self {
            reflection: true,
            files: Vec::new(),
            refresh: DEFAULT_REFRESH,
        }
    }
}

pub(super) fn descriptors(e: &mut Errors, raw: RawDescriptors) -> DescriptorsConfig {
    e.unknown(
        "descriptors",
        &raw.unknown,
        &["reflection", "files", "refresh"],
    );
    let mut files = Vec::with_capacity(raw.files.len());
    for (i, file) in raw.files.into_iter().enumerate() {
        let at = format!("descriptors.files[{i}]");
        match std::fs::read(&file) {
            Err(err) => e.add(at, format!("cannot read `{file}`: {err}")),
            Ok(bytes) => {
                if let Err(err) = prost_reflect::DescriptorPool::decode(bytes.as_slice()) {
                    e.add(
                        at,
                        format!(
                            "`{file}` is not a serialized FileDescriptorSet with its imports: {err}"
                        ),
                    );
                }
            }
        }
        files.push(PathBuf::from(file));
    }
    DescriptorsConfig {
        reflection: raw.reflection.unwrap_or(true),
        files,
        refresh: e.positive_duration("descriptors.refresh", raw.refresh.as_ref(), DEFAULT_REFRESH),
    }
}

/// Which parts of a request make its cache key, on a cached route (a method's own cache option may add its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyRules {
    /// Only these fields (dotted paths, e.g. `filter.tenant_id`) count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_fields: Vec<String>,
    /// Every field but these counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore_fields: Vec<String>,
    /// Build the key from the decoded request even without `key_fields` or `ignore_fields`.
    pub canonical: bool,
    /// Unknown fields (not in the descriptor) count, as sent.
    pub keep_unknown_fields: bool,
}

impl KeyRules {
    /// Whether the key is built from the decoded request rather than its bytes.
    pub fn decode(&self) -> bool {
        self.canonical || !self.key_fields.is_empty() || !self.ignore_fields.is_empty()
    }
}

/// Validates the key rules of a route's `cache` block at `path`.
pub(super) fn key_rules(
    e: &mut Errors,
    path: &str,
    key_fields: Vec<String>,
    ignore_fields: Vec<String>,
    canonical: Option<bool>,
    keep_unknown_fields: Option<bool>,
) -> KeyRules {
    for (name, list) in [
        ("key_fields", &key_fields),
        ("ignore_fields", &ignore_fields),
    ] {
        for (i, field) in list.iter().enumerate() {
            if let Err(reason) = field_path_ok(field) {
                e.add(format!("{path}.{name}[{i}]"), reason);
            }
        }
    }
    if !key_fields.is_empty() && !ignore_fields.is_empty() {
        e.add(
            format!("{path}.ignore_fields"),
            "give either `key_fields` (only these count) or `ignore_fields` (all but these), not both",
        );
    }
    KeyRules {
        key_fields,
        ignore_fields,
        canonical: canonical.unwrap_or(false),
        keep_unknown_fields: keep_unknown_fields.unwrap_or(false),
    }
}

/// A field path: field names joined by dots (`id`, `filter.tenant_id`).
pub fn field_path_ok(path: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if path.split('.').all(name_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{path}` is not a field path (field names joined by dots, e.g. `filter.tenant_id`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_are_names_joined_by_dots() {
        for good in ["id", "filter.tenant_id", "_x.y2"] {
            assert!(field_path_ok(good).is_ok(), "{good}");
        }
        for bad in ["", "a..b", ".a", "a.", "1a", "a-b", "a[0]"] {
            assert!(field_path_ok(bad).is_err(), "{bad}");
        }
    }
}
