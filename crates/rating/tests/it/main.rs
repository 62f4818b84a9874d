//! Rating against a real PostgreSQL (a throwaway cluster), through a real
//! gRPC server and client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod catalog;
mod property;
mod rerate;
mod support;
mod thresholds;
mod usage;
mod usage_query;
mod violations;
