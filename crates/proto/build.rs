//! Generates the Rust code of every contract in `proto/` with the vendored
//! `protoc`, so building needs no system protobuf installation.

use std::env;
use std::error::Error;
use std::path::PathBuf;

/// Every contract file, relative to the `proto/` include root.
const PROTO_FILES: &[&str] = &[
    "tally/common/v1/common.proto",
    "tally/events/v1/events.proto",
    "tally/ingest/v1/ingest.proto",
    "tally/rating/v1/catalog.proto",
    "tally/rating/v1/rating.proto",
    "tally/invoicing/v1/customers.proto",
    "tally/invoicing/v1/terms.proto",
    "tally/invoicing/v1/subscriptions.proto",
    "tally/invoicing/v1/invoices.proto",
    "tally/invoicing/v1/credits.proto",
    "tally/invoicing/v1/quotes.proto",
    "tally/payments/v1/payments.proto",
    "tally/payments/v1/reconciliation.proto",
    "tally/clock/v1/clock.proto",
    "tally/audit/v1/audit.proto",
    "tally/finance/v1/finance.proto",
    "tally/connectors/v1/connectors.proto",
    "tally/connectors/v1/migration.proto",
    "tally/export/v1/export.proto",
    "tally/auth/v1/auth.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // `tonic_prost_build::Builder` has no `protoc_executable`; prost's `Config`
    // does, and avoids mutating the process environment (which is `unsafe`).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let protos: Vec<PathBuf> = PROTO_FILES
        .iter()
        .map(|file| proto_root.join(file))
        .collect();
    // The well-known types (timestamp, duration, field_mask) ship with the
    // vendored protoc.
    let includes = vec![proto_root.clone(), protoc_bin_vendored::include_path()?];

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Server traits get a default body answering UNIMPLEMENTED for every
        // method, so a service can be served before all its RPCs exist.
        .generate_default_stubs(true)
        .file_descriptor_set_path(out_dir.join("tally_descriptor.bin"))
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, &includes)?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
