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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::testing;

    fn search() -> MessageDescriptor {
        testing::pool()
            .get_message_by_name("testing.v1.SearchRequest")
            .expect("the test request type")
    }

    /// One length-delimited field.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, u8::try_from(bytes.len()).expect("short")];
        out.extend_from_slice(bytes);
        out
    }

    fn label(key: &str, value: &str) -> Vec<u8> {
        field(
            4,
            &[field(1, key.as_bytes()), field(2, value.as_bytes())].concat(),
        )
    }

    fn form(key: &CanonicalKey, parts: &[Vec<u8>]) -> Vec<u8> {
        key.of_bytes(&parts.concat()).expect("decodes")
    }

    fn key(key_fields: &[&str], ignore_fields: &[&str], keep_unknown: bool) -> CanonicalKey {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        CanonicalKey::new(
            &search(),
            &owned(key_fields),
            &owned(ignore_fields),
            keep_unknown,
        )
        .expect("valid paths")
    }

    #[test]
    fn field_order_map_order_explicit_defaults_and_unknown_fields_do_not_change_the_form() {
        let all = key(&[], &[], false);
        let one = form(
            &all,
            &[
                field(1, b"q"),
                field(3, &field(1, b"t")),
                label("a", "1"),
                label("b", "2"),
            ],
        );
        let unknown = vec![0xf8, 0x06, 0x07]; // field 111, varint 7
        let other = form(
            &all,
            &[
                label("b", "2"),
                unknown.clone(),
                field(3, &field(1, b"t")),
                field(2, b""), // request_id written out with its default
                label("a", "1"),
                field(1, b"q"),
            ],
        );
        assert_eq!(one, other);
        let keeping = key(&[], &[], true);
        let with_unknown = form(&keeping, &[field(1, b"q"), unknown]);
        assert_ne!(with_unknown, form(&keeping, &[field(1, b"q")]));
    }

    #[test]
    fn what_changes_the_request_changes_the_form() {
        let all = key(&[], &[], false);
        let base = form(&all, &[field(1, b"q")]);
        assert_ne!(base, form(&all, &[field(1, b"r")]));
        // A field with presence set to its default is set.
        assert_ne!(base, form(&all, &[field(1, b"q"), vec![0x30, 0]]));
        // Repeated fields keep their order.
        assert_ne!(
            form(&all, &[field(5, b"a"), field(5, b"b")]),
            form(&all, &[field(5, b"b"), field(5, b"a")])
        );
        // The same bytes in another field are another request.
        assert_ne!(form(&all, &[field(1, b"x")]), form(&all, &[field(2, b"x")]));
    }

    #[test]
    fn ignored_fields_leave_the_form_and_key_fields_alone_make_it() {
        let ignoring = key(&[], &["request_id", "filter.trace"], false);
        assert_eq!(
            form(
                &ignoring,
                &[field(1, b"q"), field(2, b"r1"), field(3, &field(2, b"x"))]
            ),
            form(
                &ignoring,
                &[field(1, b"q"), field(2, b"r2"), field(3, &field(2, b"y"))]
            ),
        );
        assert_ne!(
            form(&ignoring, &[field(1, b"q"), field(3, &field(1, b"t1"))]),
            form(&ignoring, &[field(1, b"q"), field(3, &field(1, b"t2"))]),
        );
        let only_tenant = key(&["filter.tenant_id"], &[], false);
        assert_eq!(
            form(&only_tenant, &[field(1, b"q1"), field(3, &field(1, b"t"))]),
            form(
                &only_tenant,
                &[
                    field(1, b"q2"),
                    field(3, &[field(1, b"t"), field(2, b"z")].concat())
                ]
            ),
        );
        assert_ne!(
            form(&only_tenant, &[field(3, &field(1, b"t1"))]),
            form(&only_tenant, &[field(3, &field(1, b"t2"))]),
        );
    }

    #[test]
    fn paths_that_name_no_field_are_refused_with_the_reason() {
        let refused = |fields: &[&str]| {
            let owned: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
            CanonicalKey::new(&search(), &owned, &[], false).expect_err("refused")
        };
        assert!(refused(&["nope"]).contains("testing.v1.SearchRequest has no field `nope`"));
        assert!(refused(&["filter.nope"]).contains("testing.v1.Filter has no field `nope`"));
        assert!(refused(&["query.x"]).contains("is not a message"));
        assert!(refused(&["labels.x"]).contains("is not a message"));
    }

    #[test]
    fn bytes_that_are_not_the_type_are_refused() {
        let all = key(&[], &[], false);
        assert!(all.of_bytes(&[0x0a, 5, b'x']).is_err());
    }
}
