//! Request messages and metadata of each call: built from JSON through the method's descriptor (rendered as ghz's
//! templates, with the key of `x-strata.keys` put in), or taken from a serialized message (`binary-file`).

use std::collections::BTreeMap;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use serde_json::Value;
use tonic::metadata::{
    AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, MetadataMap,
};

use super::plan::{CallSpec, Payload};
use super::template::{CallFacts, RequestFacts, Templating, Text};

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

impl Kind {
    /// Whether the client sends a stream.
    pub fn client_streams(self) -> bool {
        matches!(self, Self::ClientStreaming | Self::Bidi)
    }
}

/// What varies from one request to the next.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    /// The request's number in the run (0-based).
    pub number: u64,
    /// Its key, if the run has a key space.
    pub key: Option<&'a str>,
    /// The sending worker, as ghz names it (`g0c7`).
    pub worker_id: &'a str,
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
    facts: CallFacts,
    input: MessageDescriptor,
    messages: Messages,
    metadata: Vec<Vec<(Name, Text)>>,
    placeholder: Option<String>,
}

/// Where the messages come from.
#[derive(Debug)]
enum Messages {
    /// JSON items: a unary call uses item `number mod len`, a client stream sends them in order.
    Items(Vec<Item>),
    /// One JSON text that becomes an object or an array only once rendered.
    Whole(Text),
}

/// A message the same for every request, or a text to render and encode per request.
#[derive(Debug)]
enum Item {
    Fixed(Bytes),
    Rendered(Text),
}

/// A metadata name: text (`x-tenant`) or binary (`trace-bin`, its value given in base64 as ghz takes it).
#[derive(Debug, Clone)]
enum Name {
    Ascii(AsciiMetadataKey),
    Binary(BinaryMetadataKey),
}

