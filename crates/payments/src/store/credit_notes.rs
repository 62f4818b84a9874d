//! What mirroring invoicing's credit notes reads and writes: the mirrored
//! notes (`payments.credit_notes`), the refund a note asks for, and the
//! invoice and payment amounts a note reduces. Errors are sqlx's, for the
//! consumer to classify (retry or fail).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

/// The refund a credit note asked for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoteRefund {
    pub id: String,
    pub status: String,
    pub stripe_refund_id: Option<String>,
    pub amount: Decimal,
}

/// The refund of credit note `credit_note_id`, if any.
pub async fn note_refund(
    connection: &mut PgConnection,
    credit_note_id: &str,
) -> Result<Option<NoteRefund>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, stripe_refund_id, amount FROM payments.refunds WHERE credit_note_id = $1",
    )
    .bind(credit_note_id)
    .fetch_optional(connection)
    .await
}

/// The refund a credit note asks for, as first stored.
#[derive(Debug, Clone, Copy)]
pub struct NewNoteRefund<'a> {
    pub id: &'a str,
    pub payment_id: &'a str,
    pub invoice_id: &'a str,
    pub credit_note_id: &'a str,
    pub amount: Decimal,
    pub currency: &'a str,
    pub reason: &'a str,
    pub memo: &'a str,
}

/// Stores a pending refund for a credit note.
pub async fn insert_note_refund(
    connection: &mut PgConnection,
    refund: NewNoteRefund<'_>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments.refunds (id, payment_id, invoice_id, credit_note_id, amount, currency, \
         reason, memo, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9)",
    )
    .bind(refund.id)
    .bind(refund.payment_id)
    .bind(refund.invoice_id)
    .bind(refund.credit_note_id)
    .bind(refund.amount)
    .bind(refund.currency)
    .bind(refund.reason)
    .bind(refund.memo)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// The Stripe credit note mirroring credit note `credit_note_id`, if
/// mirrored.
pub async fn stripe_credit_note(
    pool: &PgPool,
    credit_note_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT stripe_credit_note_id FROM payments.credit_notes WHERE credit_note_id = $1",
    )
    .bind(credit_note_id)
    .fetch_optional(pool)
    .await
}

/// An invoice as a credit note sees it: its state and what earlier notes
/// credited outside Stripe or refunded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CreditedInvoice {
    pub status: String,
    pub stripe_invoice_id: Option<String>,
    pub currency: String,
    pub amount_due: Decimal,
    pub out_of_band: Decimal,
}

/// Invoice `invoice_id` as a credit note sees it, if mirrored.
pub async fn credited_invoice(
    pool: &PgPool,
    invoice_id: &str,
) -> Result<Option<CreditedInvoice>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, stripe_invoice_id, currency, amount_due, \
         (SELECT coalesce(sum(out_of_band_amount + refund_amount), 0) FROM payments.credit_notes c \
          WHERE c.invoice_id = i.invoice_id) AS out_of_band FROM payments.invoices i WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .fetch_optional(pool)
    .await
}

/// A mirrored credit note and how it was split.
#[derive(Debug, Clone, Copy)]
pub struct MirroredNote<'a> {
    pub credit_note_id: &'a str,
    pub invoice_id: &'a str,
    pub currency: &'a str,
    pub amount: Decimal,
    pub reduced_amount_due: Decimal,
    pub out_of_band_amount: Decimal,
    pub refund_amount: Decimal,
    pub stripe_credit_note_id: &'a str,
}

/// Records a mirrored credit note; `false` when it was recorded already.
pub async fn insert_mirrored_note(
    connection: &mut PgConnection,
    note: MirroredNote<'_>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payments.credit_notes (credit_note_id, invoice_id, currency, amount, reduced_amount_due, \
         out_of_band_amount, refund_amount, stripe_credit_note_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(note.credit_note_id)
    .bind(note.invoice_id)
    .bind(note.currency)
    .bind(note.amount)
    .bind(note.reduced_amount_due)
    .bind(note.out_of_band_amount)
    .bind(note.refund_amount)
    .bind(note.stripe_credit_note_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Takes `amount` off invoice `invoice_id`'s amount due.
pub async fn reduce_amount_due(
    connection: &mut PgConnection,
    invoice_id: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments.invoices SET amount_due = amount_due - $2, updated_at = $3 WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .bind(amount)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets payment `payment_id`'s amount.
pub async fn set_payment_amount(
    connection: &mut PgConnection,
    payment_id: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments.payments SET amount = $2, updated_at = $3 WHERE id = $1")
        .bind(payment_id)
        .bind(amount)
        .bind(now)
        .execute(connection)
        .await?;
    Ok(())
}

/// Marks invoice `invoice_id` paid (credited in full).
pub async fn mark_invoice_paid(
    connection: &mut PgConnection,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments.invoices SET status = 'paid', updated_at = $2 WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
