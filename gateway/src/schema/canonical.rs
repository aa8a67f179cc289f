//! A request's canonical form: what the cache key is built from when the request type is known and the route has key
//! rules. Two encodings of the same request — fields in another order, map entries in another order, a proto3
//! default written out, unknown fields — give the same form; a selection (`key_fields`, `ignore_fields`) leaves out
//! the fields that do not change the answer.
//!
//! The form is not protobuf: it is an unambiguous byte string for the hash, each field as its number, then its
//! value with a length or count wherever one is needed, in field-number order, map entries by key.

use std::collections::BTreeMap;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// Which fields of a message type count, resolved to field numbers.
#[derive(Debug, Clone, PartialEq)]
enum Pick {
    /// The whole value.
    All,
    /// Only these fields (each with what counts of it).
    Only(BTreeMap<u32, Pick>),
    /// Every field, some partly (`Some`) or not at all (`None`).
    AllBut(BTreeMap<u32, Option<Pick>>),
}

/// How a method's requests are turned into their canonical form.
#[derive(Debug, Clone)]
pub struct CanonicalKey {
    input: MessageDescriptor,
    pick: Pick,
    keep_unknown_fields: bool,
}

/// Why a request could not be put in canonical form.
#[derive(Debug, thiserror::Error)]
#[error("the request is not a valid {type_name}: {reason}")]
pub struct NotDecodable {
    type_name: String,
    reason: String,
}

impl CanonicalKey {
    /// The canonical form of `input` requests with only `key_fields` counting (when given), or all but
    /// `ignore_fields`. A path that names no field of the type is an error that says which part is wrong.
    pub fn new(
        input: &MessageDescriptor,
        key_fields: &[String],
        ignore_fields: &[String],
        keep_unknown_fields: bool,
    ) -> Result<Self, String> {
        let pick = if !key_fields.is_empty() {
            let mut only = BTreeMap::new();
            for path in key_fields {
                add_only(&mut only, input, path, path)?;
            }
            Pick::Only(only)
        } else if !ignore_fields.is_empty() {
            let mut but = BTreeMap::new();
            for path in ignore_fields {
                add_ignored(&mut but, input, path, path)?;
            }
            Pick::AllBut(but)
        } else {
            Pick::All
        };
        Ok(Self {
            input: input.clone(),
            pick,
            keep_unknown_fields,
        })
    }

    /// The request type.
    pub fn input(&self) -> &MessageDescriptor {
        &self.input
    }

    /// The canonical form of an encoded request.
    pub fn of_bytes(&self, request: &[u8]) -> Result<Vec<u8>, NotDecodable> {
        let message =
            DynamicMessage::decode(self.input.clone(), request).map_err(|e| NotDecodable {
                type_name: self.input.full_name().to_owned(),
                reason: e.to_string(),
            })?;
        Ok(self.of_message(&message))
    }

    /// The canonical form of a decoded request.
    pub fn of_message(&self, message: &DynamicMessage) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        write_message(&mut out, message, &self.pick, self.keep_unknown_fields);
        out
    }
}

/// The field of `message` named by the first part of `path`, and the rest of the path.
fn first_field<'p>(
    message: &MessageDescriptor,
    path: &'p str,
    whole: &str,
) -> Result<(FieldDescriptor, Option<&'p str>), String> {
    let (name, rest) = match path.split_once('.') {
        Some((name, rest)) => (name, Some(rest)),
        None => (path, None),
    };
    let field = message
        .get_field_by_name(name)
        .ok_or_else(|| format!("`{whole}`: {} has no field `{name}`", message.full_name()))?;
    if rest.is_some() && !matches!(field.kind(), Kind::Message(_))
        || rest.is_some() && field.is_map()
    {
        return Err(format!(
            "`{whole}`: `{name}` of {} is not a message, so it has no fields to name",
            message.full_name()
        ));
    }
    Ok((field, rest))
}

fn message_of(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

fn add_only(
    only: &mut BTreeMap<u32, Pick>,
    message: &MessageDescriptor,
    path: &str,
    whole: &str,
) -> Result<(), String> {
    let (field, rest) = first_field(message, path, whole)?;
    let (Some(rest), Some(inner)) = (rest, message_of(&field)) else {
        only.insert(field.number(), Pick::All);
        return Ok(());
    };
    match only
        .entry(field.number())
        .or_insert_with(|| Pick::Only(BTreeMap::new()))
    {
        Pick::Only(nested) => add_only(nested, &inner, rest, whole),
        // The whole field counts already.
        _ => Ok(()),
    }
}

fn add_ignored(
    but: &mut BTreeMap<u32, Option<Pick>>,
    message: &MessageDescriptor,
    path: &str,
    whole: &str,
) -> Result<(), String> {
    let (field, rest) = first_field(message, path, whole)?;
    let (Some(rest), Some(inner)) = (rest, message_of(&field)) else {
        but.insert(field.number(), None);
        return Ok(());
    };
    let entry = but
        .entry(field.number())
        .or_insert_with(|| Some(Pick::AllBut(BTreeMap::new())));
    match entry {
        Some(Pick::AllBut(nested)) => add_ignored(nested, &inner, rest, whole),
        // The whole field is ignored already.
        _ => Ok(()),
    }
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn write_message(out: &mut Vec<u8>, message: &DynamicMessage, pick: &Pick, keep_unknown: bool) {
    // Set fields only: a proto3 field without presence holding its default is not set, however it was encoded.
    let mut fields: Vec<(FieldDescriptor, &Value)> = message.fields().collect();
    fields.sort_by_key(|(field, _)| field.number());
    for (field, value) in fields {
        let nested = match pick {
            Pick::All => Some(&Pick::All),
            Pick::Only(only) => only.get(&field.number()),
            Pick::AllBut(but) => match but.get(&field.number()) {
                None => Some(&Pick::All),
                Some(partly) => partly.as_ref(),
            },
        };
        let Some(nested) = nested else { continue };
        varint(out, u64::from(field.number()));
        write_value(out, value, nested, keep_unknown);
    }
    if keep_unknown {
        for unknown in message.unknown_fields() {
            // Field number 0 is never a real field: it marks what follows as an unknown field, as sent.
            varint(out, 0);
            let mut bytes = Vec::new();
            unknown.encode(&mut bytes);
            varint(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value, pick: &Pick, keep_unknown: bool) {
    match value {
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::I32(n) | Value::EnumNumber(n) => out.extend_from_slice(&n.to_le_bytes()),
        Value::I64(n) => out.extend_from_slice(&n.to_le_bytes()),
        Value::U32(n) => out.extend_from_slice(&n.to_le_bytes()),
        Value::U64(n) => out.extend_from_slice(&n.to_le_bytes()),
        Value::F32(n) => out.extend_from_slice(&n.to_bits().to_le_bytes()),
        Value::F64(n) => out.extend_from_slice(&n.to_bits().to_le_bytes()),
        Value::String(s) => {
            varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Message(m) => {
            let mut inner = Vec::new();
            write_message(&mut inner, m, pick, keep_unknown);
            varint(out, inner.len() as u64);
            out.extend_from_slice(&inner);
        }
        Value::List(items) => {
            varint(out, items.len() as u64);
            for item in items {
                write_value(out, item, pick, keep_unknown);
            }
        }
        Value::Map(entries) => {
            varint(out, entries.len() as u64);
            let mut sorted: Vec<_> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (key, value) in sorted {
                write_value(out, &Value::from(key.clone()), &Pick::All, keep_unknown);
                write_value(out, value, &Pick::All, keep_unknown);
            }
        }
    }
}
