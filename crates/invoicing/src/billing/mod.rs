//! Bill runs: compose, store, refresh and finalize invoices.
//!
//! Exactly one invoice per (subscription, boundary): the bill run takes each
//! due subscription's row `FOR UPDATE SKIP LOCKED` (another replica skips it),
//! writes the invoices of every boundary up to now and advances
//! `billed_through` in the same transaction, and the unique constraint on
//! `(subscription_id, boundary_at)` refuses a second invoice whatever
//! happens. A crash rolls the whole subscription back; the next run redoes it.

pub mod compose;
pub mod fees;
pub mod finalize;
pub mod lines;
pub mod mapping;
pub mod model;
pub mod prefetch;
pub mod run;
pub mod store;

crate::feature_service!(
    /// The bill run's logic: composing, refreshing, finalizing and sealing
    /// invoices, and what it asks rating before a transaction.
    Billing,
    billing
);
