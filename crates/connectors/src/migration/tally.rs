//! What connectors asks of Tally's invoicing for a migration, as a port:
//! the customer's current billing period, its invoice for a period (the
//! shadow draft), and the billing mode invoicing applies to it. Connectors
//! never reads invoicing's tables: the service implementation
//! ([`InvoicingClient`]) calls invoicing's gRPC API; tests use a fake.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::model::{BillingPeriod, TallyInvoice};

/// The billing mode invoicing applies to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingModeChange {
    /// `cus_…`.
    pub customer_id: String,
    /// `None`: every invoice is held as a draft (shadow, external, rolled
    /// back). `Some(boundary)`: Tally finalizes the invoices of boundaries
    /// after it (cutover); the drafts up to it stay held.
    pub tally_bills_after: Option<DateTime<Utc>>,
    /// The billing system record's version: invoicing applies a change only
    /// when it is newer than what it holds.
    pub version: i64,
}

/// Invoicing did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invoicing: {0}")]
pub struct TallyUnavailable(pub String);

/// Tally's invoicing, seen from connectors.
#[async_trait]
pub trait TallyBilling: Send + Sync {
    /// The billing period of the customer's subscription at `at`; `None`
    /// when it has no active subscription.
    async fn current_period(
        &self,
        customer_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<BillingPeriod>, TallyUnavailable>;

    /// The customer's invoice (not void) that Tally issues at the boundary
    /// `end` — the one the external biller's invoice dated `end` is compared
    /// with: the invoice of the billing period ending at `end` — with its
    /// lines.
    async fn invoice_ending_at(
        &self,
        customer_id: &str,
        end: DateTime<Utc>,
    ) -> Result<Option<TallyInvoice>, TallyUnavailable>;

    /// Sets the customer's billing mode in invoicing (idempotent by version).
    async fn set_billing_mode(&self, change: &BillingModeChange) -> Result<(), TallyUnavailable>;
}
