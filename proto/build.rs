//! Compiles the `.proto` contracts with the protoc shipped in `protoc-bin-vendored`, so no
//! system protoc is needed, and writes the descriptor set used by server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // prost-build reads PROTOC from the environment; build scripts run single-threaded.
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("visionfleet_descriptor.bin"))
        .compile_protos(
            &[
                PathBuf::from("visionfleet/v1/ingest.proto"),
                PathBuf::from("inference/grpc_predict_v2.proto"),
            ],
            &[PathBuf::from("."), include],
        )?;
    println!("cargo:rerun-if-changed=visionfleet");
    println!("cargo:rerun-if-changed=inference");
    Ok(())
}
