//! Collecting every config mistake with its field path, while parsing the values that can be wrong.

use std::net::SocketAddr;
use std::time::Duration;

use super::FieldError;
use super::raw::{Scalar, Unknown};
use super::units::{parse_duration, parse_size};

/// Collects errors while building the validated config.
#[derive(Debug, Default)]
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn unknown(&mut self, path: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.keys() {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            self.add(
                at,
                format!("unknown field (expected one of: {})", known.join(", ")),
            );
        }
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&Scalar>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(Scalar::Text(text)) => parse_duration(text).unwrap_or_else(|e| {
                self.add(path, e);
                default
            }),
            Some(Scalar::Number(n)) => {
                self.add(
                    path,
                    format!("`{n}` has no unit; write e.g. `{n}ms` or `{n}s`"),
                );
                default
            }
        }
    }

    /// Like [`Errors::duration`], and zero is an error too.
    pub(super) fn positive_duration(
        &mut self,
        path: &str,
        value: Option<&Scalar>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path, value, default);
        if d.is_zero() && value.is_some() {
            self.add(path, "must be greater than 0");
        }
        d
    }

    pub(super) fn size(&mut self, path: &str, value: Option<&Scalar>, default: u64) -> u64 {
        match value {
            None => default,
            Some(Scalar::Number(n)) => *n,
            Some(Scalar::Text(text)) => parse_size(text).unwrap_or_else(|e| {
                self.add(path, e);
                default
            }),
        }
    }

    pub(super) fn addr(&mut self, path: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let text = value.unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.add(
                path,
                format!(
                    "`{text}` is not an address; write `host:port` with an IP, e.g. `0.0.0.0:50051`"
                ),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    /// A path to a file that must exist and be readable (certificates, keys).
    pub(super) fn file(
        &mut self,
        path: &str,
        value: Option<String>,
        required: bool,
    ) -> Option<std::path::PathBuf> {
        match value.filter(|v| !v.is_empty()) {
            None => {
                if required {
                    self.add(path, "required: the path of a PEM file");
                }
                None
            }
            Some(file) => {
                if let Err(err) = std::fs::File::open(&file) {
                    self.add(path, format!("cannot read `{file}`: {err}"));
                }
                Some(std::path::PathBuf::from(file))
            }
        }
    }

    /// Metadata names (lowercased), each valid and listed once.
    pub(super) fn metadata_names(
        &mut self,
        path: &str,
        names: Vec<String>,
    ) -> Vec<http::HeaderName> {
        let mut out = Vec::with_capacity(names.len());
        for (j, name) in names.into_iter().enumerate() {
            match self.metadata_name(&format!("{path}[{j}]"), &name) {
                Some(header) if out.contains(&header) => {
                    self.add(format!("{path}[{j}]"), format!("`{name}` is listed twice"));
                }
                Some(header) => out.push(header),
                None => {}
            }
        }
        out
    }

    /// A metadata name, case-insensitively (stored lowercase, as HTTP/2 sends it).
    pub(super) fn metadata_name(&mut self, path: &str, name: &str) -> Option<http::HeaderName> {
        let header = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .ok()
            .filter(|h| !h.as_str().starts_with(':'));
        if header.is_none() {
            self.add(path, format!("`{name}` is not a valid metadata name"));
        }
        header
    }
}
