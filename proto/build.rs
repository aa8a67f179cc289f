//! Compiles the .proto sources with protox (no system protoc) and writes the descriptor set for reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();

    let files = [
        "strata/cache/v1/entry.proto",
        "strata/cache/v1/options.proto",
        "strata/admin/v1/admin.proto",
        "demo/v1/catalog.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
