//! `invoicing.invoice_refunds`: refund reservations, a credit note's own
//! refund, and refunds payments made without a reservation. Every write
//! here runs under the invoice row's lock the caller holds.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::error::Result;
use crate::text_enum::text_enum;

text_enum! {
    /// Where a refund of an invoice stands (`invoice_refunds.status`).
    pub enum RefundStatus {
        /// Its amount is taken while payments asks Stripe.
        Held = "held",
        /// It succeeded.
        Refunded = "refunded",
        /// It failed; the amount is free again.
        Released = "released",
    }
}

/// A stored refund row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub invoice_id: String,
    pub refund_id: Option<String>,
    pub credit_note_id: Option<String>,
    pub amount: Decimal,
    pub status: RefundStatus,
}

const REFUND_COLUMNS: &str = "invoice_id, refund_id, credit_note_id, amount, status";

/// The refund row of `refund_id`, if any.
pub async fn refund_by_id(
    connection: &mut PgConnection,
    refund_id: &str,
) -> Result<Option<RefundRow>> {
    let sql =
        format!("SELECT {REFUND_COLUMNS} FROM invoicing.invoice_refunds WHERE refund_id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(refund_id)
        .fetch_optional(connection)
        .await?)
}

/// An invoice's refunds, summed.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct RefundTotals {
    /// Held by reservations (not by credit notes, which took theirs already).
    pub refunds_held: Decimal,
    /// Held or refunded, whatever their origin.
    pub amount_refunded: Decimal,
}

/// The refund totals of `invoice_id`.
pub async fn refund_totals(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<RefundTotals> {
    Ok(sqlx::query_as(
        "SELECT coalesce(sum(amount) FILTER (WHERE status = 'held' AND origin <> 'credit_note'), 0) AS refunds_held, \
                coalesce(sum(amount) FILTER (WHERE status IN ('held', 'refunded')), 0) AS amount_refunded \
         FROM invoicing.invoice_refunds WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .fetch_one(connection)
    .await?)
}

/// Holds `amount` (in `currency`) of credit note `credit_note_id`'s refund.
pub async fn insert_note_refund_hold(
    connection: &mut PgConnection,
    invoice_id: &str,
    credit_note_id: &str,
    currency: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.invoice_refunds (invoice_id, credit_note_id, origin, currency, amount, status, \
         created_at, updated_at) VALUES ($1, $2, 'credit_note', $3, $4, 'held', $5, $5)",
    )
    .bind(invoice_id)
    .bind(credit_note_id)
    .bind(currency)
    .bind(amount)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// A reservation for a refund payments is about to make.
#[derive(Debug, Clone, Copy)]
pub struct NewReservation<'a> {
    pub invoice_id: &'a str,
    pub refund_id: &'a str,
    pub payment_id: &'a str,
    pub currency: &'a str,
    pub amount: Decimal,
}

/// Holds a reservation; `false` when `refund_id` has a row already.
pub async fn insert_reservation(
    connection: &mut PgConnection,
    reservation: NewReservation<'_>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO invoicing.invoice_refunds (invoice_id, refund_id, payment_id, origin, currency, amount, \
         status, created_at, updated_at) VALUES ($1, $2, $3, 'reserved', $4, $5, 'held', $6, $6) \
         ON CONFLICT (refund_id) DO NOTHING",
    )
    .bind(reservation.invoice_id)
    .bind(reservation.refund_id)
    .bind(reservation.payment_id)
    .bind(reservation.currency)
    .bind(reservation.amount)
    .bind(now)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// Records a refund payments made without a reservation, as refunded.
pub async fn insert_unreserved_refund(
    connection: &mut PgConnection,
    invoice_id: &str,
    refund_id: &str,
    currency: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.invoice_refunds (invoice_id, refund_id, origin, currency, amount, \
         status, created_at, updated_at) VALUES ($1, $2, 'unreserved', $3, $4, 'refunded', $5, $5)",
    )
    .bind(invoice_id)
    .bind(refund_id)
    .bind(currency)
    .bind(amount)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Whether a credit note names `refund_id` already.
pub async fn credit_note_names_refund(
    connection: &mut PgConnection,
    refund_id: &str,
) -> Result<bool> {
    let (noted,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM invoicing.credit_notes WHERE refund_id = $1)")
            .bind(refund_id)
            .fetch_one(connection)
            .await?;
    Ok(noted)
}

/// Releases the held reservation of `refund_id` on `invoice_id`; returns
/// how many rows were released.
pub async fn release_reservation(
    connection: &mut PgConnection,
    refund_id: &str,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE invoicing.invoice_refunds SET status = 'released', updated_at = $3 \
         WHERE refund_id = $1 AND invoice_id = $2 AND status = 'held'",
    )
    .bind(refund_id)
    .bind(invoice_id)
    .bind(now)
    .execute(connection)
    .await?
    .rows_affected())
}

/// Releases the held refund of credit note `credit_note_id` on
/// `invoice_id`, naming the failed `refund_id`; returns how many rows were
/// released.
pub async fn release_note_refund(
    connection: &mut PgConnection,
    refund_id: &str,
    credit_note_id: &str,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE invoicing.invoice_refunds SET status = 'released', refund_id = $1, updated_at = $4 \
         WHERE credit_note_id = $2 AND origin = 'credit_note' AND invoice_id = $3 AND status = 'held'",
    )
    .bind(refund_id)
    .bind(credit_note_id)
    .bind(invoice_id)
    .bind(now)
    .execute(connection)
    .await?
    .rows_affected())
}

/// Marks credit note `credit_note_id`'s refund on `invoice_id` refunded as
/// `refund_id` (unless it names another refund); returns how many rows
/// were linked.
pub async fn link_note_refund(
    connection: &mut PgConnection,
    refund_id: &str,
    credit_note_id: &str,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE invoicing.invoice_refunds SET refund_id = $1, status = 'refunded', updated_at = $4 \
         WHERE credit_note_id = $2 AND origin = 'credit_note' AND invoice_id = $3 \
           AND (refund_id IS NULL OR refund_id = $1)",
    )
    .bind(refund_id)
    .bind(credit_note_id)
    .bind(invoice_id)
    .bind(now)
    .execute(connection)
    .await?
    .rows_affected())
}

/// Marks `refund_id` refunded.
pub async fn mark_refunded(
    connection: &mut PgConnection,
    refund_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoice_refunds SET status = 'refunded', updated_at = $2 WHERE refund_id = $1",
    )
    .bind(refund_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Names the credit note `credit_note_id` on `refund_id`'s row.
pub async fn attach_credit_note(
    connection: &mut PgConnection,
    refund_id: &str,
    credit_note_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoice_refunds SET credit_note_id = $2, updated_at = $3 WHERE refund_id = $1",
    )
    .bind(refund_id)
    .bind(credit_note_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
