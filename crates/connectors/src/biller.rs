//! The boundary with an external billing system ("an external biller"):
//! what connectors asks of one, in Tally's terms. Orb is the implementation
//! today ([`crate::orb::OrbClient`]); its shapes never leave its adapter, so
//! a second biller (Stripe Billing) is another `impl ExternalBiller` and
//! nothing else changes.
//!
//! The rule every implementation keeps: a mirroring call is **idempotent**
//! on Tally's ids — the same Tally customer or subscription sent twice (a
//! redelivery, a retry after a 500) is one object in the biller — and money
//! read back is exact (`Decimal` from the biller's decimal strings, never a
//! float).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// One usage event for the biller, in Tally's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// What the biller de-duplicates by.
    pub idempotency_key: String,
    /// The biller customer's external id.
    pub external_customer_id: String,
    /// The biller's event name (Tally's event type).
    pub event_name: String,
    /// When the usage happened.
    pub timestamp: DateTime<Utc>,
    /// Tally's properties (strings; exact numbers are sent as numbers).
    pub properties: BTreeMap<String, String>,
}

/// What the biller answered to one usage request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestAnswer {
    /// Every event was ingested (or had been) except those listed, by
    /// idempotency key, with the biller's validation errors.
    Accepted {
        /// Idempotency key → the biller's reason.
        failed: BTreeMap<String, String>,
    },
    /// A 4xx refusing the payload: nothing of the request was ingested.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The biller's reason for the request.
        reason: String,
        /// The biller's reasons per idempotency key, when it named keys.
        per_key: BTreeMap<String, String>,
    },
}

/// A request that did not get an answer. (The texts name Orb, the only
/// biller so far, as operators have read them since forwarding began; a
/// second biller makes them name the biller.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillerError {
    /// Worth retrying later (429, 5xx, a timeout, a connection failure).
    #[error("Orb is unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// How long the biller asked to wait.
        retry_after: Option<Duration>,
    },
    /// The biller refused the key (401, 403): nothing can be sent until an
    /// operator fixes it.
    #[error("Orb refused the API key (HTTP {status}): check ORB_API_KEY")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// A 4xx about the request itself: retrying it as is cannot help.
    #[error("Orb refused the request (HTTP {status}): {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The biller's reason.
        reason: String,
    },
    /// A 2xx whose body does not read as documented.
    #[error("unreadable answer from Orb: {0}")]
    Unreadable(String),
}

/// An answer and how many requests it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent<T = IngestAnswer> {
    /// The biller's answer.
    pub answer: T,
    /// Requests made, the first included.
    pub attempts: u32,
}

/// An error after the requests it took.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (after {attempts} requests)")]
pub struct NotSent {
    /// The last error.
    pub error: BillerError,
    /// Requests made.
    pub attempts: u32,
}

/// A Tally customer to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerMirror {
    /// `cus_…` (the idempotency key is derived from it).
    pub customer_id: String,
    /// The biller's external id: Tally's external id, else its id.
    pub external_customer_id: String,
    /// Display name.
    pub name: String,
    /// Billing email.
    pub email: String,
    /// ISO 4217.
    pub currency: String,
}

/// A Tally subscription to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionMirror {
    /// `sub_…` (the idempotency key is derived from it).
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// The biller customer's external id.
    pub external_customer_id: String,
    /// The biller's plan (from the plan mapping).
    pub biller_plan_id: String,
    /// When the subscription starts.
    pub start_at: DateTime<Utc>,
    /// ISO 4217.
    pub currency: String,
}

/// The object a mirroring call made (or had made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// The biller's id of it.
    pub biller_id: String,
}

/// How the biller knows a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillerCustomer {
    /// The biller's own id.
    Id(String),
    /// The external id it was created with.
    ExternalId(String),
}

/// Which invoices to read: a customer's, dated in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceQuery {
    /// Whose.
    pub customer: BillerCustomer,
    /// Invoice date, inclusive.
    pub from: DateTime<Utc>,
    /// Invoice date, exclusive.
    pub to: DateTime<Utc>,
}

