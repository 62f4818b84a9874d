//! Finance integration tests on real PostgreSQL: invoice and payment events
//! as the bus delivers them, booked once, to the cent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]

mod audit;
mod batch_equivalence;
mod batches;
mod ledger;
mod mrr;
mod mrr_support;
mod retention;
mod revenue;
mod support;
mod throughput;
mod violations;
