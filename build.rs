//! Compiles `proto/` with protox (a pure-Rust protobuf compiler) and prost-build: no system
//! `protoc`. The generated types serve encoders (tests, load generator, remote read); the
//! write path decodes by hand in `src/ingest/`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/types.proto",
        "proto/remote.proto",
        "proto/write_v2.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
