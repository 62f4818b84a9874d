//! Ingest against a real PostgreSQL (a throwaway cluster) and, for the
//! Pub/Sub intake, the real Pub/Sub emulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod bad_input;
mod grpc;
mod malformed;
mod pubsub;
mod relay;
mod support;
mod violations;
