//! What each call of a run sends: its method, its data (`data`, `data-file` or `binary-file`), its metadata
//! (`metadata` or `metadata-file`, one object or several used round-robin), or the weighted `x-strata.calls`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::config::{RunConfig, XStrata};

/// What a call sends.
#[derive(Debug, Clone)]
pub enum Payload {
    /// JSON text (an object, or an array of them), rendered as a template per request.
    Json(String),
    /// A serialized message, or several count-delimited ones.
    Binary(Vec<u8>),
}

/// One call of the run, before its messages are built.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// `package.Service/Method`.
    pub method: String,
    /// Relative frequency.
    pub weight: u32,
    /// The request message(s).
    pub payload: Payload,
    /// Request metadata: one object, or several used round-robin.
    pub metadata: Vec<BTreeMap<String, String>>,
}

/// Whether request data is what ghz takes: an object, or a non-empty array of objects.
fn holds_messages(data: &Value) -> bool {
    data.is_object()
        || matches!(data, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object))
}

/// The request data: inline `data`, a `data-file` (a template, JSON once rendered), or a `binary-file`.
fn payload(config: &RunConfig, problems: &mut Vec<String>) -> Option<Payload> {
    let given = [
        config.data.is_some(),
        config.data_file.is_some(),
        config.binary_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        problems.push("data, data-file, binary-file: give one of them".to_owned());
        return None;
    }
    if let Some(data) = &config.data {
        if !holds_messages(data) {
            problems.push("data: must be an object or a non-empty array of objects".to_owned());
        }
        return Some(Payload::Json(data.to_string()));
    }
    if let Some(path) = &config.data_file {
        return match std::fs::read_to_string(path) {
            Ok(text) => Some(Payload::Json(text)),
            Err(e) => {
                problems.push(format!("data-file: cannot read {}: {e}", path.display()));
                None
            }
        };
    }
    let path = config.binary_file.as_ref()?;
    match std::fs::read(path) {
        Ok(bytes) => Some(Payload::Binary(bytes)),
        Err(e) => {
            problems.push(format!("binary-file: cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// The request metadata: `metadata` or a `metadata-file`, each an object of strings or an array of such objects.
fn metadata(config: &RunConfig, problems: &mut Vec<String>) -> Vec<BTreeMap<String, String>> {
    let (key, value) = match (&config.metadata, &config.metadata_file) {
        (Some(_), Some(_)) => {
            problems.push("metadata, metadata-file: give one, not both".to_owned());
            return Vec::new();
        }
        (Some(value), None) => ("metadata", value.clone()),
        (None, Some(path)) => {
            let read = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
            match read {
                Ok(value) => ("metadata-file", value),
                Err(e) => {
                    problems.push(format!("metadata-file: {}: {e}", path.display()));
                    return Vec::new();
                }
            }
        }
        (None, None) => return Vec::new(),
    };
    let entries = match value {
        Value::Array(entries) if !entries.is_empty() => entries,
        object @ Value::Object(_) => vec![object],
        _ => {
            problems.push(format!(
                "{key}: must be an object of strings or a non-empty array of them"
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        match serde_json::from_value::<BTreeMap<String, String>>(entry) {
            Ok(map) => out.push(map),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                return Vec::new();
            }
        }
    }
    out
}

/// The calls to make: `call` with the payload, or the weighted `x-strata.calls`; each method normalized.
pub fn resolve(config: &RunConfig, x: &XStrata, problems: &mut Vec<String>) -> Vec<CallSpec> {
    let payload = payload(config, problems);
    let metadata = metadata(config, problems);
    calls(config, x, payload, metadata, problems)
}

fn calls(
    config: &RunConfig,
    x: &XStrata,
    payload: Option<Payload>,
    metadata: Vec<BTreeMap<String, String>>,
    problems: &mut Vec<String>,
) -> Vec<CallSpec> {
    let empty = || Payload::Json("{}".to_owned());
    let mut calls = if x.calls.is_empty() {
        match &config.call {
            Some(call) => vec![CallSpec {
                method: call.clone(),
                weight: 1,
                payload: payload.unwrap_or_else(empty),
                metadata,
            }],
            None => {
                problems.push("call: required (package.Service/Method)".to_owned());
                Vec::new()
            }
        }
    } else {
        if config.call.is_some() || payload.is_some() {
            problems.push(
                "x-strata.calls: replaces call and data; leave those out (metadata applies to every call)"
                    .to_owned(),
            );
        }
        x.calls
            .iter()
            .map(|c| CallSpec {
                method: c.call.clone(),
                weight: c.weight.unwrap_or(1),
                payload: c
                    .data
                    .as_ref()
                    .map_or_else(empty, |d| Payload::Json(d.to_string())),
                metadata: with_own(&metadata, c.metadata.as_ref()),
            })
            .collect()
    };
    for (i, call) in calls.iter_mut().enumerate() {
        let at = if x.calls.is_empty() {
            "call".to_owned()
        } else {
            format!("x-strata.calls[{i}]")
        };
        match normalize_method(&call.method) {
            Some(method) => call.method = method,
            None => problems.push(format!(
                "{at}: `{}` is not package.Service/Method",
                call.method
            )),
        }
        if !x.calls.is_empty()
            && let Payload::Json(text) = &call.payload
        {
            let data: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if !holds_messages(&data) {
                problems.push(format!(
                    "{at}: data must be an object or a non-empty array of objects"
                ));
            }
        }
    }
    if !x.calls.is_empty() && x.calls.iter().all(|c| c.weight == Some(0)) {
        problems.push("x-strata.calls: every weight is 0".to_owned());
    }
    calls
}

/// The run's metadata entries with a call's own laid over each.
fn with_own(
    shared: &[BTreeMap<String, String>],
    own: Option<&BTreeMap<String, String>>,
) -> Vec<BTreeMap<String, String>> {
    let Some(own) = own else {
        return shared.to_vec();
    };
    if shared.is_empty() {
        return vec![own.clone()];
    }
    shared
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            entry.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            entry
        })
        .collect()
}

/// `package.Service/Method` or `package.Service.Method` as `package.Service/Method`.
pub fn normalize_method(call: &str) -> Option<String> {
    let call = call.trim_start_matches('/');
    let (service, method) = call.split_once('/').or_else(|| call.rsplit_once('.'))?;
    (!service.is_empty() && !method.is_empty() && !method.contains(['/', '.']))
        .then(|| format!("{service}/{method}"))
}
