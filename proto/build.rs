//! Compiles `ipa/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages plus tonic clients and servers. The encoded
//! descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "ipa/v1/common.proto",
    "ipa/v1/schedules.proto",
    "ipa/v1/admin.proto",
    "ipa/v1/central_manager.proto",
    "ipa/v1/pod_host.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ipa_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // PodHost has an rpc named `Connect`, which would clash with the
        // generated `Client::connect(url)` constructor; clients are built with
        // `Client::new(channel)` instead.
        .build_transport(false)
        // Every server method has a default body answering UNIMPLEMENTED, so
        // RPCs declared in the proto before the server implements them
        // (schedules, stats, cluster, delete; see docs/api.md) need no stub
        // handlers; streaming methods then return the generated `BoxStream`.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
