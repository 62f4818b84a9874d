//! Ingest against a real PostgreSQL (a throwaway cluster) and, for the
//! Pub/Sub intake, the real Pub/Sub emulator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]

mod audit;
mod bad_input;
mod grpc;
mod malformed;
mod pubsub;
mod relay;
mod relay_fairness;
mod support;
mod violations;
