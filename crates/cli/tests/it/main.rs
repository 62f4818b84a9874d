//! The `tally` binary, run as a real process: each service's skeleton server
//! answers health checks and reflection, refuses calls without a valid key and
//! stops cleanly on SIGTERM.
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]
// The e2e test's complete Stripe objects (used by admin::reconcile) are large `json!` literals.
#![recursion_limit = "256"]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod dev;
mod export;
mod readme;
mod serve;
mod status;
