//! Generates the control-stream code with the vendored protoc, so a fresh machine needs no
//! system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/portunus.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small per-stream buffers: see `codec::LeanCodec`.
        .codec_path("crate::codec::LeanCodec")
        .compile_with_config(config, &["proto/portunus.proto"], &["proto"])?;
    Ok(())
}
