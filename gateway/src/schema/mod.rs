//! What the gateway knows of the methods it serves beyond their paths: their descriptors (from each backend's
//! reflection service and from descriptor-set files), so whether they stream, their request types (for canonical
//! keys) and the cache policy their proto declares; and which methods without a descriptor were seen to stream.

pub mod canonical;
mod live;
pub mod policy;
pub mod reflection;
mod streams_seen;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use prost::Message;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MethodDescriptor};

pub use live::{LiveSchema, Running, refresh_forever};
pub use streams_seen::StreamsSeen;

/// Whether a method's request and answer are one message or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one answer: the only kind the cache answers.
    Unary,
    /// One request, a stream of answers.
    ServerStreaming,
    /// A stream of requests, one answer.
    ClientStreaming,
    /// Streams both ways.
    Bidi,
}

impl MethodKind {
    /// The kind of `method`.
    pub fn of(method: &MethodDescriptor) -> Self {
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidi,
        }
    }

    /// Its name in `strata check` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ServerStreaming => "server streaming",
            Self::ClientStreaming => "client streaming",
            Self::Bidi => "bidi streaming",
        }
    }
}

/// The methods of one descriptor source, by path (`/pkg.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct MethodIndex {
    methods: BTreeMap<String, MethodDescriptor>,
}

impl MethodIndex {
    /// Every method of every service in `pool`.
    pub fn of_pool(pool: &DescriptorPool) -> Self {
        let methods = pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| {
                let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
                (path, method)
            })
            .collect();
        Self { methods }
    }

    /// The method at `path`.
    pub fn get(&self, path: &str) -> Option<&MethodDescriptor> {
        self.methods.get(path)
    }

    /// Every method, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &MethodDescriptor)> {
        self.methods.iter()
    }

    /// How many methods.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// Whether it has no method.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    /// Whether both describe the same methods the same way.
    fn same_as(&self, other: &Self) -> bool {
        self.methods.len() == other.methods.len()
            && self.methods.iter().zip(&other.methods).all(|(a, b)| {
                a.0 == b.0 && a.1.method_descriptor_proto() == b.1.method_descriptor_proto()
            })
    }
}

/// Everything the gateway knows of the methods: the descriptor-set files first (they win), then what each backend's
/// reflection said.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// From `descriptors.files`.
    pub files: MethodIndex,
    /// From reflection, by backend name.
    pub reflected: HashMap<String, MethodIndex>,
}

impl Schema {
    /// The descriptor of the method at `path`, which calls reach through backend `backend`.
    pub fn method(&self, path: &str, backend: &str) -> Option<&MethodDescriptor> {
        self.files
            .get(path)
            .or_else(|| self.reflected.get(backend)?.get(path))
    }

    /// Every method calls reach through `backend` may have a descriptor for, by path.
    pub fn methods_for<'a>(
        &'a self,
        backend: &str,
    ) -> impl Iterator<Item = (&'a String, &'a MethodDescriptor)> {
        let reflected = self.reflected.get(backend);
        self.files.iter().chain(
            reflected
                .into_iter()
                .flat_map(|index| index.iter())
                .filter(|(path, _)| self.files.get(path).is_none()),
        )
    }
}

/// Why descriptors could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DescriptorError(String);

/// Strata's files that define the cache option: added to every pool that lacks them.
const OPTION_FILES: [&str; 2] = [
    "strata/cache/v1/options.proto",
    "google/protobuf/descriptor.proto",
];

