//! What earlier invoices billed, as composition and finalization read it:
//! usage and in-advance sums of a subscription's period, the periods whose
//! usage may have changed since, line counts, and the paid-at-once update.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::error::Result;

/// What other invoices than `exclude_invoice` billed as usage and
/// adjustments for the usage period of `subscription_id` starting at
/// `usage_period_start` (`None` when nothing).
pub async fn usage_billed_for_period(
    connection: &mut PgConnection,
    subscription_id: &str,
    usage_period_start: DateTime<Utc>,
    exclude_invoice: Option<&str>,
) -> Result<Option<Decimal>> {
    let (billed,): (Option<Decimal>,) = sqlx::query_as(
        "SELECT SUM(l.amount) FROM invoicing.invoice_lines l JOIN invoicing.invoices i ON i.id = l.invoice_id \
         WHERE i.subscription_id = $1 AND l.usage_period_start = $2 AND l.kind IN ('usage', 'adjustment') \
           AND ($3::text IS NULL OR i.id <> $3)",
    )
    .bind(subscription_id)
    .bind(usage_period_start)
    .bind(exclude_invoice)
    .fetch_one(connection)
    .await?;
    Ok(billed)
}

/// One subscription's question to [`usage_periods_since`].
#[derive(Clone, Copy, Debug)]
pub struct UsagePeriodsQuery<'a> {
    pub subscription_id: &'a str,
    pub since: DateTime<Utc>,
    pub exclude_invoice: Option<&'a str>,
}

/// A usage period billed by an invoice.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct BilledUsagePeriod {
    /// 1-based position of the query it answers.
    pub position: i64,
    pub usage_period_start: DateTime<Utc>,
    /// The invoice that first billed it (earliest boundary).
    pub invoice_id: String,
    /// That invoice's status.
    pub status: String,
}

/// For each query, the usage periods starting at or after its `since` and
/// the invoice (other than its `exclude_invoice`) that first billed each,
/// ordered by position and period.
pub async fn usage_periods_since(
    connection: &mut PgConnection,
    queries: &[UsagePeriodsQuery<'_>],
) -> Result<Vec<BilledUsagePeriod>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (w.position, l.usage_period_start) w.position, l.usage_period_start, \
                i.id AS invoice_id, i.status \
         FROM unnest($1::text[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS w(subscription_id, since, exclude, position) \
         JOIN invoicing.invoices i ON i.subscription_id = w.subscription_id AND (w.exclude IS NULL OR i.id <> w.exclude) \
         JOIN invoicing.invoice_lines l ON l.invoice_id = i.id AND l.kind = 'usage' AND l.usage_period_start >= w.since \
         ORDER BY w.position, l.usage_period_start, i.boundary_at",
    )
    .bind(queries.iter().map(|query| query.subscription_id).collect::<Vec<_>>())
    .bind(queries.iter().map(|query| query.since).collect::<Vec<_>>())
    .bind(queries.iter().map(|query| query.exclude_invoice).collect::<Vec<_>>())
    .fetch_all(connection)
    .await?)
}

/// What other invoices than `exclude_invoice` billed in advance for
/// services within `[start, end)` of `subscription_id`:
/// `(plan version, charge, sum)` by plan version and charge.
pub async fn in_advance_billed_within(
    connection: &mut PgConnection,
    subscription_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    exclude_invoice: Option<&str>,
) -> Result<Vec<(String, String, Decimal)>> {
    Ok(sqlx::query_as(
        "SELECT l.plan_version_id, l.charge_key, SUM(l.amount) FROM invoicing.invoice_lines l \
         JOIN invoicing.invoices i ON i.id = l.invoice_id \
         WHERE i.subscription_id = $1 AND l.in_advance AND l.service_start >= $2 AND l.service_end <= $3 \
           AND ($4::text IS NULL OR i.id <> $4) \
         GROUP BY l.plan_version_id, l.charge_key ORDER BY 1, 2",
    )
    .bind(subscription_id)
    .bind(start)
    .bind(end)
    .bind(exclude_invoice)
    .fetch_all(connection)
    .await?)
}

/// How many lines invoice `invoice_id` has.
pub async fn line_count(connection: &mut PgConnection, invoice_id: &str) -> Result<i64> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM invoicing.invoice_lines WHERE invoice_id = $1")
            .bind(invoice_id)
            .fetch_one(connection)
            .await?;
    Ok(count)
}

/// Marks invoice `invoice_id` paid at `now`, as a new version.
pub async fn mark_paid(
    connection: &mut PgConnection,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoices SET status = 'paid', paid_at = $2, version = version + 1, updated_at = $2 \
         WHERE id = $1",
    )
    .bind(invoice_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
