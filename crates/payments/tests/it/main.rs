//! Payments against real PostgreSQL, with Stripe played by wiremock.
#![recursion_limit = "256"]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]

mod audit;
mod bus;
mod collection;
mod credit_notes;
mod dunning;
mod fixtures;
mod ledger;
mod logs;
mod reconciliation;
mod refund_balance;
mod refunds;
mod stripe_mocks;
mod support;
mod violations;
mod webhooks;
