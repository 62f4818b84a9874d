//! Reconciliation's SQL: reports and findings
//! (`payments.reconciliation_reports`, `payments.reconciliation_findings`)
//! and the Tally side of a window (invoices, charges, failed attempts,
//! refunds, and which of them the ledger records).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use crate::error::PaymentsError;

/// A report to create.
#[derive(Debug, Clone, Copy)]
pub struct NewReport<'a> {
    pub id: &'a str,
    pub idempotency_key: &'a str,
    pub request_hash: &'a str,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub scheduled: bool,
    pub started_at: DateTime<Utc>,
}

/// Stores a pending report; `None` when its idempotency key has one.
pub async fn insert_report(
    pool: &PgPool,
    report: NewReport<'_>,
) -> Result<Option<String>, PaymentsError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO payments.reconciliation_reports (id, idempotency_key, request_hash, window_start, \
         window_end, state, scheduled, started_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(report.id)
    .bind(report.idempotency_key)
    .bind(report.request_hash)
    .bind(report.window_start)
    .bind(report.window_end)
    .bind(report.scheduled)
    .bind(report.started_at)
    .fetch_optional(pool)
    .await?)
}

/// The report created under an idempotency key, and its request's hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyedReport {
    pub id: String,
    pub request_hash: String,
}

/// The report created under `idempotency_key` (which must exist).
pub async fn report_by_key(
    pool: &PgPool,
    idempotency_key: &str,
) -> Result<KeyedReport, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT id, request_hash FROM payments.reconciliation_reports WHERE idempotency_key = $1",
    )
    .bind(idempotency_key)
    .fetch_one(pool)
    .await?)
}

/// Marks report `id` running from `now`; returns its window.
pub async fn start_report(
    pool: &PgPool,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), PaymentsError> {
    Ok(sqlx::query_as(
        "UPDATE payments.reconciliation_reports SET state = 'running', error = '', finished_at = NULL, \
         started_at = $2 WHERE id = $1 RETURNING window_start, window_end",
    )
    .bind(id)
    .bind(now)
    .fetch_one(pool)
    .await?)
}

/// Marks report `id` failed with `error`.
pub async fn fail_report(
    pool: &PgPool,
    id: &str,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments.reconciliation_reports SET state = 'failed', error = $2, finished_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// A completed report's counts.
#[derive(Debug, Clone, Copy)]
pub struct ReportCounts {
    pub matched: i64,
    pub missing_in_tally: i64,
    pub missing_in_stripe: i64,
    pub amount_mismatch: i64,
    pub status_mismatch: i64,
}

/// Marks report `id` completed with `counts`.
pub async fn complete_report(
    connection: &mut PgConnection,
    id: &str,
    counts: ReportCounts,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments.reconciliation_reports SET state = 'completed', matched = $2, missing_in_tally = $3, \
         missing_in_stripe = $4, amount_mismatch = $5, status_mismatch = $6, finished_at = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(counts.matched)
    .bind(counts.missing_in_tally)
    .bind(counts.missing_in_stripe)
    .bind(counts.amount_mismatch)
    .bind(counts.status_mismatch)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// The state of report `id` (which must exist).
pub async fn report_state(pool: &PgPool, id: &str) -> Result<String, PaymentsError> {
    Ok(
        sqlx::query_scalar("SELECT state FROM payments.reconciliation_reports WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

const REPORT_COLUMNS: &str = "id, window_start, window_end, state, scheduled, matched, missing_in_tally, \
     missing_in_stripe, amount_mismatch, status_mismatch, error, started_at, finished_at";

/// A stored report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    pub id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub state: String,
    pub scheduled: bool,
    pub matched: i64,
    pub missing_in_tally: i64,
    pub missing_in_stripe: i64,
    pub amount_mismatch: i64,
    pub status_mismatch: i64,
    pub error: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Report `id`, if it exists.
pub async fn report(pool: &PgPool, id: &str) -> Result<Option<ReportRow>, PaymentsError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REPORT_COLUMNS} FROM payments.reconciliation_reports WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Up to `limit` reports with an id before `before` (all when empty),
/// newest id first.
pub async fn reports_page(
    pool: &PgPool,
    before: &str,
    limit: i64,
) -> Result<Vec<ReportRow>, PaymentsError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REPORT_COLUMNS} FROM payments.reconciliation_reports WHERE ($1 = '' OR id < $1) \
         ORDER BY id DESC LIMIT $2"
    )))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A stored finding.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FindingRow {
    pub id: String,
    pub kind: String,
    pub object: String,
    pub tally_id: String,
    pub stripe_id: String,
    pub tally_amount: Option<Decimal>,
    pub tally_currency: String,
    pub stripe_amount: Option<Decimal>,
    pub stripe_currency: String,
    pub tally_status: String,
    pub stripe_status: String,
    pub description: String,
    /// Order within the report (the page token).
    pub position: i32,
}

/// Up to `limit` findings of report `report_id` after `after` (of `kind`
/// when not empty), in order.
pub async fn findings_page(
    pool: &PgPool,
    report_id: &str,
    after: i32,
    limit: i64,
    kind: &str,
) -> Result<Vec<FindingRow>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, object, tally_id, stripe_id, tally_amount, tally_currency, stripe_amount, \
         stripe_currency, tally_status, stripe_status, description, position \
         FROM payments.reconciliation_findings WHERE report_id = $1 AND position > $2 \
         AND ($4 = '' OR kind = $4) ORDER BY position LIMIT $3",
    )
    .bind(report_id)
    .bind(after)
    .bind(limit)
    .bind(kind)
    .fetch_all(pool)
    .await?)
}

