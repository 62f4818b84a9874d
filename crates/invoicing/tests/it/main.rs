//! Invoicing against a real PostgreSQL (a throwaway cluster) with rating
//! running in-process on the same database and bus, through real gRPC
//! servers and clients, driven by a manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]

mod audit;
mod audit_cost;
mod billing;
mod billing_modes;
mod customers;
mod deferred_changes;
mod grace;
mod invoices;
mod negative_invoices;
mod payments;
mod portal;
mod quotes;
mod refund_balance;
mod scheduler;
mod stored_model;
mod stub_periods;
mod subscriptions;
mod support;
mod terms;
mod throughput;
mod upcoming;
mod violations;
