//! Bus integration tests: the conformance suite against both backends, and
//! the outbox/inbox against real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]

mod batch;
mod conformance;
mod outbox;
mod restart;
mod support;
