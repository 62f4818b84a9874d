//! Refunds (`payments.refunds`): requests under an idempotency key, their
//! Stripe refund, and their outcome.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::error::PaymentsError;

/// Locks refund idempotency key `key` for the rest of the caller's
/// transaction (a second request with it waits for the first).
pub async fn lock_refund_key(
    connection: &mut PgConnection,
    key: &str,
) -> Result<(), PaymentsError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('payments.refund:' || $1))")
        .bind(key)
        .execute(connection)
        .await?;
    Ok(())
}

/// A refund stored under a request's idempotency key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredRefund {
    pub id: String,
    pub request_hash: Option<String>,
    pub status: String,
    pub amount: Decimal,
    pub currency: String,
    pub reason: String,
    pub failure_code: String,
    pub failure_reason: String,
}

/// The refund requested under idempotency key `key`, if any.
pub async fn refund_by_key(
    connection: &mut PgConnection,
    key: &str,
) -> Result<Option<StoredRefund>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT id, request_hash, status, amount, currency, reason, failure_code, failure_reason \
         FROM payments.refunds WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(connection)
    .await?)
}

/// A refund requested through `RefundPayment`.
#[derive(Debug, Clone, Copy)]
pub struct NewRefund<'a> {
    pub id: &'a str,
    pub payment_id: &'a str,
    pub invoice_id: &'a str,
    pub idempotency_key: &'a str,
    pub request_hash: &'a str,
    pub amount: Decimal,
    pub currency: &'a str,
    pub reason: &'a str,
    pub memo: &'a str,
}

/// Stores a pending refund requested at `now`.
pub async fn insert_refund(
    connection: &mut PgConnection,
    refund: NewRefund<'_>,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO payments.refunds (id, payment_id, invoice_id, idempotency_key, request_hash, amount, currency, \
         reason, memo, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10)",
    )
    .bind(refund.id)
    .bind(refund.payment_id)
    .bind(refund.invoice_id)
    .bind(refund.idempotency_key)
    .bind(refund.request_hash)
    .bind(refund.amount)
    .bind(refund.currency)
    .bind(refund.reason)
    .bind(refund.memo)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Names the Stripe refund of refund `id`.
pub async fn set_stripe_refund_id(
    connection: &mut PgConnection,
    id: &str,
    stripe_refund_id: &str,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query("UPDATE payments.refunds SET stripe_refund_id = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(stripe_refund_id)
        .bind(now)
        .execute(connection)
        .await?;
    Ok(())
}

/// What a refund that just succeeded was.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SucceededRefund {
    pub amount: Decimal,
    pub reason: String,
    pub credit_note_id: Option<String>,
}

/// Marks refund `id` succeeded as Stripe refund `stripe_refund_id`; `None`
/// when it had succeeded already.
pub async fn mark_refund_succeeded(
    connection: &mut PgConnection,
    id: &str,
    stripe_refund_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<SucceededRefund>, PaymentsError> {
    Ok(sqlx::query_as(
        "UPDATE payments.refunds SET status = 'succeeded', stripe_refund_id = $2, updated_at = $3 \
         WHERE id = $1 AND status <> 'succeeded' RETURNING status, amount, reason, credit_note_id",
    )
    .bind(id)
    .bind(stripe_refund_id)
    .bind(now)
    .fetch_optional(connection)
    .await?)
}

/// Marks pending refund `id` failed (`reason`, `code`, and its Stripe
/// refund when Stripe made one); returns its amount and credit note, or
/// `None` when it was not pending.
pub async fn mark_refund_failed(
    connection: &mut PgConnection,
    id: &str,
    (reason, code, stripe_refund_id): (&str, &str, Option<&str>),
    now: DateTime<Utc>,
) -> Result<Option<(Decimal, Option<String>)>, PaymentsError> {
    Ok(sqlx::query_as(
        "UPDATE payments.refunds SET status = 'failed', failure_reason = $2, failure_code = $3, \
         stripe_refund_id = coalesce($4, stripe_refund_id), updated_at = $5 \
         WHERE id = $1 AND status = 'pending' RETURNING amount, credit_note_id",
    )
    .bind(id)
    .bind(reason)
    .bind(code)
    .bind(stripe_refund_id)
    .bind(now)
    .fetch_optional(connection)
    .await?)
}
