//! `finance.schedule_days`: the days of deferred invoice lines, and which
//! were recognised.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::error::FinanceServiceError;

/// A day to recognise, with its invoice's stored fact.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDay {
    /// `inv_…`.
    pub invoice_id: String,
    /// The invoice line.
    pub line_id: String,
    /// The day.
    pub day: NaiveDate,
    /// What the day recognises, in the invoice's currency.
    pub amount: Decimal,
    /// The invoice's `InvoiceFinalized` JSON.
    pub fact: serde_json::Value,
}

/// Stores one schedule day (nothing when stored already).
pub async fn insert_schedule_day(
    connection: &mut PgConnection,
    invoice_id: &str,
    line_id: &str,
    day: NaiveDate,
    amount: Decimal,
    currency: &str,
) -> Result<(), FinanceServiceError> {
    sqlx::query(
        "INSERT INTO finance.schedule_days (invoice_id, line_id, day, amount, currency) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(invoice_id)
    .bind(line_id)
    .bind(day)
    .bind(amount)
    .bind(currency)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Up to `limit` days before `today` not yet recognised, of invoices not
/// voided, oldest first; locks them for the caller's transaction and skips
/// the rows another transaction holds.
pub async fn lock_due_days(
    connection: &mut PgConnection,
    today: NaiveDate,
    limit: i64,
) -> Result<Vec<DueDay>, FinanceServiceError> {
    Ok(sqlx::query_as(
        "SELECT d.invoice_id, d.line_id, d.day, d.amount, i.fact \
         FROM finance.schedule_days d JOIN finance.invoices i USING (invoice_id) \
         WHERE NOT d.recognised AND d.day < $1 AND i.voided_at IS NULL \
         ORDER BY d.day, d.invoice_id, d.line_id LIMIT $2 \
         FOR UPDATE OF d SKIP LOCKED",
    )
    .bind(today)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?)
}

/// Marks a day recognised.
pub async fn mark_day_recognised(
    connection: &mut PgConnection,
    invoice_id: &str,
    line_id: &str,
    day: NaiveDate,
) -> Result<(), FinanceServiceError> {
    sqlx::query(
        "UPDATE finance.schedule_days SET recognised = true \
         WHERE invoice_id = $1 AND line_id = $2 AND day = $3",
    )
    .bind(invoice_id)
    .bind(line_id)
    .bind(day)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
