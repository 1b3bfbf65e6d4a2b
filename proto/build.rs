//! Compiles proto/ with protox (pure Rust), so a fresh machine needs no protoc,
//! then generates tonic services and pbjson serde impls from the same
//! descriptor set, and the list of every RPC's path (`METHOD_PATHS`) that
//! the manager's authorization table is checked against, so a new RPC cannot
//! be forgotten there.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/shoal/v1/objects.proto",
        "proto/shoal/v1/raft.proto",
        "proto/shoal/v1/dispatcher.proto",
        "proto/shoal/v1/control.proto",
        "proto/shoal/v1/ca.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("shoal_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    std::fs::write(out.join("method_paths.rs"), method_paths(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".shoal.v1"])?;
    Ok(())
}

/// `pub const METHOD_PATHS: &[&str]` with the gRPC path of every RPC of every
/// service, as `/shoal.v1.Control/CreateService`.
fn method_paths(fds: &prost_types::FileDescriptorSet) -> String {
    let mut out =
        String::from("/// gRPC path of every RPC of every service, generated from proto/.\n");
    out.push_str("pub const METHOD_PATHS: &[&str] = &[\n");
    for file in &fds.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                out.push_str(&format!(
                    "    \"/{package}.{}/{}\",\n",
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    out.push_str("];\n");
    out
}
