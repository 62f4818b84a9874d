//! Export integration tests: real PostgreSQL, the BigQuery emulator
//! (`bqemulator`, started by tally-testkit) and, for the crash test, real
//! `tally serve export` processes killed with SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backfill;
mod credits;
mod exactly_once;
mod landing;
mod service;
mod support;
mod throughput;
