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

/// A day of a deferred line's schedule, to store.
#[derive(Debug, Clone)]
pub struct ScheduleDay<'a> {
    /// `inv_…`.
    pub invoice_id: &'a str,
    /// The invoice line.
    pub line_id: &'a str,
    /// The day.
    pub day: NaiveDate,
    /// What the day recognises.
    pub amount: Decimal,
    /// Its currency.
    pub currency: &'a str,
}

/// Stores schedule days (those stored already are left), in one statement.
pub async fn insert_schedule_days(
    connection: &mut PgConnection,
    days: &[ScheduleDay<'_>],
) -> Result<(), FinanceServiceError> {
    if days.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO finance.schedule_days (invoice_id, line_id, day, amount, currency) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::date[], $4::numeric[], $5::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(days.iter().map(|day| day.invoice_id).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.line_id).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.day).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.amount).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.currency).collect::<Vec<_>>())
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

/// Marks days recognised, `(invoice, line, day)` each, in one statement.
pub async fn mark_days_recognised(
    connection: &mut PgConnection,
    days: &[(&str, &str, NaiveDate)],
) -> Result<(), FinanceServiceError> {
    if days.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE finance.schedule_days d SET recognised = true \
         FROM UNNEST($1::text[], $2::text[], $3::date[]) AS r (invoice_id, line_id, day) \
         WHERE d.invoice_id = r.invoice_id AND d.line_id = r.line_id AND d.day = r.day",
    )
    .bind(days.iter().map(|day| day.0).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.1).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.2).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}
