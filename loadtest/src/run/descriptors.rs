//! The schema of the calls: a `.proto` compiled here (protox, no protoc), a protoset file, or the server's
//! reflection service (v1, else v1alpha, as ghz and grpcurl fall back; the same conversation the gateway holds with
//! its backends) — then each call's method looked up in it.

use anyhow::Context;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use strata_gateway::schema::{pool_of, reflection};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::Channel;

use super::plan::Descriptors;

/// The descriptor pool of a proto or a protoset (read before anything connects); `None` when the plan asks the
/// server's reflection instead.
pub fn local(source: &Descriptors) -> anyhow::Result<Option<DescriptorPool>> {
    match source {
        Descriptors::Proto { file, import_paths } => {
            let mut includes = import_paths.clone();
            // The import paths first, so the file gets the name its importers use; then its own directory and the
            // working directory, which ghz adds too.
            let dir = file.parent().map(|d| d.to_path_buf()).unwrap_or_default();
            if !dir.as_os_str().is_empty() {
                includes.push(dir);
            }
            includes.push(".".into());
            let mut compiler = protox::Compiler::new(&includes)
                .with_context(|| format!("proto: import paths {includes:?}"))?;
            compiler.include_imports(true);
            compiler
                .open_file(file)
                .map_err(|e| anyhow::anyhow!("proto: {}: {e}", file.display()))?;
            Ok(Some(compiler.descriptor_pool()))
        }
        Descriptors::Protoset(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("protoset: cannot read {}", path.display()))?;
            let pool = DescriptorPool::decode(bytes.as_slice())
                .map_err(|e| anyhow::anyhow!("protoset: {}: {e}", path.display()))?;
            Ok(Some(pool))
        }
        Descriptors::Reflection(_) => Ok(None),
    }
}

/// The descriptor pool the server's reflection gives over `channel`, asked with `metadata`; and the protocol
/// version that gave it.
pub async fn reflect(
    metadata: &std::collections::BTreeMap<String, String>,
    channel: &Channel,
) -> anyhow::Result<(DescriptorPool, &'static str)> {
    let mut map = MetadataMap::new();
    for (name, value) in metadata {
        let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .with_context(|| format!("reflect-metadata: {name:?} is not a metadata name"))?;
        let value = AsciiMetadataValue::try_from(value.as_str())
            .with_context(|| format!("reflect-metadata: {name}: not a metadata value"))?;
        map.insert(key, value);
    }
    let reflected = reflection::ask_over(channel.clone(), map)
        .await
        .context("no proto or protoset given, and the server's reflection (v1, v1alpha) failed")?;
    let pool =
        pool_of(reflected.files).context("the server's reflected descriptors do not resolve")?;
    Ok((pool, reflected.version))
}

/// The descriptor of `method` (`package.Service/Method`).
pub fn method(pool: &DescriptorPool, method: &str) -> anyhow::Result<MethodDescriptor> {
    let (service, name) = method
        .split_once('/')
        .context("not package.Service/Method")?;
    let service = pool
        .get_service_by_name(service)
        .with_context(|| format!("{method}: service {service} is not in the schema"))?;
    service
        .methods()
        .find(|m| m.name() == name)
        .with_context(|| format!("{method}: {} has no method {name}", service.full_name()))
}