/// A pool of `files` (each an encoded `FileDescriptorProto`) plus Strata's own `options.proto` (and what it imports)
/// where they lack it, so the cache option reads as an extension whether or not the backend's files import it.
///
/// The files stay encoded until the pool decodes them: decoded to `prost_types` first, the options would lose their
/// extensions (the cache option among them).
pub fn pool_of(files: Vec<Vec<u8>>) -> Result<DescriptorPool, DescriptorError> {
    let theirs = files.len();
    let ours = split_set(strata_proto::FILE_DESCRIPTOR_SET)?;
    let mut named = Vec::with_capacity(theirs + OPTION_FILES.len());
    for (i, file) in files.into_iter().chain(ours).enumerate() {
        let name = FileDescriptorProto::decode(file.as_slice())
            .map_err(|e| DescriptorError(format!("an undecodable file descriptor: {e}")))?
            .name()
            .to_owned();
        let wanted = i < theirs || OPTION_FILES.contains(&name.as_str());
        if wanted && !named.iter().any(|(n, _): &(String, Vec<u8>)| *n == name) {
            named.push((name, file));
        }
    }
    let mut set = Vec::new();
    for (_, file) in named {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut set);
        prost::encoding::encode_varint(file.len() as u64, &mut set);
        set.extend_from_slice(&file);
    }
    DescriptorPool::decode(set.as_slice()).map_err(|e| DescriptorError(e.to_string()))
}

/// The encoded files of an encoded `FileDescriptorSet`, as they are.
pub fn split_set(mut set: &[u8]) -> Result<Vec<Vec<u8>>, DescriptorError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let broken = |e: prost::DecodeError| DescriptorError(format!("not a FileDescriptorSet: {e}"));
    let mut files = Vec::new();
    while !set.is_empty() {
        let (number, wire_type) = decode_key(&mut set).map_err(broken)?;
        if number == 1 && wire_type == WireType::LengthDelimited {
            let len =
                usize::try_from(decode_varint(&mut set).map_err(broken)?).unwrap_or(usize::MAX);
            if len > set.len() {
                return Err(DescriptorError("not a FileDescriptorSet: truncated".into()));
            }
            files.push(set[..len].to_vec());
            set = &set[len..];
        } else {
            skip_field(wire_type, number, &mut set, DecodeContext::default()).map_err(broken)?;
        }
    }
    Ok(files)
}

/// The methods described by the descriptor-set files at `paths`.
pub fn index_files(paths: &[impl AsRef<Path>]) -> Result<MethodIndex, DescriptorError> {
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|e| DescriptorError(format!("{}: {e}", path.display())))?;
        let set =
            split_set(&bytes).map_err(|e| DescriptorError(format!("{}: {e}", path.display())))?;
        files.extend(set);
    }
    Ok(MethodIndex::of_pool(&pool_of(files)?))
}

#[cfg(test)]
pub(crate) mod testing {
    //! The integration tests' `testing.v1` descriptors, for unit tests.

    use prost_reflect::DescriptorPool;

    /// The test service's encoded descriptor set (imports included).
    pub const TESTING_V1: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/testing_v1.bin"));

    /// The test service's descriptors.
    pub fn pool() -> DescriptorPool {
        super::pool_of(super::split_set(TESTING_V1).expect("a set")).expect("a pool")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_every_method_with_its_kind() {
        let index = MethodIndex::of_pool(&testing::pool());
        let kind = |path: &str| index.get(path).map(MethodKind::of);
        assert_eq!(kind("/testing.v1.Lookup/Get"), Some(MethodKind::Unary));
        assert_eq!(
            kind("/testing.v1.Lookup/Watch"),
            Some(MethodKind::ServerStreaming)
        );
        assert_eq!(
            kind("/testing.v1.Lookup/Collect"),
            Some(MethodKind::ClientStreaming)
        );
        assert_eq!(kind("/testing.v1.Lookup/Chat"), Some(MethodKind::Bidi));
        assert_eq!(kind("/testing.v1.Lookup/Nope"), None);
    }

    #[test]
    fn files_win_over_reflection() {
        let pool = testing::pool();
        let mut schema = Schema {
            files: MethodIndex::default(),
            reflected: HashMap::from([("lookup".to_owned(), MethodIndex::of_pool(&pool))]),
        };
        assert!(schema.method("/testing.v1.Lookup/Get", "lookup").is_some());
        assert!(schema.method("/testing.v1.Lookup/Get", "other").is_none());
        schema.files = MethodIndex::of_pool(&pool);
        assert!(schema.method("/testing.v1.Lookup/Get", "other").is_some());
        assert_eq!(schema.methods_for("lookup").count(), schema.files.len());
    }
}
