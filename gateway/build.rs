//! Compiles the test-only proto (`tests/proto`), a service the gateway itself is never compiled against: the
//! integration tests use it to prove the proxy is generic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tests/proto");
    let fds = protox::compile(["testing/v1/lookup.proto"], ["tests/proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
