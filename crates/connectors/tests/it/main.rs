//! Connectors integration tests on real PostgreSQL against a fake Orb
//! (wiremock), whose bodies Orb's official Python SDK checks: usage
//! forwarded, customers and subscriptions mirrored, invoices read, webhooks
//! received; and against a fake Stripe Billing account (bodies parsed with
//! async-stripe's types): read, and planned for an import.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// serde_json's `json!` of a whole Stripe subscription or invoice nests deeper than 128.
#![recursion_limit = "256"]

mod api;
mod billing_fake;
mod consumer;
mod forwarding;
mod invoices;
mod migration;
mod migration_bench;
mod migration_fake;
mod mirroring;
mod orb_sdk;
mod stripe_account;
mod stripe_billing;
mod stripe_objects;
mod support;
mod throughput;
mod webhooks;