/// A finding to store.
#[derive(Debug, Clone, Copy)]
pub struct NewFinding<'a> {
    pub id: &'a str,
    pub report_id: &'a str,
    pub position: i32,
    pub kind: &'a str,
    pub object: &'a str,
    pub tally_id: &'a str,
    pub stripe_id: &'a str,
    pub tally_amount: Option<Decimal>,
    pub tally_currency: &'a str,
    pub stripe_amount: Option<Decimal>,
    pub stripe_currency: &'a str,
    pub tally_status: &'a str,
    pub stripe_status: &'a str,
    pub description: &'a str,
}

/// Stores a finding.
pub async fn insert_finding(
    connection: &mut PgConnection,
    finding: NewFinding<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments.reconciliation_findings (id, report_id, position, kind, object, tally_id, stripe_id, \
         tally_amount, tally_currency, stripe_amount, stripe_currency, tally_status, stripe_status, description) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(finding.id)
    .bind(finding.report_id)
    .bind(finding.position)
    .bind(finding.kind)
    .bind(finding.object)
    .bind(finding.tally_id)
    .bind(finding.stripe_id)
    .bind(finding.tally_amount)
    .bind(finding.tally_currency)
    .bind(finding.stripe_amount)
    .bind(finding.stripe_currency)
    .bind(finding.tally_status)
    .bind(finding.stripe_status)
    .bind(finding.description)
    .execute(connection)
    .await?;
    Ok(())
}

/// A Tally invoice as reconciled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceRow {
    pub invoice_id: String,
    pub stripe_invoice_id: Option<String>,
    pub amount_due: Decimal,
    pub currency: String,
    pub status: String,
}

/// The invoices mirrored as `stripe_invoice_ids`, or created in
/// `[start, end)` with something due.
pub async fn invoices(
    connection: &mut PgConnection,
    stripe_invoice_ids: &[&str],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<InvoiceRow>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT invoice_id, stripe_invoice_id, amount_due, currency, status FROM payments.invoices \
         WHERE stripe_invoice_id = ANY($1) OR (created_at >= $2 AND created_at < $3 AND status <> 'nothing_due')",
    )
    .bind(stripe_invoice_ids)
    .bind(start)
    .bind(end)
    .fetch_all(connection)
    .await?)
}

/// A Tally payment with a Stripe charge, as reconciled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChargeRow {
    pub id: String,
    pub stripe_charge_id: String,
    pub amount: Decimal,
    pub amount_refunded: Decimal,
    pub currency: String,
    pub status: String,
}

/// The payments charged as `charge_ids` or `sources`, or with a successful
/// attempt in `[start, end)`.
pub async fn charges(
    connection: &mut PgConnection,
    charge_ids: &[&str],
    sources: &[&str],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<ChargeRow>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT id, stripe_charge_id, amount, amount_refunded, currency, status FROM payments.payments \
         WHERE stripe_charge_id IS NOT NULL AND (stripe_charge_id = ANY($1) OR stripe_charge_id = ANY($2) \
         OR id IN (SELECT payment_id FROM payments.payment_attempts WHERE succeeded AND attempted_at >= $3 AND attempted_at < $4))",
    )
    .bind(charge_ids)
    .bind(sources)
    .bind(start)
    .bind(end)
    .fetch_all(connection)
    .await?)
}

/// A failed attempt's charge.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedAttemptRow {
    pub payment_id: String,
    pub stripe_charge_id: String,
    pub amount: Decimal,
    pub currency: String,
}

/// The failed attempts charged as `charge_ids`.
pub async fn failed_attempts(
    connection: &mut PgConnection,
    charge_ids: &[&str],
) -> Result<Vec<FailedAttemptRow>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT a.payment_id, a.stripe_charge_id, p.amount, p.currency FROM payments.payment_attempts a \
         JOIN payments.payments p ON p.id = a.payment_id WHERE NOT a.succeeded AND a.stripe_charge_id = ANY($1)",
    )
    .bind(charge_ids)
    .fetch_all(connection)
    .await?)
}

/// A Tally refund with a Stripe refund, as reconciled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: String,
    pub stripe_refund_id: String,
    pub amount: Decimal,
    pub currency: String,
    pub status: String,
}

/// The refunds made as `refund_ids` or `sources`, or created in
/// `[start, end)`.
pub async fn refunds(
    connection: &mut PgConnection,
    refund_ids: &[&str],
    sources: &[&str],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<RefundRow>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT id, stripe_refund_id, amount, currency, status FROM payments.refunds \
         WHERE stripe_refund_id IS NOT NULL AND (stripe_refund_id = ANY($1) OR stripe_refund_id = ANY($2) \
         OR (created_at >= $3 AND created_at < $4))",
    )
    .bind(refund_ids)
    .bind(sources)
    .bind(start)
    .bind(end)
    .fetch_all(connection)
    .await?)
}

/// Those of `transaction_ids` the ledger records.
pub async fn posted_transaction_ids(
    connection: &mut PgConnection,
    transaction_ids: &[String],
) -> Result<Vec<String>, PaymentsError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM payments.ledger_transactions WHERE id = ANY($1)")
            .bind(transaction_ids)
            .fetch_all(connection)
            .await?,
    )
}
