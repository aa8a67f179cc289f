//! Compiles the test-only proto (`tests/proto`), a service the gateway itself is never compiled against: the
//! integration tests use it to prove the proxy is generic. Also records the git commit for `strata_build_info`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tests/proto");
    println!("cargo:rerun-if-changed=../proto/proto");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=STRATA_GIT_COMMIT={commit}");
    for git in ["../.git/HEAD", "../.git/refs/heads"] {
        if std::path::Path::new(git).exists() {
            println!("cargo:rerun-if-changed={git}");
        }
    }
    let mut compiler = protox::Compiler::new(["tests/proto", "../proto/proto"])?;
    compiler.include_imports(true);
    compiler.open_file("testing/v1/lookup.proto")?;
    let fds = compiler.file_descriptor_set();
    // The test service's descriptors, imports included: what its reflection serves, and a descriptor-set file.
    // Encoded by protox itself: `prost_types` would drop the methods' custom options (the cache option).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("testing_v1.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