/// An invoice of the biller, in Tally's terms: the amounts a parity check
/// compares separately (a biller's `total` may spread a minimum over prices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInvoice {
    /// The biller's id.
    pub id: String,
    /// Its number (empty while a draft has none).
    pub number: String,
    /// `draft`, `issued`, `paid`, `synced`, `void` (the biller's word).
    pub status: String,
    /// ISO 4217.
    pub currency: String,
    /// The invoice date.
    pub invoice_date: DateTime<Utc>,
    /// Before discounts and minimums.
    pub subtotal: Decimal,
    /// Every discount applied (negative or zero, as the biller signs them).
    pub discounts: Decimal,
    /// Every minimum true-up applied.
    pub minimums: Decimal,
    /// Every maximum applied (negative or zero).
    pub maximums: Decimal,
    /// After discounts and minimums.
    pub total: Decimal,
    /// What the customer is asked to pay (after balances and credits).
    pub amount_due: Decimal,
    /// Its lines.
    pub lines: Vec<ExternalInvoiceLine>,
}

/// One line of an [`ExternalInvoice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInvoiceLine {
    /// The biller's id.
    pub id: String,
    /// The price's name.
    pub name: String,
    /// The biller's price id (what a mapping to Tally charges keys on).
    pub price_id: String,
    /// The service period's start.
    pub start: DateTime<Utc>,
    /// The service period's end.
    pub end: DateTime<Utc>,
    /// Usage or fixed-fee quantity.
    pub quantity: Decimal,
    /// Before adjustments.
    pub subtotal: Decimal,
    /// After adjustments, before credits.
    pub adjusted_subtotal: Decimal,
    /// Final.
    pub amount: Decimal,
}

/// A webhook delivery as received: the raw body and the headers that
/// authenticate it.
#[derive(Debug, Clone, Copy)]
pub struct WebhookDelivery<'a> {
    /// The timestamp header (`X-Orb-Timestamp`).
    pub timestamp: Option<&'a str>,
    /// The signature header (`X-Orb-Signature`).
    pub signature: Option<&'a str>,
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

/// A verified webhook event, in Tally's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalWebhookEvent {
    /// The biller's event id (what redeliveries are deduplicated by).
    pub id: String,
    /// The event type, e.g. `invoice.issued`.
    pub event_type: String,
    /// When the biller created it.
    pub created_at: DateTime<Utc>,
    /// The biller's ids of what it is about (`invoice`, `customer`,
    /// `subscription` → id), where the payload names them.
    pub subjects: BTreeMap<String, String>,
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefusal {
    /// No webhook secret is configured: nothing can be verified.
    #[error("no webhook secret is configured (set ORB_WEBHOOK_SECRET)")]
    NoSecret,
    /// A required header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The timestamp header is not an ISO 8601 instant.
    #[error("malformed timestamp header {0:?}: expected ISO 8601")]
    MalformedTimestamp(String),
    /// The timestamp is outside the tolerance (a replay, or a skewed clock).
    #[error(
        "stale: the timestamp is {age_seconds} s away from now (at most {tolerance_seconds} s)"
    )]
    Stale {
        /// Distance between the timestamp and now.
        age_seconds: i64,
        /// The tolerance.
        tolerance_seconds: i64,
    },
    /// No `v1` signature matches the body.
    #[error("forged: no v1 signature matches the body")]
    Mismatch,
    /// Signed, but not a webhook event.
    #[error("unreadable event body: {0}")]
    Unreadable(String),
}

/// An external billing system, seen from Tally.
#[async_trait]
pub trait ExternalBiller: Send + Sync {
    /// The biller's name in logs and tables (`orb`).
    fn name(&self) -> &'static str;

    /// Creates the biller's customer for a Tally customer (once: a repeat
    /// answers the same object).
    async fn mirror_customer(&self, customer: &CustomerMirror) -> Result<Sent<Mirrored>, NotSent>;

    /// Creates the biller's subscription for a Tally subscription (once).
    async fn mirror_subscription(
        &self,
        subscription: &SubscriptionMirror,
    ) -> Result<Sent<Mirrored>, NotSent>;

    /// Sends usage in one request (retried in process when it may pass later).
    async fn forward_usage(&self, events: &[UsageRecord]) -> Result<Sent, NotSent>;

    /// Every invoice of a customer dated in the query's period, all pages.
    async fn list_invoices(&self, query: &InvoiceQuery) -> Result<Vec<ExternalInvoice>, NotSent>;

    /// Authenticates a webhook delivery at `now` and reads its event.
    fn verify_webhook(
        &self,
        delivery: &WebhookDelivery<'_>,
        now: DateTime<Utc>,
    ) -> Result<ExternalWebhookEvent, WebhookRefusal>;
}
