//! Generates the BigQuery Storage Write client from `proto/bigquery_write.proto`
//! (the few messages of `google.cloud.bigquery.storage.v1.BigQueryWrite` this
//! service uses) with the vendored `protoc`.

use std::env;
use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .emit_rerun_if_changed(false)
        .compile_with_config(
            config,
            &[proto_root.join("bigquery_write.proto")],
            &[proto_root.clone(), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
