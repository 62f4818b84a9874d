//! Retries: the `RetryPayment` requests (`payments.retry_requests`, one per
//! idempotency key) and the failed payments dunning retries when due.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::PaymentsError;

/// Locks retry idempotency key `key` for the rest of the caller's
/// transaction.
pub async fn lock_retry_key(connection: &mut PgConnection, key: &str) -> Result<(), PaymentsError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('payments.retry:' || $1))")
        .bind(key)
        .execute(connection)
        .await?;
    Ok(())
}

/// The payment a retry request under `key` retried, if any.
pub async fn retried_payment(
    connection: &mut PgConnection,
    key: &str,
) -> Result<Option<String>, PaymentsError> {
    Ok(sqlx::query_scalar(
        "SELECT payment_id FROM payments.retry_requests WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(connection)
    .await?)
}

/// Records that the request under `key` made attempt `attempt_number` of
/// `payment_id`.
pub async fn insert_retry_request(
    connection: &mut PgConnection,
    key: &str,
    payment_id: &str,
    attempt_number: i32,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO payments.retry_requests (idempotency_key, payment_id, attempt_number, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(key)
    .bind(payment_id)
    .bind(attempt_number)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Invoice `invoice_id`'s status and Stripe invoice, if mirrored.
pub async fn invoice_status(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<Option<(String, Option<String>)>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT status, stripe_invoice_id FROM payments.invoices WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .fetch_optional(connection)
    .await?)
}

/// The failed payment due for a retry by `now` soonest (not one of
/// `skipped`), locked (`FOR UPDATE SKIP LOCKED`: another replica has the
/// rest).
pub async fn lock_next_due_retry(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
    skipped: &[String],
) -> Result<Option<String>, PaymentsError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM payments.payments WHERE status = 'failed' AND next_retry_at <= $1 \
         AND NOT (id = ANY($2)) ORDER BY next_retry_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(skipped)
    .fetch_optional(connection)
    .await?)
}
