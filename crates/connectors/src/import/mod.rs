//! Importing an external billing system's customers and subscriptions into
//! Tally (`tally migrate import`): what a source lists, in Tally's terms
//! ([`ImportSource`]), the mapping file from its prices to Tally's plans
//! and charges ([`mapping`]), and the plan of what an import creates and
//! what it leaves out, with the reason ([`plan`]).
//!
//! The rule: nothing is guessed. A subscription is imported only when every
//! one of its prices is mapped to a charge of one Tally plan; anything else
//! is listed as not imported, with why, and the operator fixes the mapping.
//! The plan is pure (no I/O): the dry run prints it, the import carries it
//! out through invoicing's gRPC API.

pub mod mapping;
pub mod plan;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// A customer of the source system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCustomer {
    /// The source's id (`cus_…` in Stripe): the Tally customer's external id.
    pub id: String,
    /// Display name (the email, then the id, when the source has none).
    pub name: String,
    /// Billing email (empty when none).
    pub email: String,
    /// ISO 4217, upper case; `None` when the source has not fixed one.
    pub currency: Option<String>,
    /// When the source created it.
    pub created_at: DateTime<Utc>,
}

/// How a source price bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePriceKind {
    /// A fee per period, times the item's quantity.
    Licensed,
    /// Usage reported to the source (a meter), billed in arrears.
    Metered,
    /// Billed once.
    OneTime,
}

/// A price of the source system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePrice {
    /// The source's id (`price_…`): what the mapping file keys on.
    pub id: String,
    /// Its nickname, else its product's id (for people reading the plan).
    pub name: String,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Licensed, metered or one-time.
    pub kind: SourcePriceKind,
    /// `month`, `year`, … for recurring prices; empty for one-time.
    pub interval: String,
    /// Intervals per period (1 for monthly).
    pub interval_count: u64,
    /// The unit amount in major units, exact; `None` for tiered prices.
    pub unit_amount: Option<Decimal>,
    /// Whether new subscriptions may use it.
    pub active: bool,
}

/// One price on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    /// The price.
    pub price_id: String,
    /// Seats or units of a licensed price; `None` for metered prices.
    pub quantity: Option<u64>,
}

/// A subscription of the source system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSubscription {
    /// The source's id (`sub_…`): the import's idempotency key derives from it.
    pub id: String,
    /// The source's customer id.
    pub customer_id: String,
    /// The source's status word (`active`, `trialing`, `past_due`, `canceled`, …).
    pub status: String,
    /// ISO 4217, upper case.
    pub currency: String,
    /// When it started in the source (its historical start).
    pub started_at: DateTime<Utc>,
    /// The current period's start.
    pub current_period_start: DateTime<Utc>,
    /// The current period's end.
    pub current_period_end: DateTime<Utc>,
    /// When the trial ends, if it is in one.
    pub trial_end: Option<DateTime<Utc>>,
    /// Its prices.
    pub items: Vec<SourceItem>,
    /// The source's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Everything an import reads from the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAccount {
    /// Every customer.
    pub customers: Vec<SourceCustomer>,
    /// Every price (active or not: old subscriptions keep archived prices).
    pub prices: Vec<SourcePrice>,
    /// Every subscription, ended ones included (the plan skips them).
    pub subscriptions: Vec<SourceSubscription>,
}

/// Why a source could not be read. (Not [`crate::biller::BillerError`],
/// whose texts name Orb: an operator importing from Stripe must read
/// "Stripe".)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// 429, 5xx, timeouts, connection failures, still failing after the retries.
    #[error("{source_name} is unavailable after {attempts} requests: {message}")]
    Unavailable {
        /// `Stripe`, `Orb`.
        source_name: &'static str,
        /// The last failure.
        message: String,
        /// Requests made.
        attempts: u32,
    },
    /// 401 or 403: the key is wrong or lacks a permission.
    #[error("{source_name} refused the API key (HTTP {status}): check {variable}")]
    Unauthorized {
        /// `Stripe`, `Orb`.
        source_name: &'static str,
        /// The HTTP status.
        status: u16,
        /// Where the key comes from.
        variable: &'static str,
    },
    /// Another 4xx: the request itself is wrong.
    #[error("{source_name} refused the request (HTTP {status}): {reason}")]
    Refused {
        /// `Stripe`, `Orb`.
        source_name: &'static str,
        /// The HTTP status.
        status: u16,
        /// The source's reason.
        reason: String,
    },
    /// An answer that does not read as documented (or a value out of range).
    #[error("unreadable answer from {source_name}: {message}")]
    Unreadable {
        /// `Stripe`, `Orb`.
        source_name: &'static str,
        /// What did not read.
        message: String,
    },
}

/// An external billing system an import reads from.
#[async_trait]
pub trait ImportSource: Send + Sync {
    /// The source's name (`stripe`, `orb`).
    fn source_name(&self) -> &'static str;

    /// Every customer, all pages.
    async fn list_customers(&self) -> Result<Vec<SourceCustomer>, SourceError>;

    /// Every price, all pages.
    async fn list_prices(&self) -> Result<Vec<SourcePrice>, SourceError>;

    /// Every subscription in any status, all pages.
    async fn list_subscriptions(&self) -> Result<Vec<SourceSubscription>, SourceError>;

    /// The whole account: customers, prices and subscriptions.
    async fn read_account(&self) -> Result<SourceAccount, SourceError> {
        Ok(SourceAccount {
            customers: self.list_customers().await?,
            prices: self.list_prices().await?,
            subscriptions: self.list_subscriptions().await?,
        })
    }
}
