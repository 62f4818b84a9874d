//! Bus integration tests: the conformance suite against both backends, and
//! the outbox/inbox against real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod outbox;
mod restart;
mod support;
