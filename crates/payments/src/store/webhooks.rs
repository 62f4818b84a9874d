//! What Stripe webhooks record: the events applied
//! (`payments.webhook_events`), disputes, refunds made in Stripe, and the
//! Stripe customers' default payment method.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use crate::error::PaymentsError;

/// Whether Stripe event `stripe_event_id` was recorded.
pub async fn event_seen(pool: &PgPool, stripe_event_id: &str) -> Result<bool, PaymentsError> {
    let seen: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM payments.webhook_events WHERE stripe_event_id = $1")
            .bind(stripe_event_id)
            .fetch_optional(pool)
            .await?;
    Ok(seen.is_some())
}

/// Records Stripe event `stripe_event_id` received at `now` (its outcome is
/// set once applied); `false` when it was recorded already.
pub async fn insert_event(
    connection: &mut PgConnection,
    stripe_event_id: &str,
    event_type: &str,
    stripe_created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, PaymentsError> {
    let inserted = sqlx::query(
        "INSERT INTO payments.webhook_events (stripe_event_id, event_type, stripe_created_at, received_at, outcome) \
         VALUES ($1, $2, $3, $4, '') ON CONFLICT DO NOTHING",
    )
    .bind(stripe_event_id)
    .bind(event_type)
    .bind(stripe_created_at)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Sets the outcome of Stripe event `stripe_event_id`.
pub async fn set_event_outcome(
    connection: &mut PgConnection,
    stripe_event_id: &str,
    outcome: &str,
) -> Result<(), PaymentsError> {
    sqlx::query("UPDATE payments.webhook_events SET outcome = $2 WHERE stripe_event_id = $1")
        .bind(stripe_event_id)
        .bind(outcome)
        .execute(connection)
        .await?;
    Ok(())
}

/// Records whether Stripe customer `stripe_customer_id` has a default
/// payment method.
pub async fn refresh_default_payment_method(
    connection: &mut PgConnection,
    stripe_customer_id: &str,
    has_default_payment_method: bool,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments.stripe_customers SET has_default_payment_method = $2, synced_at = $3 \
         WHERE stripe_customer_id = $1",
    )
    .bind(stripe_customer_id)
    .bind(has_default_payment_method)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Whether Stripe customer `stripe_customer_id` is one of Tally's.
pub async fn stripe_customer_known(
    pool: &PgPool,
    stripe_customer_id: &str,
) -> Result<bool, PaymentsError> {
    let known: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM payments.stripe_customers WHERE stripe_customer_id = $1")
            .bind(stripe_customer_id)
            .fetch_optional(pool)
            .await?;
    Ok(known.is_some())
}

/// A dispute Stripe opened on a payment.
#[derive(Debug, Clone, Copy)]
pub struct NewDispute<'a> {
    pub stripe_dispute_id: &'a str,
    pub payment_id: &'a str,
    pub stripe_charge_id: &'a str,
    pub amount: Decimal,
    pub currency: &'a str,
    pub reason: &'a str,
}

/// Records a dispute; `false` when it was recorded already.
pub async fn insert_dispute(
    connection: &mut PgConnection,
    dispute: NewDispute<'_>,
    now: DateTime<Utc>,
) -> Result<bool, PaymentsError> {
    let inserted = sqlx::query(
        "INSERT INTO payments.disputes (stripe_dispute_id, payment_id, stripe_charge_id, amount, currency, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(dispute.stripe_dispute_id)
    .bind(dispute.payment_id)
    .bind(dispute.stripe_charge_id)
    .bind(dispute.amount)
    .bind(dispute.currency)
    .bind(dispute.reason)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Whether a refund with Stripe refund `stripe_refund_id` is recorded.
pub async fn refund_recorded(pool: &PgPool, stripe_refund_id: &str) -> Result<bool, PaymentsError> {
    let recorded: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM payments.refunds WHERE stripe_refund_id = $1")
            .bind(stripe_refund_id)
            .fetch_optional(pool)
            .await?;
    Ok(recorded.is_some())
}

/// A refund of `payment_id` known as Stripe refund `stripe_refund_id` or
/// Tally refund `refund_id`: `(id, status)`.
pub async fn known_refund(
    connection: &mut PgConnection,
    payment_id: &str,
    stripe_refund_id: &str,
    refund_id: &str,
) -> Result<Option<(String, String)>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT id, status FROM payments.refunds WHERE payment_id = $1 \
         AND (stripe_refund_id = $2 OR id = $3) LIMIT 1",
    )
    .bind(payment_id)
    .bind(stripe_refund_id)
    .bind(refund_id)
    .fetch_optional(connection)
    .await?)
}

/// A refund made in the Stripe dashboard, as Tally records it.
#[derive(Debug, Clone, Copy)]
pub struct NewStripeRefund<'a> {
    pub id: &'a str,
    pub payment_id: &'a str,
    pub invoice_id: &'a str,
    pub amount: Decimal,
    pub currency: &'a str,
    pub stripe_refund_id: &'a str,
}

/// Records a pending refund made in Stripe.
pub async fn insert_stripe_refund(
    connection: &mut PgConnection,
    refund: NewStripeRefund<'_>,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO payments.refunds (id, payment_id, invoice_id, amount, currency, reason, memo, \
         status, stripe_refund_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'requested_by_customer', 'refunded in Stripe', 'pending', $6, $7, $7)",
    )
    .bind(refund.id)
    .bind(refund.payment_id)
    .bind(refund.invoice_id)
    .bind(refund.amount)
    .bind(refund.currency)
    .bind(refund.stripe_refund_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
