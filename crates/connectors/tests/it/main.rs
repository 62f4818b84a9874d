//! Connectors integration tests on real PostgreSQL against a fake Orb
//! (wiremock), whose bodies Orb's official Python SDK checks: usage
//! forwarded, customers and subscriptions mirrored, invoices read, webhooks
//! received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod billing_fake;
mod consumer;
mod forwarding;
mod invoices;
mod mirroring;
mod orb_sdk;
mod support;
mod webhooks;
