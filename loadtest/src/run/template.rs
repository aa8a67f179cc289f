//! ghz's call templates: data and metadata are Go `text/template` text (rendered by gtmpl, a Rust implementation of
//! Go's template language), with ghz's call data (`.RequestNumber`, `.WorkerID`, `.UUID`, `.TimestampUnix`, …) and
//! functions (`newUUID`, `randomString`, `randomInt`).
//!
//! A text without actions is never rendered: it is used as is, so a plain config pays nothing per request.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use gtmpl::{Context, FuncError, Template as GoTemplate, Value};
use prost_reflect::MethodDescriptor;
use rand::Rng;

use super::report::rfc3339;

/// ghz's call data (and `.Key`), as a template names them.
const CALL_DATA: [&str; 15] = [
    ".WorkerID",
    ".RequestNumber",
    ".FullyQualifiedName",
    ".MethodName",
    ".ServiceName",
    ".InputName",
    ".OutputName",
    ".IsClientStreaming",
    ".IsServerStreaming",
    ".Timestamp",
    ".TimestampUnix",
    ".TimestampUnixMilli",
    ".TimestampUnixNano",
    ".UUID",
    ".Key",
];

/// Letters and digits `randomString` draws from (ghz's set).
const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Which parts of ghz's templating a run uses (`disable-template-data`, `disable-template-functions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Templating {
    /// Render data and metadata as templates at all.
    pub data: bool,
    /// Offer `newUUID`, `randomString` and `randomInt`.
    pub functions: bool,
}

/// What the call is, for the template data that does not change per request.
#[derive(Debug, Clone)]
pub struct CallFacts {
    fully_qualified_name: String,
    method_name: String,
    service_name: String,
    input_name: String,
    output_name: String,
    client_streaming: bool,
    server_streaming: bool,
}

impl CallFacts {
    /// The facts of `method`, named as ghz names them (`ServiceName` and `InputName` are short names).
    pub fn of(method: &MethodDescriptor) -> Self {
        Self {
            fully_qualified_name: method.full_name().to_owned(),
            method_name: method.name().to_owned(),
            service_name: method.parent_service().name().to_owned(),
            input_name: method.input().name().to_owned(),
            output_name: method.output().name().to_owned(),
            client_streaming: method.is_client_streaming(),
            server_streaming: method.is_server_streaming(),
        }
    }
}

/// What changes from one request to the next.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `g<group>c<index>`, as ghz names its workers.
    pub worker_id: &'a str,
    /// The request's number in the run (0-based).
    pub number: u64,
    /// Its key (`x-strata.keys`), offered as `.Key`.
    pub key: Option<&'a str>,
}

/// One text (a data item or a metadata value) ready to produce its per-request form.
#[derive(Debug)]
pub enum Text {
    /// No template actions (or templating is off): sent as written.
    Plain(String),
    /// Rendered per request.
    Template(CompiledTemplate),
}

/// A parsed template; parsing happens once, at the start of the run.
pub struct CompiledTemplate {
    source: String,
    template: GoTemplate,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompiledTemplate")
            .field(&self.source)
            .finish()
    }
}

impl Text {
    /// Parses `source` as a template when templating is on and it holds an action; a malformed template or an
    /// unknown function is an error naming it.
    pub fn new(source: &str, templating: Templating) -> Result<Self, String> {
        if !templating.data || !source.contains("{{") {
            return Ok(Self::Plain(source.to_owned()));
        }
        let mut template = GoTemplate::default();
        if templating.functions {
            template.add_func("newUUID", new_uuid);
            template.add_func("randomString", random_string);
            template.add_func("randomInt", random_int);
        }
        template
            .parse(source)
            .map_err(|e| format!("template {source:?}: {e}"))?;
        Ok(Self::Template(CompiledTemplate {
            source: source.to_owned(),
            template,
        }))
    }

    /// The text for one request.
    pub fn render(&self, call: &CallFacts, request: RequestFacts<'_>) -> Result<String, String> {
        match self {
            Self::Plain(text) => Ok(text.clone()),
            Self::Template(compiled) => compiled
                .template
                .render(&Context::from(call_data(call, request)))
                .map_err(|e| {
                    // gtmpl follows "no field X" with the whole call data; name the fields there are instead.
                    let e = e.to_string();
                    let e = e.split(" for {").next().unwrap_or_default();
                    format!(
                        "template {:?}: {e} (call data: {})",
                        compiled.source,
                        CALL_DATA.join(" ")
                    )
                }),
        }
    }
}

/// ghz's `CallData`, field for field, and `.Key` when the run draws keys.
fn call_data(call: &CallFacts, request: RequestFacts<'_>) -> Value {
    let now = SystemTime::now();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let nanos = i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX);
    let fields: [(&str, Value); 14] = [
        ("WorkerID", Value::from(request.worker_id.to_owned())),
        (
            "RequestNumber",
            Value::from(i64::try_from(request.number).unwrap_or(i64::MAX)),
        ),
        (
            "FullyQualifiedName",
            Value::from(call.fully_qualified_name.clone()),
        ),
        ("MethodName", Value::from(call.method_name.clone())),
        ("ServiceName", Value::from(call.service_name.clone())),
        ("InputName", Value::from(call.input_name.clone())),
        ("OutputName", Value::from(call.output_name.clone())),
        ("IsClientStreaming", Value::from(call.client_streaming)),
        ("IsServerStreaming", Value::from(call.server_streaming)),
        ("Timestamp", Value::from(rfc3339(now))),
        (
            "TimestampUnix",
            Value::from(i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)),
        ),
        ("TimestampUnixMilli", Value::from(nanos / 1_000_000)),
        ("TimestampUnixNano", Value::from(nanos)),
        ("UUID", Value::from(uuid_v4())),
    ];
    let mut data: HashMap<String, Value> =
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    if let Some(key) = request.key {
        data.insert("Key".to_owned(), Value::from(key.to_owned()));
    }
    Value::Object(data)
}

