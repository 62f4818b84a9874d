//! What the `payment-events` consumer reads and writes of invoices: the
//! invoice's subscription, the paid amount and status, overdue invoices.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::error::Result;

/// The subscription of invoice `invoice_id`, if the invoice exists.
pub async fn invoice_subscription(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT subscription_id FROM invoicing.invoices WHERE id = $1")
            .bind(invoice_id)
            .fetch_optional(connection)
            .await?;
    Ok(row.map(|(subscription_id,)| subscription_id))
}

/// Sets invoice `invoice_id`'s paid amount to `paid_total`, and marks it
/// paid at `now` when `becomes_paid`, as a new version.
pub async fn record_payment(
    connection: &mut PgConnection,
    invoice_id: &str,
    paid_total: Decimal,
    becomes_paid: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoices SET amount_paid = $2, status = CASE WHEN $3 THEN 'paid' ELSE status END, \
           paid_at = CASE WHEN $3 THEN $4 ELSE paid_at END, version = version + 1, updated_at = $4 WHERE id = $1",
    )
    .bind(invoice_id)
    .bind(paid_total)
    .bind(becomes_paid)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// How many invoices of `subscription_id` are unpaid (finalized or
/// uncollectible) and were due before `now`.
pub async fn overdue_unpaid_count(
    connection: &mut PgConnection,
    subscription_id: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    let (unpaid,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM invoicing.invoices WHERE subscription_id = $1 AND status IN ('finalized', 'uncollectible') \
           AND due_at < $2",
    )
    .bind(subscription_id)
    .bind(now)
    .fetch_one(connection)
    .await?;
    Ok(unpaid)
}

/// Marks invoice `invoice_id` uncollectible at `now`, as a new version.
pub async fn mark_uncollectible(
    connection: &mut PgConnection,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoices SET status = 'uncollectible', version = version + 1, updated_at = $2 WHERE id = $1",
    )
    .bind(invoice_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
