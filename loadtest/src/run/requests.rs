//! Request messages and metadata built from JSON through the method's descriptor, with the per-request values put
//! in: the key (`x-strata.keys.placeholder`, `{{.Key}}` by default) and ghz's `{{.RequestNumber}}`.

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, MethodDescriptor, Value as Field};
use serde_json::Value;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use super::plan::CallSpec;

/// ghz's template action for the request's number.
const REQUEST_NUMBER: &str = "{{.RequestNumber}}";

/// The gRPC shape of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One message each way.
    Unary,
    /// One request, a stream of answers.
    ServerStreaming,
    /// A stream of requests, one answer.
    ClientStreaming,
    /// Streams both ways.
    Bidi,
}

/// What varies from one request to the next.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    /// The request's number in the run (0-based).
    pub number: u64,
    /// Its key, if the run has a key space.
    pub key: Option<&'a str>,
}

/// One call of the run, ready to produce requests.
#[derive(Debug)]
pub struct CallTemplate {
    /// `/package.Service/Method`, as sent.
    pub path: http::uri::PathAndQuery,
    /// `package.Service/Method`, as reported.
    pub name: String,
    /// Its shape.
    pub kind: Kind,
    /// Relative frequency.
    pub weight: u32,
    messages: Vec<Template>,
    metadata: Vec<(AsciiMetadataKey, String)>,
    placeholder: Option<String>,
}

/// A message that is the same for every request, or one with text to fill in.
#[derive(Debug)]
enum Template {
    Fixed(Bytes),
    Filled(DynamicMessage),
}

impl CallTemplate {
    /// Builds the call's messages from its JSON `data`; `placeholder` is the key's placeholder, if keys are used.
    pub fn new(
        spec: &CallSpec,
        method: MethodDescriptor,
        placeholder: Option<&str>,
    ) -> anyhow::Result<Self> {
        let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        };
        let items = match &spec.data {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        let mut messages = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let text = item.to_string();
            check_actions(&text, placeholder)
                .with_context(|| format!("{}: data[{i}]", spec.method))?;
            let message = DynamicMessage::deserialize(method.input(), item).with_context(|| {
                format!(
                    "{}: data[{i}] is not a {}",
                    spec.method,
                    method.input().full_name()
                )
            })?;
            let varies =
                text.contains(REQUEST_NUMBER) || placeholder.is_some_and(|p| text.contains(p));
            messages.push(if varies {
                Template::Filled(message)
            } else {
                Template::Fixed(Bytes::from(message.encode_to_vec()))
            });
        }
        let mut metadata = Vec::with_capacity(spec.metadata.len());
        for (name, value) in &spec.metadata {
            let at = || format!("{}: metadata {name:?}", spec.method);
            check_actions(value, placeholder).with_context(at)?;
            let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .ok()
                .with_context(|| format!("{}: not a valid ASCII metadata name", at()))?;
            AsciiMetadataValue::try_from(value.as_str())
                .ok()
                .with_context(|| format!("{}: not a valid metadata value", at()))?;
            metadata.push((key, value.clone()));
        }
        let path = format!("/{}", spec.method)
            .parse()
            .with_context(|| format!("{}: not a valid path", spec.method))?;
        Ok(Self {
            path,
            name: spec.method.clone(),
            kind,
            weight: spec.weight,
            messages,
            metadata,
            placeholder: placeholder.map(str::to_owned),
        })
    }

    /// The messages of one request: for a single-request call, data item `number mod len`; for a client
    /// stream, every item in order.
    pub fn messages(&self, fill: Fill<'_>) -> Vec<Bytes> {
        match self.kind {
            Kind::Unary | Kind::ServerStreaming => {
                let index = usize::try_from(fill.number % self.messages.len() as u64).unwrap_or(0);
                vec![self.build(&self.messages[index], fill)]
            }
            Kind::ClientStreaming | Kind::Bidi => {
                self.messages.iter().map(|m| self.build(m, fill)).collect()
            }
        }
    }

    /// The metadata of one request.
    pub fn metadata(&self, fill: Fill<'_>) -> MetadataMap {
        let mut map = MetadataMap::with_capacity(self.metadata.len());
        for (key, value) in &self.metadata {
            let value = self.substitute(value, fill);
            // Checked when built; a key could make it invalid only by holding control characters.
            if let Ok(value) = AsciiMetadataValue::try_from(value.as_str()) {
                map.insert(key.clone(), value);
            }
        }
        map
    }

    fn build(&self, template: &Template, fill: Fill<'_>) -> Bytes {
        match template {
            Template::Fixed(bytes) => bytes.clone(),
            Template::Filled(message) => {
                let mut message = message.clone();
                self.fill_message(&mut message, fill);
                Bytes::from(message.encode_to_vec())
            }
        }
    }

    fn fill_message(&self, message: &mut DynamicMessage, fill: Fill<'_>) {
        for (_, value) in message.fields_mut() {
            self.fill_field(value, fill);
        }
    }

    fn fill_field(&self, value: &mut Field, fill: Fill<'_>) {
        match value {
            Field::String(text) if text.contains("{{") => *text = self.substitute(text, fill),
            Field::Message(message) => self.fill_message(message, fill),
            Field::List(items) => items
                .iter_mut()
                .for_each(|item| self.fill_field(item, fill)),
            Field::Map(entries) => entries
                .values_mut()
                .for_each(|item| self.fill_field(item, fill)),
            _ => {}
        }
    }

    fn substitute(&self, text: &str, fill: Fill<'_>) -> String {
        let mut text = text.replace(REQUEST_NUMBER, &fill.number.to_string());
        if let (Some(placeholder), Some(key)) = (&self.placeholder, fill.key) {
            text = text.replace(placeholder.as_str(), key);
        }
        text
    }
}