/// A random (version 4) UUID in its usual text form.
pub fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn new_uuid(_: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(uuid_v4()))
}

fn integer(args: &[Value], at: usize, function: &str) -> Result<i64, FuncError> {
    match args.get(at) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            FuncError::Generic(format!("{function}: argument {at} is not an integer"))
        }),
        _ => Err(FuncError::Generic(format!(
            "{function}: argument {at} is not an integer"
        ))),
    }
}

/// `randomString n`: n letters and digits; n ≤ 0 picks a length from 2 to 16 (as ghz does).
fn random_string(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() != 1 {
        return Err(FuncError::ExactlyXArgs("randomString".into(), 1));
    }
    let mut rng = rand::rng();
    let length = match integer(args, 0, "randomString")? {
        n if n <= 0 => rng.random_range(2..=16),
        n => usize::try_from(n.min(1 << 20)).unwrap_or(16),
    };
    let text: String = (0..length)
        .map(|_| char::from(CHARSET[rng.random_range(0..CHARSET.len())]))
        .collect();
    Ok(Value::from(text))
}

/// `randomInt min max`: an integer in [min, max); min below 0 counts as 0, max ≤ 0 as 1 (as ghz does).
fn random_int(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() != 2 {
        return Err(FuncError::ExactlyXArgs("randomInt".into(), 2));
    }
    let min = integer(args, 0, "randomInt")?.max(0);
    let max = integer(args, 1, "randomInt")?;
    let max = if max <= 0 { 1 } else { max };
    if min >= max {
        return Err(FuncError::Generic(format!(
            "randomInt: min {min} is not below max {max}"
        )));
    }
    Ok(Value::from(rand::rng().random_range(min..max)))
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    const ON: Templating = Templating {
        data: true,
        functions: true,
    };

    fn facts() -> CallFacts {
        let pool = DescriptorPool::decode(strata_proto::FILE_DESCRIPTOR_SET).unwrap();
        let method = pool
            .get_service_by_name("demo.v1.Catalog")
            .unwrap()
            .methods()
            .find(|m| m.name() == "ListItems")
            .unwrap();
        CallFacts::of(&method)
    }

    fn render(source: &str, templating: Templating) -> String {
        let request = RequestFacts {
            worker_id: "g0c3",
            number: 41,
            key: Some("k7"),
        };
        Text::new(source, templating)
            .unwrap()
            .render(&facts(), request)
            .unwrap()
    }

    #[test]
    fn every_call_data_field_is_filled() {
        let text = render(
            "{{.WorkerID}}|{{.RequestNumber}}|{{.FullyQualifiedName}}|{{.MethodName}}|{{.ServiceName}}|\
             {{.InputName}}|{{.OutputName}}|{{.IsClientStreaming}}|{{.IsServerStreaming}}|{{.Key}}",
            ON,
        );
        assert_eq!(
            text,
            "g0c3|41|demo.v1.Catalog.ListItems|ListItems|Catalog|ListItemsRequest|Item|false|true|k7"
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let stamps = render(
            "{{.TimestampUnix}} {{.TimestampUnixMilli}} {{.TimestampUnixNano}} {{.Timestamp}} {{.UUID}}",
            ON,
        );
        let parts: Vec<&str> = stamps.split(' ').collect();
        let secs: u64 = parts[0].parse().unwrap();
        assert!(secs.abs_diff(now.as_secs()) <= 2, "{stamps}");
        assert_eq!(parts[1].parse::<u64>().unwrap() / 1000, secs);
        assert_eq!(
            parts[2].parse::<u128>().unwrap() / 1_000_000_000,
            u128::from(secs)
        );
        assert!(parts[3].ends_with('Z') && parts[3].len() == 20, "{stamps}");
        assert_eq!(parts[4].len(), 36);
        assert_eq!(&parts[4][14..15], "4", "a version 4 UUID: {stamps}");
    }

    #[test]
    fn functions_draw_within_their_bounds() {
        for _ in 0..50 {
            let n: i64 = render("{{randomInt 3 7}}", ON).parse().unwrap();
            assert!((3..7).contains(&n));
            let s = render("{{randomString 12}}", ON);
            assert_eq!(s.len(), 12);
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
            let any = render("{{randomString 0}}", ON).len();
            assert!((2..=16).contains(&any));
        }
        assert_ne!(render("{{newUUID}}", ON), render("{{newUUID}}", ON));
    }

    #[test]
    fn switches_and_errors() {
        let off = Templating {
            data: false,
            functions: true,
        };
        assert_eq!(render("{{.RequestNumber}}", off), "{{.RequestNumber}}");
        let no_functions = Templating {
            data: true,
            functions: false,
        };
        let err = Text::new("{{newUUID}}", no_functions).unwrap_err();
        assert!(err.contains("newUUID"), "{err}");
        assert!(Text::new("{{.RequestNumber", ON).is_err());
        assert!(matches!(Text::new("plain", ON).unwrap(), Text::Plain(_)));
    }
}
