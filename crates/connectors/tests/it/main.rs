//! Connectors integration tests on real PostgreSQL against a fake Orb
//! (wiremock), whose bodies Orb's official Python SDK checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod consumer;
mod forwarding;
mod orb_sdk;
mod support;