/// Rejects ghz template actions this tool does not fill in, rather than sending them literally.
fn check_actions(text: &str, placeholder: Option<&str>) -> anyhow::Result<()> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let action = &rest[open..];
        let known = [Some(REQUEST_NUMBER), placeholder]
            .into_iter()
            .flatten()
            .find(|a| action.starts_with(a));
        match known {
            Some(a) => rest = &action[a.len()..],
            None => {
                let end = action.find("}}").map_or(action.len(), |e| e + 2);
                anyhow::bail!(
                    "template action {} is not supported (supported: {REQUEST_NUMBER}{})",
                    &action[..end],
                    placeholder
                        .map(|p| format!(", {p} with x-strata.keys"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn get_item() -> MethodDescriptor {
        let pool = DescriptorPool::decode(strata_proto::FILE_DESCRIPTOR_SET).unwrap();
        pool.get_service_by_name("demo.v1.Catalog")
            .unwrap()
            .methods()
            .find(|m| m.name() == "GetItem")
            .unwrap()
    }

    fn spec(data: Value) -> CallSpec {
        CallSpec {
            method: "demo.v1.Catalog/GetItem".into(),
            weight: 1,
            data,
            metadata: [("x-tenant-id".to_owned(), "t-{{.Key}}".to_owned())].into(),
        }
    }

    #[test]
    fn fills_the_key_and_the_request_number() {
        let call = CallTemplate::new(
            &spec(serde_json::json!({"id": "item-{{.Key}}-{{.RequestNumber}}"})),
            get_item(),
            Some("{{.Key}}"),
        )
        .unwrap();
        let fill = Fill {
            number: 7,
            key: Some("42"),
        };
        let bytes = call.messages(fill).remove(0);
        let request = strata_proto::demo::v1::GetItemRequest::decode(bytes).unwrap();
        assert_eq!(request.id, "item-42-7");
        assert_eq!(call.metadata(fill).get("x-tenant-id").unwrap(), "t-42");
    }

    #[test]
    fn arrays_are_used_round_robin() {
        let call = CallTemplate::new(
            &spec(serde_json::json!([{"id": "a"}, {"id": "b"}])),
            get_item(),
            None,
        );
        // The metadata uses {{.Key}} without a key space: refused, not sent literally.
        let err = format!("{:#}", call.unwrap_err());
        assert!(err.contains("{{.Key}}"), "{err}");
        let mut s = spec(serde_json::json!([{"id": "a"}, {"id": "b"}]));
        s.metadata.clear();
        let call = CallTemplate::new(&s, get_item(), None).unwrap();
        let ids: Vec<String> = (0..3)
            .map(|n| {
                let bytes = call
                    .messages(Fill {
                        number: n,
                        key: None,
                    })
                    .remove(0);
                strata_proto::demo::v1::GetItemRequest::decode(bytes)
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(ids, ["a", "b", "a"]);
    }

    #[test]
    fn data_is_checked_against_the_schema() {
        let err = CallTemplate::new(
            &spec(serde_json::json!({"idd": "x"})),
            get_item(),
            Some("{{.Key}}"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("demo.v1.GetItemRequest"),
            "{err:#}"
        );
    }
}
