//! Invoicing's own model of what an invoice stores: its status and billing
//! reason (text columns with CHECK constraints) and each line with its
//! explanation (`invoicing.invoice_lines`: explicit columns, and the
//! explanation as JSON of [`Explanation`]). The wire forms are made at the
//! edge (`mapping.rs`); a stored name this code does not know is an error.

pub mod usage;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::money::Money;

pub use self::usage::UsageCharge;
use crate::text_enum::text_enum;

text_enum! {
    /// Lifecycle status of an invoice (`invoices.status`).
    pub enum InvoiceStatus {
        Draft = "draft",
        Finalized = "finalized",
        Paid = "paid",
        Void = "void",
        Uncollectible = "uncollectible",
    }
}

text_enum! {
    /// Why an invoice was created (`invoices.billing_reason`).
    pub enum BillingReason {
        SubscriptionCycle = "subscription_cycle",
        SubscriptionCreate = "subscription_create",
        SubscriptionUpdate = "subscription_update",
        SubscriptionEnd = "subscription_end",
    }
}

text_enum! {
    /// What a line bills (`invoice_lines.kind`).
    pub enum LineKind {
        Recurring = "recurring",
        Usage = "usage",
        ProrationCredit = "proration_credit",
        ProrationCharge = "proration_charge",
        MinimumTrueUp = "minimum_true_up",
        CreditsApplied = "credits_applied",
        Adjustment = "adjustment",
    }
}

text_enum! {
    /// When a recurring fee is billed.
    pub enum BillingTiming {
        InAdvance = "in_advance",
        InArrears = "in_arrears",
    }
}

text_enum! {
    /// How a change's fees were prorated.
    pub enum ProrationPolicy {
        None = "none",
        Prorate = "prorate",
        ProrateByDay = "prorate_by_day",
    }
}

/// A stored line of an invoice (amounts in the invoice's currency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLine {
    /// `il_…`.
    pub id: String,
    pub kind: LineKind,
    pub description: String,
    pub service_start: DateTime<Utc>,
    pub service_end: DateTime<Utc>,
    /// Units, or 1 for fees.
    pub quantity: Decimal,
    /// When the line is quantity × unit price.
    pub unit_price: Option<Decimal>,
    /// Before rounding.
    pub precise_amount: Decimal,
    /// Rounded once; what is summed.
    pub amount: Decimal,
    /// How the amount came about (matches `kind`).
    pub explanation: Option<Explanation>,
}

/// `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// How a line's amount came about. Amounts keep the text they were written
/// with (scale included), so a line reads back exactly as it was billed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Explanation {
    /// A recurring fee for its full period.
    Recurring {
        plan_version_id: String,
        charge_key: String,
        billing_timing: BillingTiming,
        period_amount: Option<Money>,
    },
    /// Usage priced by rating, as rating priced it.
    Usage { charge: Option<UsageCharge> },
    /// A prorated fee (credit or charge).
    Proration {
        plan_version_id: String,
        charge_key: String,
        policy: ProrationPolicy,
        full_period: Option<Range>,
        prorated_period: Option<Range>,
        /// `prorated / full`, exact.
        factor: Option<Decimal>,
        period_amount: Option<Money>,
    },
    /// The minimum commitment's true-up.
    MinimumTrueUp {
        minimum_commitment: Option<Money>,
        charges_total: Option<Money>,
        prorated_minimum: Option<Money>,
        full_period: Option<Range>,
        prorated_period: Option<Range>,
        factor: Option<Decimal>,
    },
    /// Credit grants burned, in burn-down order.
    CreditsApplied {
        applications: Vec<CreditApplication>,
    },
    /// A correction of an earlier, finalized invoice.
    Adjustment {
        original_invoice_id: String,
        original_line_id: String,
        reason: String,
        repriced_charge: Option<UsageCharge>,
    },
}

/// One grant burned by a credits-applied line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditApplication {
    /// `grant_…`.
    pub credit_grant_id: String,
    pub amount: Option<Money>,
}
