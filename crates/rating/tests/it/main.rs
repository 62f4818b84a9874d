//! Rating against a real PostgreSQL (a throwaway cluster), through a real
//! gRPC server and client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]

mod catalog;
mod catalog_audit;
mod property;
mod rerate;
mod support;
mod thresholds;
mod usage;
mod usage_query;
mod violations;
