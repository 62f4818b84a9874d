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

/// A fact to keep: (kind, source id, the `Booked` JSON).
pub type NewFact<'a> = (&'a str, &'a str, serde_json::Value);

/// Keeps facts once per (kind, source) — a replayed fact is not kept again —
/// in one statement, in the order given (so `seq`, the rebuild's order,
/// follows it).
pub async fn insert_facts(
    connection: &mut PgConnection,
    facts: &[NewFact<'_>],
    applied_at: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    if facts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO finance.facts (kind, source_id, fact, applied_at) \
         SELECT kind, source_id, fact, $4 \
         FROM UNNEST($1::text[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS f (kind, source_id, fact, ord) \
         ORDER BY ord \
         ON CONFLICT (kind, source_id) DO NOTHING",
    )
    .bind(facts.iter().map(|fact| fact.0).collect::<Vec<_>>())
    .bind(facts.iter().map(|fact| fact.1).collect::<Vec<_>>())
    .bind(facts.iter().map(|fact| &fact.2).collect::<Vec<_>>())
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

/// Keeps finalized invoices (once: a replay keeps the first), in one
/// statement.
pub async fn insert_invoices(
    connection: &mut PgConnection,
    invoices: &[NewInvoice<'_>],
) -> Result<(), FinanceServiceError> {
    if invoices.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO finance.invoices (invoice_id, customer_id, currency, finalized_at, fact) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[]) \
         ON CONFLICT (invoice_id) DO NOTHING",
    )
    .bind(
        invoices
            .iter()
            .map(|invoice| invoice.invoice_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        invoices
            .iter()
            .map(|invoice| invoice.customer_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        invoices
            .iter()
            .map(|invoice| invoice.currency)
            .collect::<Vec<_>>(),
    )
    .bind(
        invoices
            .iter()
            .map(|invoice| invoice.finalized_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        invoices
            .iter()
            .map(|invoice| invoice.fact)
            .collect::<Vec<_>>(),
    )
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