impl CallTemplate {
    /// Builds the call's messages and metadata; `placeholder` is the key's placeholder, if keys are used. Every
    /// template is parsed and tried once here, so a bad one stops the run before it starts.
    pub fn new(
        spec: &CallSpec,
        method: MethodDescriptor,
        placeholder: Option<&str>,
        templating: Templating,
    ) -> anyhow::Result<Self> {
        let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        };
        let at = |what: &str| format!("{}: {what}", spec.method);
        let messages = match &spec.payload {
            Payload::Binary(bytes) => Messages::Items(
                decode_binary(bytes, &method)
                    .with_context(|| at("binary data"))?
                    .into_iter()
                    .map(Item::Fixed)
                    .collect(),
            ),
            Payload::Json(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(items)) if items.is_empty() => {
                    anyhow::bail!(
                        "{}: data is an empty array (give at least one message)",
                        spec.method
                    )
                }
                Ok(Value::Array(items)) => {
                    let mut built = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let text = Text::new(&item.to_string(), templating)
                            .map_err(anyhow::Error::msg)
                            .with_context(|| at(&format!("data[{i}]")))?;
                        built.push(
                            Item::new(text, placeholder, &method)
                                .with_context(|| at(&format!("data[{i}]")))?,
                        );
                    }
                    Messages::Items(built)
                }
                Ok(_) => {
                    let text = Text::new(text, templating)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| at("data"))?;
                    Messages::Items(vec![
                        Item::new(text, placeholder, &method).with_context(|| at("data"))?,
                    ])
                }
                // Not JSON until rendered (a data file such as `{"n": {{.RequestNumber}}}`).
                Err(_) => Messages::Whole(
                    Text::new(text, templating)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| at("data"))?,
                ),
            },
        };
        let mut metadata = Vec::with_capacity(spec.metadata.len());
        for (i, entry) in spec.metadata.iter().enumerate() {
            metadata.push(metadata_entry(entry, templating).with_context(|| {
                at(&if spec.metadata.len() > 1 {
                    format!("metadata[{i}]")
                } else {
                    "metadata".to_owned()
                })
            })?);
        }
        let path = format!("/{}", spec.method)
            .parse()
            .with_context(|| format!("{}: not a valid path", spec.method))?;
        let call = Self {
            path,
            name: spec.method.clone(),
            kind,
            weight: spec.weight,
            facts: CallFacts::of(&method),
            input: method.input(),
            messages,
            metadata,
            placeholder: placeholder.map(str::to_owned),
        };
        // One trial request: what cannot be built now would fail every request.
        let trial = Fill {
            number: 0,
            key: Some("0"),
            worker_id: "g0c0",
        };
        call.messages(trial)
            .map_err(anyhow::Error::msg)
            .with_context(|| at("data"))?;
        call.metadata(trial)
            .map_err(anyhow::Error::msg)
            .with_context(|| at("metadata"))?;
        Ok(call)
    }

    /// How many messages one request sends (a client stream sends every item, once, unless told a count).
    pub fn items(&self) -> usize {
        match &self.messages {
            Messages::Items(items) => items.len(),
            Messages::Whole(_) => 1,
        }
    }

    /// The messages of one request: for a single-request call, data item `number mod len`; for a client stream,
    /// every item in order.
    pub fn messages(&self, fill: Fill<'_>) -> Result<Vec<Bytes>, String> {
        let all = match &self.messages {
            Messages::Items(items) if !self.kind.client_streams() => {
                let index = usize::try_from(fill.number % items.len().max(1) as u64).unwrap_or(0);
                return Ok(vec![self.item(&items[index], fill)?]);
            }
            Messages::Items(items) => items
                .iter()
                .map(|item| self.item(item, fill))
                .collect::<Result<Vec<_>, _>>()?,
            Messages::Whole(text) => self.whole(text, fill)?,
        };
        if self.kind.client_streams() || all.is_empty() {
            return Ok(all);
        }
        let index = usize::try_from(fill.number % all.len() as u64).unwrap_or(0);
        Ok(vec![all[index].clone()])
    }

    /// Message `i` of a client stream, rendered now (`stream-dynamic-messages`): items are used in turn.
    pub fn stream_message(&self, i: usize, fill: Fill<'_>) -> Result<Bytes, String> {
        match &self.messages {
            Messages::Items(items) => self.item(&items[i % items.len().max(1)], fill),
            Messages::Whole(text) => {
                let all = self.whole(text, fill)?;
                all.get(i % all.len().max(1))
                    .cloned()
                    .ok_or_else(|| "the data renders to no message".to_owned())
            }
        }
    }

    /// The metadata of one request: entry `number mod len` of a metadata array.
    pub fn metadata(&self, fill: Fill<'_>) -> Result<MetadataMap, String> {
        let Some(entry) = self
            .metadata
            .get(usize::try_from(fill.number % self.metadata.len().max(1) as u64).unwrap_or(0))
        else {
            return Ok(MetadataMap::new());
        };
        let mut map = MetadataMap::with_capacity(entry.len());
        for (name, value) in entry {
            let value = self.render(value, fill)?;
            match name {
                Name::Ascii(key) => {
                    let value = AsciiMetadataValue::try_from(value.as_str())
                        .map_err(|_| format!("metadata {key}: {value:?} is not a valid value"))?;
                    map.insert(key.clone(), value);
                }
                Name::Binary(key) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(value.trim())
                        .map_err(|e| format!("metadata {key}: not base64 ({e})"))?;
                    map.insert_bin(key.clone(), BinaryMetadataValue::from_bytes(&bytes));
                }
            }
        }
        Ok(map)
    }

    fn render(&self, text: &Text, fill: Fill<'_>) -> Result<String, String> {
        let request = RequestFacts {
            worker_id: fill.worker_id,
            number: fill.number,
            key: fill.key,
        };
        let rendered = text.render(&self.facts, request)?;
        Ok(match (&self.placeholder, fill.key) {
            (Some(placeholder), Some(key)) => rendered.replace(placeholder.as_str(), key),
            _ => rendered,
        })
    }

    fn item(&self, item: &Item, fill: Fill<'_>) -> Result<Bytes, String> {
        match item {
            Item::Fixed(bytes) => Ok(bytes.clone()),
            Item::Rendered(text) => {
                let json: Value = serde_json::from_str(&self.render(text, fill)?)
                    .map_err(|e| format!("the rendered data is not JSON: {e}"))?;
                encode(&self.input, json)
            }
        }
    }

    fn whole(&self, text: &Text, fill: Fill<'_>) -> Result<Vec<Bytes>, String> {
        match serde_json::from_str(&self.render(text, fill)?) {
            Ok(Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .map(|item| encode(&self.input, item))
                .collect(),
            Ok(object @ Value::Object(_)) => Ok(vec![encode(&self.input, object)?]),
            Ok(_) => Err("the rendered data is neither an object nor a non-empty array".to_owned()),
            Err(e) => Err(format!("the rendered data is not JSON: {e}")),
        }
    }
}

