//! Revenue analytics: MRR, ARR, ARPA and MRR movements per currency, served
//! as `AnalyticsService`.
//!
//! # Where MRR comes from
//!
//! Finance never calls other services and plan prices are not on the bus,
//! so a subscription's recurring fee is what invoicing invoiced for it:
//! * [`fees`] — the recurring and proration-charge lines of finalized
//!   invoices (`invoice-events`) give each subscription's full-period fee
//!   per plan version and charge, from the start of the period (or
//!   prorated part) billed, normalised to a month by the length of the
//!   full period (whole months ÷ N; whole weeks × 52 ÷ 12; other days
//!   × 365 ÷ 12);
//! * [`subscriptions`] — the `subscription-events` consumer keeps each
//!   subscription's latest snapshot (highest version wins): when it starts,
//!   when its trial ends, its pause windows, when it ends;
//! * [`history`] — MRR at an instant and each customer's history of
//!   changes, computed at query time from both ([`store`] reads them), with
//!   the domain's `subscription_mrr`, `customer_mrr` and `mrr_movements`;
//! * [`revenue`] — revenue recognised over a range by product line, meter
//!   and plan, from the journal's revenue accounts;
//! * [`api`] — `GetMrr`, `ListMrrMovements`, `GetRetention` and `GetRevenue`.
//!
//! Nothing derived is stored: a late invoice, a reordered snapshot or a
//! replay changes the inputs, and every answer is recomputed from them, so
//! no stored history can disagree with its facts.
//!
//! # Limits
//!
//! * A new subscription's MRR appears when its first invoice with a
//!   recurring fee is finalized (in advance: at the period start plus the
//!   grace period; in arrears: when its first period ends), dated back to
//!   the start of the period billed. A query at "now" before that misses it.
//! * A fee billed in arrears is known one period late; until then the
//!   previous period's fee of the same charge carries forward. After a plan
//!   change, an arrears charge of the new version counts once invoiced.
//! * Discounts are not on invoices yet (no discount lines), so forever
//!   discounts do not reduce MRR here; credits applied are not discounts.
//! * Past due is not kept per instant: it counts like active, as the domain
//!   says. Pending subscriptions have no fees.
//! * Changes are not grouped by default (a zero window): an upgrade and a
//!   downgrade on the same day are two movements
//!   ([`api::AnalyticsApi::with_movement_window`] groups them).
//! * A voided invoice's fees are forgotten; an invoice re-issued for the
//!   same period replaces the fee.
//! * Every query reads all fee rows of the currency; fine for thousands of
//!   subscriptions, a cache or a materialised history is the next step.

pub mod api;
pub mod fees;
pub mod history;
pub mod model;
pub mod revenue;
pub mod store;
pub mod subscriptions;

#[cfg(test)]
mod history_tests;

pub use api::AnalyticsApi;
pub use subscriptions::SubscriptionEventsHandler;
