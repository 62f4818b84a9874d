//! `finance.facts` (every booked fact, append-only, what a rebuild replays)
//! and `finance.invoices` (the finalized invoices' facts, for voids and
//! schedules).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::FinanceServiceError;

/// A kept fact, as `books::Booked` serialised it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredFact {
    /// The `Booked` JSON.
    pub fact: serde_json::Value,
    /// When it was first booked.
    pub applied_at: DateTime<Utc>,
}

/// Keeps a fact once per (kind, source): a replayed fact is not kept again.
pub async fn insert_fact(
    connection: &mut PgConnection,
    kind: &str,
    source_id: &str,
    fact: &serde_json::Value,
    applied_at: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    sqlx::query(
        "INSERT INTO finance.facts (kind, source_id, fact, applied_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, source_id) DO NOTHING",
    )
    .bind(kind)
    .bind(source_id)
    .bind(fact)
    .bind(applied_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Every kept fact, in the order they were applied.
pub async fn facts_in_applied_order(
    connection: &mut PgConnection,
) -> Result<Vec<StoredFact>, FinanceServiceError> {
    Ok(
        sqlx::query_as("SELECT fact, applied_at FROM finance.facts ORDER BY seq")
            .fetch_all(&mut *connection)
            .await?,
    )
}

/// A finalized invoice as `finance.invoices` keeps it.
#[derive(Debug, Clone, Copy)]
pub struct NewInvoice<'a> {
    /// `inv_…`.
    pub invoice_id: &'a str,
    /// `cus_…`.
    pub customer_id: &'a str,
    /// ISO 4217.
    pub currency: &'a str,
    /// When it was finalized.
    pub finalized_at: DateTime<Utc>,
    /// The `InvoiceFinalized` JSON.
    pub fact: &'a serde_json::Value,
}

/// Keeps a finalized invoice (once: a replay keeps the first).
pub async fn insert_invoice(
    connection: &mut PgConnection,
    invoice: NewInvoice<'_>,
) -> Result<(), FinanceServiceError> {
    sqlx::query(
        "INSERT INTO finance.invoices (invoice_id, customer_id, currency, finalized_at, fact) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (invoice_id) DO NOTHING",
    )
    .bind(invoice.invoice_id)
    .bind(invoice.customer_id)
    .bind(invoice.currency)
    .bind(invoice.finalized_at)
    .bind(invoice.fact)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Marks an invoice voided at `voided_at` (its schedule days are then never
/// recognised).
pub async fn mark_invoice_voided(
    connection: &mut PgConnection,
    invoice_id: &str,
    voided_at: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    sqlx::query("UPDATE finance.invoices SET voided_at = $2 WHERE invoice_id = $1")
        .bind(invoice_id)
        .bind(voided_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Whether the finalization of `invoice_id` is booked (`finance.invoices`
/// keeps it): a void needs it.
pub async fn invoice_kept(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<bool, FinanceServiceError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM finance.invoices WHERE invoice_id = $1)")
            .bind(invoice_id)
            .fetch_one(&mut *connection)
            .await?,
    )
}