impl Item {
    /// A data item: encoded once when nothing in it varies, otherwise kept as a template.
    fn new(
        text: Text,
        placeholder: Option<&str>,
        method: &MethodDescriptor,
    ) -> anyhow::Result<Self> {
        match text {
            Text::Plain(source) if !placeholder.is_some_and(|p| source.contains(p)) => {
                let json: Value = serde_json::from_str(&source)?;
                Ok(Self::Fixed(
                    encode(&method.input(), json).map_err(anyhow::Error::msg)?,
                ))
            }
            other => Ok(Self::Rendered(other)),
        }
    }
}

/// A request message from its JSON: an object, checked against the input type, then encoded.
fn encode(input: &MessageDescriptor, json: Value) -> Result<Bytes, String> {
    if !json.is_object() {
        return Err(format!("data {json} is not an object"));
    }
    let message = DynamicMessage::deserialize(input.clone(), json)
        .map_err(|e| format!("data is not a {}: {e}", input.full_name()))?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// One metadata object: names checked (lowercased, as gRPC sends them), values parsed as templates.
fn metadata_entry(
    entry: &BTreeMap<String, String>,
    templating: Templating,
) -> anyhow::Result<Vec<(Name, Text)>> {
    let mut out = Vec::with_capacity(entry.len());
    for (name, value) in entry {
        let lower = name.to_ascii_lowercase();
        let name = if lower.ends_with("-bin") {
            Name::Binary(
                BinaryMetadataKey::from_bytes(lower.as_bytes())
                    .ok()
                    .with_context(|| format!("{name:?} is not a valid metadata name"))?,
            )
        } else {
            Name::Ascii(
                AsciiMetadataKey::from_bytes(lower.as_bytes())
                    .ok()
                    .with_context(|| format!("{name:?} is not a valid metadata name"))?,
            )
        };
        let text = Text::new(value, templating)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{name:?}"))?;
        out.push((name, text));
    }
    Ok(out)
}

/// Binary data as ghz reads it: several count-delimited messages (each after its varint length), or else one
/// serialized message. Each is checked against the method's input type.
fn decode_binary(bytes: &[u8], method: &MethodDescriptor) -> anyhow::Result<Vec<Bytes>> {
    let check = |message: &[u8]| {
        DynamicMessage::decode(method.input(), message)
            .map(|_| ())
            .with_context(|| format!("not a serialized {}", method.input().full_name()))
    };
    let mut delimited = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok(length) = prost::encoding::decode_varint(&mut rest) else {
            break;
        };
        let Some(length) = usize::try_from(length).ok().filter(|l| *l <= rest.len()) else {
            delimited.clear();
            break;
        };
        let (message, tail) = rest.split_at(length);
        if check(message).is_err() {
            delimited.clear();
            break;
        }
        delimited.push(Bytes::copy_from_slice(message));
        rest = tail;
    }
    if rest.is_empty() && !delimited.is_empty() {
        return Ok(delimited);
    }
    check(bytes)?;
    Ok(vec![Bytes::copy_from_slice(bytes)])
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    const ON: Templating = Templating {
        data: true,
        functions: true,
    };

    fn get_item() -> MethodDescriptor {
        let pool = DescriptorPool::decode(strata_proto::FILE_DESCRIPTOR_SET).unwrap();
        pool.get_service_by_name("demo.v1.Catalog")
            .unwrap()
            .methods()
            .find(|m| m.name() == "GetItem")
            .unwrap()
    }

    fn spec(data: &str) -> CallSpec {
        CallSpec {
            method: "demo.v1.Catalog/GetItem".into(),
            weight: 1,
            payload: Payload::Json(data.to_owned()),
            metadata: vec![[("x-tenant-id".to_owned(), "t-{{.Key}}".to_owned())].into()],
        }
    }

    fn fill(number: u64) -> Fill<'static> {
        Fill {
            number,
            key: Some("42"),
            worker_id: "g0c1",
        }
    }

    fn id(bytes: Bytes) -> String {
        strata_proto::demo::v1::GetItemRequest::decode(bytes)
            .unwrap()
            .id
    }

    #[test]
    fn fills_the_key_and_the_request_number() {
        let call = CallTemplate::new(
            &spec(r#"{"id": "item-{{.Key}}-{{.RequestNumber}}-{{.WorkerID}}"}"#),
            get_item(),
            Some("{{.Key}}"),
            ON,
        )
        .unwrap();
        assert_eq!(
            id(call.messages(fill(7)).unwrap().remove(0)),
            "item-42-7-g0c1"
        );
        assert_eq!(
            call.metadata(fill(7)).unwrap().get("x-tenant-id").unwrap(),
            "t-42"
        );
    }

    #[test]
    fn arrays_of_data_and_metadata_are_used_round_robin() {
        let mut s = spec(r#"[{"id": "a"}, {"id": "b"}]"#);
        s.metadata = vec![
            [("x-n".to_owned(), "one".to_owned())].into(),
            [("x-n".to_owned(), "two".to_owned())].into(),
            [("x-n".to_owned(), "three".to_owned())].into(),
        ];
        let call = CallTemplate::new(&s, get_item(), None, ON).unwrap();
        let ids: Vec<String> = (0..3)
            .map(|n| id(call.messages(fill(n)).unwrap().remove(0)))
            .collect();
        assert_eq!(ids, ["a", "b", "a"]);
        let md: Vec<String> = (0..4)
            .map(|n| {
                call.metadata(fill(n))
                    .unwrap()
                    .get("x-n")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(md, ["one", "two", "three", "one"]);
    }

    #[test]
    fn a_data_file_need_only_be_json_once_rendered() {
        let method = get_item()
            .parent_service()
            .methods()
            .find(|m| m.name() == "ListItems")
            .unwrap();
        let mut s = spec(r#"{"prefix": "p{{.RequestNumber}}", "limit": {{.RequestNumber}} }"#);
        s.metadata.clear();
        let call = CallTemplate::new(&s, method.clone(), None, ON).unwrap();
        let bytes = call.messages(fill(5)).unwrap().remove(0);
        let request = strata_proto::demo::v1::ListItemsRequest::decode(bytes).unwrap();
        assert_eq!((request.prefix.as_str(), request.limit), ("p5", 5));
        // gtmpl knows no `add` (a sprig function): refused at the start, naming the template.
        let unknown = CallTemplate::new(
            &spec(r#"{"id": "m{{ add 1 2 }}"}"#),
            get_item(),
            Some("{{.Key}}"),
            ON,
        );
        assert!(format!("{:#}", unknown.unwrap_err()).contains("add"));
    }

    #[test]
    fn binary_data_one_message_or_count_delimited() {
        let one = strata_proto::demo::v1::GetItemRequest {
            id: "bin-1".into(),
            ..Default::default()
        };
        let two = strata_proto::demo::v1::GetItemRequest {
            id: "bin-2".into(),
            ..Default::default()
        };
        let mut s = spec("{}");
        s.metadata.clear();
        s.payload = Payload::Binary(one.encode_to_vec());
        let call = CallTemplate::new(&s, get_item(), None, ON).unwrap();
        assert_eq!(id(call.messages(fill(3)).unwrap().remove(0)), "bin-1");
        let mut delimited = one.encode_length_delimited_to_vec();
        delimited.extend(two.encode_length_delimited_to_vec());
        s.payload = Payload::Binary(delimited);
        let call = CallTemplate::new(&s, get_item(), None, ON).unwrap();
        assert_eq!(id(call.messages(fill(1)).unwrap().remove(0)), "bin-2");
        s.payload = Payload::Binary(vec![0xff, 0xff, 0xff]);
        assert!(CallTemplate::new(&s, get_item(), None, ON).is_err());
    }

    #[test]
    fn an_empty_data_array_is_refused_not_indexed() {
        let mut s = spec("[]");
        s.metadata.clear();
        let err = CallTemplate::new(&s, get_item(), None, ON).unwrap_err();
        assert!(err.to_string().contains("empty array"), "{err}");
    }

    #[test]
    fn data_is_checked_against_the_schema() {
        let err = CallTemplate::new(&spec(r#"{"idd": "x"}"#), get_item(), Some("{{.Key}}"), ON)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("demo.v1.GetItemRequest"),
            "{err:#}"
        );
    }

    #[test]
    fn binary_metadata_is_base64_as_ghz_takes_it() {
        let mut s = spec(r#"{"id": "a"}"#);
        s.metadata = vec![[("Trace-Bin".to_owned(), "AAEC".to_owned())].into()];
        let call = CallTemplate::new(&s, get_item(), None, ON).unwrap();
        let md = call.metadata(fill(0)).unwrap();
        assert_eq!(
            md.get_bin("trace-bin")
                .unwrap()
                .to_bytes()
                .unwrap()
                .as_ref(),
            [0, 1, 2]
        );
        s.metadata = vec![[("trace-bin".to_owned(), "not base64!".to_owned())].into()];
        assert!(CallTemplate::new(&s, get_item(), None, ON).is_err());
    }
}
