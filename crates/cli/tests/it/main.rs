//! The `tally` binary, run as a real process: each service's skeleton server
//! answers health checks and reflection, refuses calls without a valid key and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod dev;
mod serve;
