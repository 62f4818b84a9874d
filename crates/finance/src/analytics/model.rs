//! The facts analytics keeps: recurring fees learned from invoices and what
//! it keeps of each subscription's snapshot. The store reads and writes
//! these; [`super::fees`], [`super::subscriptions`] and [`super::history`]
//! compute with them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::finance::mrr::MrrInterval;
use tally_domain::money::Money;

/// One recurring fee of a subscription, from one invoice line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicedFee {
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// `pv_…`.
    pub plan_version_id: String,
    /// The charge within the plan version.
    pub charge_key: String,
    /// From when this fee is billed.
    pub effective_from: DateTime<Utc>,
    /// The full-period fee.
    pub period_amount: Money,
    /// The length of a full period.
    pub interval: MrrInterval,
    /// `period_amount` per month, full precision.
    pub mrr: Money,
    /// `inv_…`.
    pub invoice_id: String,
    /// `il_…`.
    pub line_id: String,
}

/// A stored fee, as the MRR computation reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFee {
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// `pv_…`.
    pub plan_version_id: String,
    /// The charge within the plan version.
    pub charge_key: String,
    /// From when.
    pub effective_from: DateTime<Utc>,
    /// Monthly, full precision.
    pub mrr: Decimal,
}

/// A pause window: from `pause_at` until `resume_at` (`None`: indefinite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Start (inclusive).
    pub pause_at: DateTime<Utc>,
    /// End (exclusive).
    pub resume_at: Option<DateTime<Utc>>,
}

/// What finance keeps of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFacts {
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// ISO 4217.
    pub currency: String,
    /// The snapshot's status, e.g. `active`.
    pub status: &'static str,
    /// The snapshot's version (≥ 1).
    pub version: i64,
    /// When it starts.
    pub start_at: Option<DateTime<Utc>>,
    /// When its trial ends.
    pub trial_end_at: Option<DateTime<Utc>>,
    /// When it ended or is scheduled to end.
    pub ends_at: Option<DateTime<Utc>>,
    /// Every pause window.
    pub pauses: Vec<Pause>,
}
